"""caption analyzer: entry points for profiles and the partition worker.

The implementation is the ``rag_pipeline.analyzers.vlm`` package (schemas, prompts, parsing,
backends); this module adds what ties it to a profile: the ModelSpec of a local model directory
and a captioner built from a resolved profile, checked against the weights its tasks name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_pipeline.analyzers.vlm import (
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
from rag_pipeline.analyzers.vlm import local_model as _local
from rag_pipeline.contracts import ModelSpec

if TYPE_CHECKING:
    from rag_pipeline.profiles import Profile

__all__ = [
    "PROMPT_VERSION", "CaptionResult", "Captioner", "CaptionerConfig", "ImageClass", "Tag",
    "VlmOutputInvalid", "VlmRequestRejected", "VlmUnavailable", "captioner_config_for_profile",
    "captioner_for_profile", "content_tags", "load_captioner", "local_model_spec",
    "to_evidence",
]

# Task-config keys that belong to the pipeline, not to the captioner.
_PIPELINE_KEYS = {"prompt_version", "max_pixels", "decode_side"}


def local_model_spec(model_dir: str | Path, backend: str = "transformers",
                     dtype: str | None = None, quantization: str | None = None) -> ModelSpec:
    """Describe the VLM in ``model_dir`` without loading it (hashes the weights once per
    process). ``dtype`` defaults to the checkpoint's. FileNotFoundError when it is not there."""
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"VLM model directory {d} is missing or has no config.json")
    if backend not in ("transformers", "vllm"):
        raise ValueError(f"backend {backend!r} has no local model directory")
    return _local.local_model_spec(d, backend, dtype=dtype or _local.checkpoint_dtype(d),
                                   quantization=quantization)


def captioner_config_for_profile(profile: Profile) -> CaptionerConfig:
    """A resolved caption profile as a CaptionerConfig: runtime settings plus the captioner
    fields of the task config. Unknown keys fail validation (a typo in models.yaml)."""
    task = profile.tasks["caption"]
    assert profile.declared is not None, "a caption profile always declares its model"
    fields: dict[str, Any] = {k: v for k, v in task.config.items() if k not in _PIPELINE_KEYS}
    fields |= dict(profile.runtime)
    fields["backend"] = profile.declared.backend
    if profile.declared.backend == "openai":
        fields |= {"model": task.model.model_id, "revision": task.model.revision}
    else:
        fields["model_dir"] = profile.model_dir
    return CaptionerConfig.model_validate(fields)


def captioner_for_profile(profile: Profile) -> Captioner:
    """The profile's captioner (cached per process), after checking that a local model is the
    one the profile's tasks name (``ModelMismatch`` otherwise)."""
    captioner = load_captioner(captioner_config_for_profile(profile))
    wanted = profile.tasks["caption"].model
    if wanted.backend != "openai" and captioner.spec.weights_checksum != wanted.weights_checksum:
        from rag_pipeline.analysis import ModelMismatch

        raise ModelMismatch(f"model_mismatch: VLM at {profile.model_dir} has weights "
                            f"{captioner.spec.weights_checksum[:16]}, the profile's tasks name "
                            f"{wanted.weights_checksum[:16]}")
    return captioner
