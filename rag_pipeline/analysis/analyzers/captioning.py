"""caption analyzer: entry points for profiles and the partition worker.

The implementation is the ``vlm`` package beside this module (schemas, prompts, parsing,
backends); this module adds the ModelSpec of a local model directory. Binding a captioner to a
resolved profile is the worker's job (``analysis.image_worker``).
"""

from __future__ import annotations

from pathlib import Path

from rag_pipeline.analysis.analyzers.vlm import (
    PROMPT_VERSION,
    Captioner,
    CaptionerConfig,
    CaptionResult,
    ImageClass,
    Tag,
    VlmOutputInvalid,
    VlmRequestRejected,
    VlmUnavailable,
    content_tags,
    load_captioner,
    to_evidence,
)
from rag_pipeline.analysis.analyzers.vlm import local_model as _local
from rag_pipeline.contracts import ModelSpec

__all__ = [
    "PROMPT_VERSION",
    "CaptionResult",
    "Captioner",
    "CaptionerConfig",
    "ImageClass",
    "Tag",
    "VlmOutputInvalid",
    "VlmRequestRejected",
    "VlmUnavailable",
    "content_tags",
    "load_captioner",
    "local_model_spec",
    "to_evidence",
]


def local_model_spec(
    model_dir: str | Path,
    backend: str = "transformers",
    dtype: str | None = None,
    quantization: str | None = None,
) -> ModelSpec:
    """Describe the VLM in ``model_dir`` without loading it (hashes the weights once per
    process). ``dtype`` defaults to the checkpoint's. FileNotFoundError when it is not there."""
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"VLM model directory {d} is missing or has no config.json")
    if backend not in ("transformers", "vllm"):
        raise ValueError(f"backend {backend!r} has no local model directory")
    return _local.local_model_spec(
        d, backend, dtype=dtype or _local.checkpoint_dtype(d), quantization=quantization
    )
