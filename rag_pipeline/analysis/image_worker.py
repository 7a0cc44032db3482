"""Partition worker for the image-only profiles: OCR, VV vectors, VLM captions and tags.

Images are read, hash-verified and decoded one batch at a time (JPEG draft mode: libjpeg
downscales while decoding), so a partition of thousands of photos never holds more than one
batch of decoded pixels. A bad image fails its own task with an error class; a model failure on
a batch fails that batch's tasks; the partition carries on either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from rag_pipeline import errors
from rag_pipeline.analysis.analyzers.vlm import (
    Captioner,
    CaptionerConfig,
    load_captioner,
)
from rag_pipeline.analysis.profiles import Profile
from rag_pipeline.analysis.task_inputs import error_info, read_verified
from rag_pipeline.contracts import (
    EvidenceText,
    EvidenceVector,
    ResultEnvelope,
    TaskSpec,
)
from rag_pipeline.errors import ModelMismatch
from rag_pipeline.settings import Settings

log = logging.getLogger(__name__)

# Decode batch sizes when the profile does not set one (VV: settings.vv_batch_size); OCR runs
# image by image anyway.
DEFAULT_BATCH = {"ocr": 8, "caption": 8}


def _decoded_batches(
    tasks: list[TaskSpec],
    batch_size: int,
    target_side: int | None,
    failed: Callable[[TaskSpec, BaseException], None],
) -> Iterator[list[tuple[TaskSpec, Any]]]:
    from rag_pipeline.analysis.analyzers.image_decode import decode_image

    batch: list[tuple[TaskSpec, Any]] = []
    for task in tasks:
        try:
            decoded = decode_image(
                read_verified(task),
                max_pixels=int(task.config["max_pixels"]),
                target_side=target_side,
            )
        except Exception as exc:
            failed(task, exc)
            continue
        batch.append((task, decoded))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ocr_analyzer(profile: Profile, settings: Settings):
    from rag_pipeline.analysis.analyzers import ocr

    cfg = ocr.OcrConfig.model_validate(
        {
            k: v
            for k, v in (profile.tasks["ocr"].config | profile.runtime).items()
            if k in ocr.OcrConfig.model_fields
        }
    )

    def run(decoded: list) -> list[tuple[list[EvidenceText], list[EvidenceVector]] | Exception]:
        out: list = []
        for d in decoded:
            try:  # an image with no text is an ok result with no evidence (no noise)
                # The DecodedImage, so OCR boxes are in the original image's pixels.
                out.append((ocr.ocr_image(d, cfg), []))
            except Exception as exc:
                out.append(exc)
        return out

    return run, cfg.max_side


def _vv_analyzer(profile: Profile, settings: Settings):
    from rag_pipeline.analysis.analyzers.image_embedding import ImageEncoder

    # Model parity was checked before any work (analysis.check_model_parity).
    enc = ImageEncoder.load(
        profile.local_model_dir(),
        device=profile.runtime.get("device") or settings.vv_device,
        dtype=profile.runtime.get("dtype") or settings.vv_dtype,
    )

    def run(decoded: list) -> list:
        vecs = enc.encode_images([d.image for d in decoded], batch_size=len(decoded))
        return [([], [EvidenceVector.from_array("vv", "unit:0", v)]) for v in vecs]

    return run, int(profile.tasks["vv_embed"].config.get("decode_side", 448))


def _caption_analyzer(profile: Profile, settings: Settings):
    from rag_pipeline.analysis.analyzers import captioning

    captioner = captioner_for_profile(profile)

    def run(decoded: list) -> list:
        out: list = []
        for res in captioner.caption_batch([d.image for d in decoded]):
            out.append(res if isinstance(res, Exception) else (captioning.to_evidence(res), []))
        return out

    return run, int(profile.tasks["caption"].config.get("decode_side", 896))


ANALYZERS = {"ocr": _ocr_analyzer, "vv_embed": _vv_analyzer, "caption": _caption_analyzer}


def run_image_tasks(
    settings: Settings, profile: Profile, tasks: list[TaskSpec], run_id: str
) -> list[ResultEnvelope]:
    envelopes: list[ResultEnvelope] = []

    def failed(task: TaskSpec, exc: BaseException) -> None:
        envelopes.append(ResultEnvelope.build(task, run_id, error=error_info(exc, task.uri)))

    analyze, side = ANALYZERS[profile.analyzer](profile, settings)
    default = (
        settings.vv_batch_size
        if profile.analyzer == "vv_embed"
        else DEFAULT_BATCH[profile.analyzer]
    )
    batch_size = int(profile.runtime.get("batch_size", default))
    for batch in _decoded_batches(tasks, batch_size, side, failed):
        try:
            results = analyze([d for _, d in batch])
        except errors.AnalysisError as exc:  # the model is unreachable: the batch is retried
            results = [exc] * len(batch)
        except Exception as exc:
            log.exception("%s failed on a batch of %d images", profile.name, len(batch))
            results = [exc] * len(batch)
        for (task, decoded), res in zip(batch, results, strict=True):
            decoded.image.close()
            if isinstance(res, BaseException):
                failed(task, res)
            else:
                texts, vectors = res
                envelopes.append(ResultEnvelope.build(task, run_id, texts=texts, vectors=vectors))
    return envelopes


# Task-config keys that belong to the pipeline, not to the captioner.
_PIPELINE_KEYS = {"prompt_version", "max_pixels", "decode_side"}


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
        raise ModelMismatch(
            f"model_mismatch: VLM at {profile.model_dir} has weights "
            f"{captioner.spec.weights_checksum[:16]}, the profile's tasks name "
            f"{wanted.weights_checksum[:16]}"
        )
    return captioner
