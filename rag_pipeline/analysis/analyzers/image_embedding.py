"""VV axis: image vectors from a CLIP or SigLIP model in a local directory, and text queries in
the same space.

The image tower turns pictures into vv vectors; the text tower embeds a query into the same
joint space (text -> image search), and an image's own vector serves "find similar"
(image -> image). ``ImageEncoder.load`` caches one loaded model per (directory, device, dtype)
per process. Models load only from a local directory (``local_files_only``): nothing is ever
downloaded. The ModelSpec carries a checksum of the weights so that serving can refuse a
query-time model that differs from the one that built the snapshot.

Supported: ``CLIPModel`` (model_type ``clip``), ``SiglipModel`` (``siglip``; also the
fixed-resolution SigLIP 2 checkpoints) and ``Siglip2Model`` (``siglip2``, NaFlex).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from rag_pipeline.analysis.analyzers.hf_offline import offline, read_model_config
from rag_pipeline.analysis.analyzers.text_embedding import weights_checksum
from rag_pipeline.contracts import ModelSpec
from rag_pipeline.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

ModelKind = Literal["clip", "siglip", "siglip2"]
SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("clip", "siglip", "siglip2")


_DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
# Config defaults of transformers, for config.json files that leave them out.
_CLIP_DEFAULT_PROJECTION_DIM = 512
_SIGLIP_DEFAULT_HIDDEN = 768
_CLIP_DEFAULT_TEXT_POSITIONS = 77
_SIGLIP_DEFAULT_TEXT_POSITIONS = 64

_LOAD_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# ModelSpec without loading


def _read_config(d: Path) -> dict[str, Any]:
    if not d.is_dir():
        raise ModelError(
            f"VV model directory {d} does not exist (point the vv profile's "
            f"model_dir at a local CLIP or SigLIP model)"
        )
    cfg = read_model_config(d)
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"{d} holds a {model_type!r} model, not a CLIP/SigLIP image-text "
            f"model (model_type must be one of {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return cfg


def _joint_dim(cfg: dict[str, Any]) -> int:
    """Width of the joint text-image space, from the config alone."""
    if cfg["model_type"] == "clip":
        return int(cfg.get("projection_dim") or _CLIP_DEFAULT_PROJECTION_DIM)
    # SigLIP: the vision tower's pooled output (its hidden size) meets the text head's output
    # (projection_size, which defaults to the text hidden size).
    text = cfg.get("text_config") or {}
    return int(text.get("projection_size") or text.get("hidden_size") or _SIGLIP_DEFAULT_HIDDEN)


def _text_positions(cfg: dict[str, Any]) -> int:
    text = cfg.get("text_config") or {}
    default = (
        _CLIP_DEFAULT_TEXT_POSITIONS
        if cfg["model_type"] == "clip"
        else _SIGLIP_DEFAULT_TEXT_POSITIONS
    )
    return int(text.get("max_position_embeddings") or default)


def image_model_spec(model_dir: str | Path) -> ModelSpec:
    """Describe the CLIP/SigLIP model in ``model_dir`` without loading it.

    Reads config.json and hashes the weight files (cached per path, size and mtime).
    Raises ModelError for a missing directory, no weights, or a model of another kind.
    """
    d = Path(model_dir)
    cfg = _read_config(d)
    try:
        checksum = weights_checksum(d)
    except FileNotFoundError as exc:
        raise ModelError(f"{d} has no weight files (*.safetensors, *.bin)") from exc
    return ModelSpec(
        backend="transformers",
        model_id=str(cfg.get("_name_or_path") or d.name),
        revision=checksum[:12],  # local dirs have no hub revision: the weights are the revision
        # The stored weights' dtype; the compute dtype is ImageEncoder.dtype (device-dependent).
        dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
        quantization="none",
        weights_checksum=checksum,
        dim=_joint_dim(cfg),
    )


# --------------------------------------------------------------------------------------------
# Device and dtype


def resolve_device(device: str | None = None) -> str:
    """``device`` (the worker passes the profile's or RAG_VV_DEVICE), else "cuda" when
    available, else "cpu"."""
    import torch

    requested = device or None
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(requested)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"unknown torch device {requested!r} (RAG_VV_DEVICE or device=)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"device {requested!r} asked for, but CUDA is not available here "
            "(unset RAG_VV_DEVICE to use the CPU)"
        )
    return str(dev)


def resolve_dtype(device: str, dtype: str | None = None) -> str:
    """``dtype`` (the profile's or RAG_VV_DTYPE), else bfloat16 on CUDA (float16 where the GPU
    lacks bf16) and float32 elsewhere."""
    import torch

    requested = dtype or None
    if requested is None:
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float32"
    name = _DTYPE_ALIASES.get(str(requested).lower().removeprefix("torch."))
    if name is None:
        raise ModelError(
            f"unsupported dtype {requested!r} (RAG_VV_DTYPE or dtype=): use "
            f"float32, bfloat16 or float16"
        )
    return name


def _out_of_memory_errors() -> tuple[type[BaseException], ...]:
    import torch

    errs: list[type[BaseException]] = []
    for owner, name in ((torch, "OutOfMemoryError"), (torch.cuda, "OutOfMemoryError")):
        cls = getattr(owner, name, None)
        if isinstance(cls, type) and cls not in errs:
            errs.append(cls)
    return tuple(errs)


# --------------------------------------------------------------------------------------------
# The encoder


class ImageEncoder:
    """A loaded CLIP/SigLIP model. Use ``ImageEncoder.load`` (cached per process).

    ``spec``: the model's ModelSpec (as ``image_model_spec``, dim checked against the loaded
    towers); ``dim``: vector width; ``device``/``dtype``: where and how it computes.
    Vectors are always float32 numpy, L2-normalised.
    """

    _cache: ClassVar[dict[tuple[str, str, str], ImageEncoder]] = {}

    def __init__(self, model_dir: Path, spec: ModelSpec, device: str, dtype: str):
        import torch
        from transformers import AutoModel, AutoProcessor

        offline()
        cfg = _read_config(model_dir)
        self.model_dir = model_dir
        self.kind: ModelKind = cfg["model_type"]
        self.device = device
        self.dtype = dtype
        self.max_text_tokens = _text_positions(cfg)
        self._torch_dtype = getattr(torch, dtype)
        # Largest batch known to fit; lowered when the device runs out of memory.
        self.max_batch: int | None = None
        try:
            processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
            model, info = AutoModel.from_pretrained(
                str(model_dir), local_files_only=True, output_loading_info=True
            )
        except Exception as exc:
            hint = ""
            if self.kind == "siglip" and "sentencepiece" in str(exc).lower():
                hint = (
                    " (this SigLIP tokenizer is a sentencepiece model: install sentencepiece, "
                    "or save the tokenizer as tokenizer.json)"
                )
            raise ModelError(
                f"cannot load the {self.kind} model in {model_dir}: "
                f"{type(exc).__name__}: {exc}{hint}"
            ) from exc
        # transformers only warns about weights missing from the checkpoint and initialises
        # them at random: the vectors would be noise that looks like vectors.
        bad = sorted(
            set(info.get("missing_keys") or ())
            | {str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or ()}
        )
        if bad:
            raise ModelError(
                f"{model_dir}: {len(bad)} weight(s) missing from the checkpoint or "
                f"of the wrong shape ({', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''})"
            )
        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
        if tokenizer is None or image_processor is None:
            raise ModelError(
                f"{model_dir} needs both a tokenizer and an image processor "
                f"(found {type(processor).__name__})"
            )
        self._tokenizer: Any = tokenizer
        self._image_processor: Any = image_processor
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ModelError(f"{type(model).__name__} in {model_dir} has no image and text towers")
        try:
            self._model = model.to(device=device, dtype=self._torch_dtype).eval()
        except Exception as exc:  # e.g. a CUDA OOM while moving the weights
            raise ModelError(f"cannot move the model to {device} as {dtype}: {exc}") from exc
        # SigLIP (v1) was trained without an attention mask: max_length padding, pooled at
        # the last position. Its own tokenizer returns input_ids only; match that.
        self._text_inputs = (
            ("input_ids",) if self.kind == "siglip" else tuple(self._tokenizer.model_input_names)
        )
        self.dim = int(self.encode_texts(["a"], batch_size=1).shape[1])
        image_dim = self._image_dim()
        if image_dim != self.dim:
            raise ModelError(
                f"{model_dir}: image vectors are {image_dim}-d but text vectors "
                f"{self.dim}-d: not a joint image-text space"
            )
        self.spec = spec if spec.dim == self.dim else spec.model_copy(update={"dim": self.dim})

    @classmethod
    def load(
        cls, model_dir: str | Path, device: str | None = None, dtype: str | None = None
    ) -> ImageEncoder:
        """The process-wide encoder for ``model_dir`` on ``device`` (default: $RAG_VV_DEVICE,
        else cuda when available, else cpu) in ``dtype`` (default: $RAG_VV_DTYPE, else
        bfloat16 on cuda, float32 on cpu)."""
        d = Path(model_dir)
        if not d.is_dir():  # before resolve(): a clear message, not a path error
            _read_config(d)
        key_dir = str(d.resolve())
        dev = resolve_device(device)
        dt = resolve_dtype(dev, dtype)
        key = (key_dir, dev, dt)
        with _LOAD_LOCK:
            enc = cls._cache.get(key)
            if enc is None:
                enc = cls(Path(key_dir), image_model_spec(key_dir), dev, dt)
                cls._cache[key] = enc
            return enc

    # -- batching ---------------------------------------------------------------------------

    def _batched(
        self,
        items: Sequence[Any],
        batch_size: int,
        fn: Callable[[Sequence[Any]], np.ndarray],
        what: str,
    ) -> np.ndarray:
        """``fn`` over batches; on device out-of-memory, halve the batch and retry (never
        below 1), and keep the smaller size for later calls."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        oom = _out_of_memory_errors()
        size = min(batch_size, self.max_batch or batch_size)
        parts: list[np.ndarray] = []
        i = 0
        while i < len(items):
            chunk = items[i : i + size]
            ran_out = False
            try:
                parts.append(fn(chunk))
            except oom as exc:
                if size == 1:
                    raise ModelError(
                        f"out of memory on {self.device} encoding a single {what}: {exc}"
                    ) from exc
                ran_out = True
            if ran_out:  # outside the except block: the traceback no longer pins tensors
                self._release_cached_memory()
                size = max(1, size // 2)
                self.max_batch = size
                log.warning(
                    "out of memory on %s: %s batch size lowered to %d", self.device, what, size
                )
                continue
            i += len(chunk)
        return np.concatenate(parts, axis=0)

    def _release_cached_memory(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _to_device(self, batch: Any) -> dict[str, Any]:
        """Tensors onto the device; floating ones (pixels) in the model's dtype."""
        out: dict[str, Any] = {}
        for k, v in batch.items():
            if hasattr(v, "to"):
                if v.is_floating_point():
                    v = v.to(device=self.device, dtype=self._torch_dtype, non_blocking=True)
                else:
                    v = v.to(device=self.device, non_blocking=True)
            out[k] = v
        return out

    @staticmethod
    def _features(out: Any) -> Any:
        # transformers 5 returns a model output with the projected vectors as pooler_output;
        # 4.x returns the tensor itself.
        return out if hasattr(out, "dim") else out.pooler_output

    def _normalised(self, feats: Any) -> np.ndarray:
        import torch

        v = torch.nn.functional.normalize(feats.float(), dim=-1)
        return v.cpu().numpy().astype(np.float32, copy=False)

    # -- images -----------------------------------------------------------------------------

    def _image_dim(self) -> int:
        from PIL import Image

        return int(self.encode_images([Image.new("RGB", (8, 8))], batch_size=1).shape[1])

    def _encode_image_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        # The image processor itself, not the processor: Siglip2Processor's class defaults
        # would override the image processor's saved max_num_patches and patch_size.
        batch = self._image_processor(images=rgb, return_tensors="pt")
        with torch.inference_mode():
            feats = self._features(self._model.get_image_features(**self._to_device(batch)))
        return self._normalised(feats)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(n, dim) float32 L2-normalised image vectors, one row per PIL image (any mode)."""
        return self._batched(list(images), batch_size, self._encode_image_batch, "image")

    # -- texts ------------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        if self.kind == "clip":
            kw: dict[str, Any] = {"padding": True}
        else:  # SigLIP was trained on max_length padding and pools the last position
            kw = {"padding": "max_length"}
        enc = self._tokenizer(
            list(texts), truncation=True, max_length=self.max_text_tokens, return_tensors="pt", **kw
        )
        return {k: enc[k] for k in self._text_inputs if k in enc}

    def _encode_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        batch = self._tokenize(texts)
        with torch.inference_mode():
            feats = self._features(self._model.get_text_features(**self._to_device(batch)))
        return self._normalised(feats)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 L2-normalised text vectors in the images' space (text tower)."""
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("encode_texts takes a list of str")
        return self._batched(texts, batch_size, self._encode_text_batch, "text")

    def encode_query(self, text: str) -> np.ndarray:
        """One query's vector (dim,), comparable with image vectors by dot product."""
        return self.encode_texts([text], batch_size=1)[0]
