"""The optional cross-encoder: a local sentence-transformers ``CrossEncoder`` that reads a query
and a candidate's text together and scores how well the text answers it.

It is one more feature of the rerank stage (``ce_score``, ``features.MODEL_FEATURES``), not a
stage of its own: the linear ranker weighs it beside the cheap features, so a ranker trained
without it does not list it and serves as before. Query-time only (a ``cross_encoder`` profile
plans no analysis): the snapshot policy names the profile, the manifest records its model (id,
revision, weights checksum) and serving loads those weights, or none (model parity).

``PairScorer`` is what the stage calls (``rerank.cross_encoder_scores``: batches within the
stage's time budget); ``CrossEncoderScorer`` is the real one. Models load only from a local
directory (``local_files_only``): nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from rag_pipeline.analysis.analyzers.hf_offline import offline, read_model_config
from rag_pipeline.analysis.analyzers.text_embedding import weights_checksum
from rag_pipeline.contracts import ModelSpec
from rag_pipeline.errors import ModelError

# What a profile's ``config`` may say; only ``max_length`` changes a score (identity), the
# rest is runtime (how many, how fast, where).
IDENTITY_KEYS = ("max_length",)


class CrossEncoderConfig(BaseModel):
    """A ``cross_encoder`` profile's config."""

    model_config = ConfigDict(extra="forbid")

    top_n: int = Field(30, ge=1, le=1000)  # fused candidates scored (at most the rerank depth)
    batch_size: int = Field(32, ge=1, le=1024)
    max_length: int = Field(256, ge=8, le=8192)  # word pieces of query + text, cut by the model
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA


@runtime_checkable
class PairScorer(Protocol):
    """Scores (query, text) pairs, one batch per call; higher: the text answers better."""

    top_n: int
    batch_size: int

    def score(self, query: str, texts: Sequence[str]) -> Sequence[float]: ...

    def estimate_s(self, n_pairs: int) -> float:
        """Expected seconds to score ``n_pairs`` (what batches have cost so far; 0: unknown)."""
        ...


def pair_text(row: Mapping[str, Any]) -> str:
    """A candidate's side of the pair: its title and body; an image (no body) its caption and
    OCR text. The model's tokenizer cuts it to ``max_length``."""
    body = str(row.get("body") or "")
    if not body:
        body = " ".join(str(row.get(f) or "") for f in ("caption", "ocr")).strip()
    title = str(row.get("title") or "")
    return f"{title}\n{body}" if title and body else title or body


def cross_encoder_spec(model_dir: str | Path) -> ModelSpec:
    """Describe the cross-encoder in ``model_dir`` without loading it: a one-label sequence
    classifier (config.json) and a checksum of its weights (the revision of a local dir)."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelError(f"cross-encoder directory {d} does not exist")
    cfg = read_model_config(d)
    # One relevance logit per pair: more labels would be a classifier, not a scorer.
    n_labels = int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 1)
    if n_labels != 1:
        raise ModelError(f"{d} has {n_labels} labels: a cross-encoder scores with one")
    try:
        checksum = weights_checksum(d)
    except FileNotFoundError as exc:
        raise ModelError(str(exc)) from exc
    return ModelSpec(
        backend="sentence-transformers",
        model_id=str(cfg.get("_name_or_path") or d.name),
        revision=checksum[:12],  # a local dir has no hub revision: the weights are the revision
        dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
        weights_checksum=checksum,
    )


_LOAD_LOCK = threading.Lock()


class CrossEncoderScorer:
    """A loaded ``sentence_transformers.CrossEncoder``; ``load`` caches one per (directory,
    weights, config) per process, so a snapshot swap does not load it again."""

    _cache: ClassVar[dict[tuple, CrossEncoderScorer]] = {}
    # Weight of the newest batch in the per-pair cost estimate (the rest: the past batches).
    _EWMA = 0.3

    def __init__(self, model_dir: Path, spec: ModelSpec, config: CrossEncoderConfig):
        import torch
        from sentence_transformers import CrossEncoder

        offline()
        self.model_dir = model_dir
        self.spec = spec
        self.top_n = config.top_n
        self.batch_size = config.batch_size
        self.max_length = config.max_length
        cuda = torch.cuda.is_available()
        self.device = "cuda" if config.device == "auto" and cuda else config.device
        if self.device == "auto":
            self.device = "cpu"
        dtype = config.dtype
        if dtype == "auto":  # half precision on a GPU (bf16 where it has it), fp32 on CPU
            if self.device != "cuda":
                dtype = "float32"
            else:
                dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        self.dtype = dtype
        self._model = CrossEncoder(
            str(model_dir),
            device=self.device,
            max_length=config.max_length,
            local_files_only=True,
        )
        if self._model.num_labels != 1:
            raise ModelError(f"{model_dir}: {self._model.num_labels} labels, not one")
        # Raw logits, whatever activation the directory declares: a linear ranker weighs them
        # (a sigmoid would squash the differences it learns from).
        self._identity = torch.nn.Identity()
        self._torch = torch
        self._per_pair_s: float | None = None
        # One forward pass at a time: a fast tokenizer shared by threads that set its
        # truncation at once fails ("Already borrowed"), and the device runs one batch anyway.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, config: CrossEncoderConfig) -> CrossEncoderScorer:
        path = Path(model_dir).resolve()
        spec = cross_encoder_spec(path)
        # The weights are in the key: new weights in the same directory are another model.
        key = (str(path), spec.weights_checksum, config.model_dump_json())
        with _LOAD_LOCK:
            scorer = cls._cache.get(key)
            if scorer is None:
                scorer = cls(path, spec, config)
                scorer.warm()
                cls._cache[key] = scorer
            return scorer

    def warm(self) -> None:
        """One full-length batch at load: the first query pays no warm-up, and the budget check
        starts from a measured (pessimistic: every pair at ``max_length``) cost per pair."""
        filler = "warm " * self.max_length
        self.score("warm up", [filler] * min(self.batch_size, 8))

    def estimate_s(self, n_pairs: int) -> float:
        per = self._per_pair_s
        return 0.0 if per is None else per * n_pairs

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        # A long text is cut by the tokenizer anyway; a few characters per word piece is plenty,
        # and tokenizing megabytes to keep 256 pieces would cost more than the model.
        limit = self.max_length * 8
        pairs = [(query, t[:limit]) for t in texts]
        with self._lock, self._autocast():
            t0 = time.perf_counter()  # the model's time, not the wait for it
            out = self._model.predict(
                pairs,
                batch_size=self.batch_size,
                activation_fn=self._identity,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
            per = (time.perf_counter() - t0) / len(pairs)
            old = self._per_pair_s
            self._per_pair_s = per if old is None else (1 - self._EWMA) * old + self._EWMA * per
        return [float(x) for x in out.reshape(-1)]

    def _autocast(self) -> Any:
        if self.device == "cuda" and self.dtype in ("bfloat16", "float16"):
            return self._torch.autocast("cuda", dtype=getattr(self._torch, self.dtype))
        return contextlib.nullcontext()


def load_scorer(
    model_dir: str | Path, config: CrossEncoderConfig, expected: ModelSpec | None = None
) -> tuple[CrossEncoderScorer | None, str | None]:
    """(scorer, None), or (None, why not): a missing or broken directory, or weights other than
    ``expected``'s (model parity: a ranker's ``ce_score`` weight was learned on those)."""
    try:
        spec = cross_encoder_spec(model_dir)
    except (ModelError, OSError, ValueError) as exc:
        return None, f"cross-encoder unavailable: {exc}"
    if expected is not None and spec.weights_checksum != expected.weights_checksum:
        return None, (
            f"model_mismatch: the snapshot's cross-encoder is {expected.model_id} (weights "
            f"{expected.weights_checksum[:12]}), the model in {model_dir} has weights "
            f"{spec.weights_checksum[:12]}: refused"
        )
    try:
        return CrossEncoderScorer.load(model_dir, config), None
    except Exception as exc:  # a directory that describes but does not load: report, serve on
        return None, f"cross-encoder failed to load: {type(exc).__name__}: {exc}"
