"""Boundary contracts: what a task asks for and what an analyzer reports back; and the
query-type vocabulary (``QueryType``) that serving, retrieval and the evals share.

Every object that crosses a process boundary (planner -> worker -> persister) is one of these
pydantic models, carries a ``schema_version`` and is validated on the way in. A result's
``result_checksum`` covers its whole payload and is verified before anything is persisted.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

TaskType = Literal["doc_text", "image_meta", "mv_embed", "ocr", "vv_embed", "caption"]
Axis = Literal["mv", "vv"]
EvidenceKind = Literal[
    "chunk", "title", "metadata", "description", "caption", "tag", "keyword", "ocr"
]
RunStatus = Literal["running", "reported", "persisted", "failed"]

#: The kinds of query: serving's classifier (``retrieval.fusion.classify_query``) returns one, the
#: fusion weights are keyed by them, and gold sets (``goldset_schema.GoldQuery``) label queries
#: with them. ``balanced`` is everything that is not clearly visual, keyword or semantic.
QueryType = Literal["visual", "keyword", "semantic", "balanced"]
QUERY_TYPES: tuple[QueryType, ...] = get_args(QueryType)


class ContractError(ValueError):
    """A payload broke its contract (bad shape, wrong version, checksum mismatch)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Short, stable hash of a JSON-able object (config hashes, ids)."""
    return sha256_hex(canonical_json(obj).encode())[:length]


def vector_checksum(vector: np.ndarray | list[float]) -> str:
    return sha256_hex(np.asarray(vector, dtype=np.float32).tobytes())


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {v} (this build reads {SCHEMA_VERSION})")
        return v


class ModelSpec(_Contract):
    """Exactly which model (or rule-based analyzer) produced a piece of evidence."""

    backend: Literal[
        "builtin", "tesseract", "sentence-transformers", "transformers", "vllm", "openai"
    ]
    model_id: str = Field(min_length=1)
    revision: str = Field(min_length=1)
    dtype: str = "none"
    quantization: str = "none"
    weights_checksum: str = "none"
    dim: int | None = None

    @property
    def key(self) -> str:
        """Identity used in dedupe keys: a new revision or new weights mean new evidence."""
        return f"{self.backend}:{self.model_id}@{self.revision}#{self.weights_checksum[:12]}"


class TaskSpec(_Contract):
    """One unit of analysis: run ``task_type`` with ``model`` over one asset's bytes."""

    task_type: TaskType
    tenant_id: str = Field(min_length=1)
    asset_id: str = Field(pattern=r"^[0-9a-f]{64}$")  # sha256 of the content
    version_id: str = Field(min_length=1)
    uri: str = Field(min_length=1)
    media_type: str
    size: int = Field(ge=0)
    partition_key: str
    model: ModelSpec
    config: dict[str, Any] = Field(default_factory=dict)
    # Hash of inputs beyond the asset's bytes (a sidecar file, the text analyzer's config).
    inputs_hash: str = ""
    # The profile (models.yaml) that planned it: provenance, not identity (not in dedupe_key).
    profile: str = ""

    @property
    def config_hash(self) -> str:
        return stable_hash(self.config)

    @property
    def dedupe_key(self) -> str:
        return task_key(
            self.tenant_id,
            self.asset_id,
            self.model.key,
            self.task_type,
            self.config_hash,
            self.inputs_hash,
        )


def dedupe_key(
    tenant_id: str, content_hash: str, model_revision: str, task_type: str, extra: str = ""
) -> str:
    """tenant + content hash + model revision + task type (+ config/inputs): one result each."""
    return stable_hash([tenant_id, content_hash, model_revision, task_type, extra], length=32)


def task_key(
    tenant_id: str,
    asset_id: str,
    model_key: str,
    task_type: str,
    config_hash: str,
    inputs_hash: str = "",
) -> str:
    """A task's dedupe key from its parts (what ``TaskSpec.dedupe_key`` is, and what the
    planner computes without building the task)."""
    return dedupe_key(tenant_id, asset_id, model_key, task_type, config_hash + inputs_hash)


class EvidenceText(_Contract):
    kind: EvidenceKind
    ordinal: int = Field(ge=0)  # position among this result's evidence of the same kind
    text: str = Field(min_length=1)
    confidence: float = Field(ge=0.0, le=1.0)
    # Where in the source: page, char_start, char_end, field, section ...
    locator: dict[str, Any] = Field(default_factory=dict)


class EvidenceVector(_Contract):
    axis: Axis
    # Which text evidence it embeds ("chunk:3", "unit:0" for an image's description).
    target: str = Field(min_length=1)
    dim: int = Field(gt=0)
    vector: list[float]
    norm: float
    checksum: str

    @model_validator(mode="after")
    def _consistent(self) -> EvidenceVector:
        if len(self.vector) != self.dim:
            raise ValueError(f"vector has {len(self.vector)} values, dim says {self.dim}")
        arr = np.asarray(self.vector, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError("vector has non-finite values")
        if vector_checksum(arr) != self.checksum:
            raise ValueError("vector checksum mismatch")
        return self

    @classmethod
    def from_array(cls, axis: Axis, target: str, vec: np.ndarray) -> EvidenceVector:
        v = np.asarray(vec, dtype=np.float32)
        return cls(
            axis=axis,
            target=target,
            dim=int(v.shape[0]),
            vector=v.tolist(),
            norm=float(np.linalg.norm(v)),
            checksum=vector_checksum(v),
        )


class ErrorInfo(_Contract):
    error_class: str = Field(min_length=1)
    message: str
    retryable: bool = False


class ResultEnvelope(_Contract):
    """What a worker reports for one TaskSpec; persisted only if its checksum verifies."""

    task: TaskSpec
    run_id: str = Field(min_length=1)
    status: Literal["ok", "failed"]
    evidence_text: list[EvidenceText] = Field(default_factory=list)
    evidence_vectors: list[EvidenceVector] = Field(default_factory=list)
    error: ErrorInfo | None = None
    result_checksum: str

    @model_validator(mode="after")
    def _status_matches(self) -> ResultEnvelope:
        if self.status == "failed" and self.error is None:
            raise ValueError("a failed result must carry an error")
        if self.status == "ok" and self.error is not None:
            raise ValueError("an ok result must not carry an error")
        return self

    @staticmethod
    def compute_checksum(
        task: TaskSpec,
        run_id: str,
        status: str,
        texts: list[EvidenceText],
        vectors: list[EvidenceVector],
        error: ErrorInfo | None,
    ) -> str:
        payload = {
            "dedupe_key": task.dedupe_key,
            "run_id": run_id,
            "status": status,
            "texts": [t.model_dump(mode="json") for t in texts],
            # A vector's own checksum covers its values; its validator checks that.
            "vectors": [[v.axis, v.target, v.dim, v.checksum] for v in vectors],
            "error": error.model_dump(mode="json") if error else None,
        }
        return sha256_hex(canonical_json(payload).encode())

    @classmethod
    def build(
        cls,
        task: TaskSpec,
        run_id: str,
        texts: list[EvidenceText] | None = None,
        vectors: list[EvidenceVector] | None = None,
        error: ErrorInfo | None = None,
    ) -> ResultEnvelope:
        texts, vectors = texts or [], vectors or []
        status = "failed" if error else "ok"
        return cls(
            task=task,
            run_id=run_id,
            status=status,
            evidence_text=texts,
            evidence_vectors=vectors,
            error=error,
            result_checksum=cls.compute_checksum(task, run_id, status, texts, vectors, error),
        )

    def verify(self) -> None:
        expected = self.compute_checksum(
            self.task,
            self.run_id,
            self.status,
            self.evidence_text,
            self.evidence_vectors,
            self.error,
        )
        if expected != self.result_checksum:
            raise ContractError(
                f"result_checksum mismatch for task {self.task.dedupe_key}: "
                f"envelope says {self.result_checksum[:12]}, payload hashes to {expected[:12]}"
            )

    @classmethod
    def parse_verified(cls, raw: str | bytes) -> ResultEnvelope:
        """Validate shape, then checksum. Any failure is a ContractError."""
        try:
            env = cls.model_validate_json(raw)
        except Exception as exc:  # pydantic.ValidationError and JSON errors
            raise ContractError(f"malformed result envelope: {exc}") from exc
        env.verify()
        return env


class AnalysisRun(_Contract):
    """One execution of one analyzer with one model spec over one partition."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    run_id: str
    tenant_id: str
    analyzer: TaskType
    profile: str = ""
    model: ModelSpec
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str
    partition_key: str
    dagster_run_id: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    n_tasks: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_evidence_text: int = 0
    n_vectors: int = 0
    status: RunStatus = "running"
