"""A VLM in a local directory: its ModelSpec, chat template and (for transformers) its inputs.

``ChatInputs`` prefers the model's own ``AutoProcessor``. In transformers 5, Qwen-VL processors
also build a video processor, which needs torchvision; where torchvision is missing (CPU-only
installs: the PyPI torchvision wheel is built against CUDA torch), it falls back to the model's
tokenizer and image processor and does the one thing the processor adds for Qwen-VL models:
expand each image placeholder to one token per merged vision patch, and mark those tokens in
``mm_token_type_ids`` for multimodal RoPE.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from rag_pipeline.analysis.analyzers.text_embedding import weights_checksum
from rag_pipeline.analysis.analyzers.vlm.prompts import Messages
from rag_pipeline.contracts import ModelSpec
from rag_pipeline.errors import VlmUnavailable

log = logging.getLogger(__name__)


def checked_model_dir(model_dir: Path | str | None) -> Path:
    if model_dir is None:
        raise VlmUnavailable("no VLM model directory configured (model_dir)")
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise VlmUnavailable(f"VLM model directory {d} is missing or has no config.json")
    return d


def read_model_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "config.json").read_text())


def _model_id(model_dir: Path, cfg: dict[str, Any]) -> str:
    if cfg.get("_name_or_path"):
        return str(cfg["_name_or_path"])
    # A Hugging Face cache snapshot: models--Org--Name/snapshots/<commit>
    if model_dir.parent.name == "snapshots" and model_dir.parent.parent.name.startswith("models--"):
        return model_dir.parent.parent.name.removeprefix("models--").replace("--", "/")
    return model_dir.name


def local_model_spec(
    model_dir: Path, backend: str, dtype: str, quantization: str | None = None
) -> ModelSpec:
    """Local dirs have no hub revision: the weights are the revision."""
    cfg = read_model_config(model_dir)
    checksum = weights_checksum(model_dir)
    quant = quantization or (cfg.get("quantization_config") or {}).get("quant_method") or "none"
    return ModelSpec(
        backend=backend,
        model_id=_model_id(model_dir, cfg),
        revision=checksum[:12],
        dtype=dtype,
        quantization=str(quant),
        weights_checksum=checksum,
    )


def checkpoint_dtype(model_dir: Path) -> str:
    cfg = read_model_config(model_dir)
    text_cfg = cfg.get("text_config") or {}
    return str(
        cfg.get("dtype")
        or cfg.get("torch_dtype")
        or text_cfg.get("dtype")
        or text_cfg.get("torch_dtype")
        or "float32"
    )


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if not tok.chat_template:
        # Processor-style checkpoints keep the template next to the processor config.
        path = model_dir / "chat_template.json"
        if path.is_file():
            tok.chat_template = json.loads(path.read_text())["chat_template"]
    if not tok.chat_template:
        raise VlmUnavailable(
            f"{model_dir} has no chat template (chat_template.jinja, "
            "chat_template.json or tokenizer_config.json)"
        )
    return tok


def render_prompt(tokenizer, messages: Messages) -> str:
    """The model's chat template applied to ``messages``, ready for the assistant's answer."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class ChatInputs:
    """Model inputs (token ids, attention mask, pixel values, grid sizes) for a batch of
    (rendered prompt, image) pairs, left-padded for batched generation."""

    def __init__(self, model_dir: Path, model_config: Any):
        from transformers import AutoImageProcessor, AutoProcessor

        self.tokenizer = load_tokenizer(model_dir)
        self.tokenizer.padding_side = "left"  # generation appends on the right
        self.processor = None
        try:
            self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
            self.processor.tokenizer.padding_side = "left"
            self.via = "processor"
        except ImportError as exc:
            if "torchvision" not in str(exc).lower():
                raise
            self.image_processor = AutoImageProcessor.from_pretrained(
                model_dir, local_files_only=True
            )
            image_token_id = getattr(model_config, "image_token_id", None)
            merge_size = getattr(self.image_processor, "merge_size", None)
            if image_token_id is None or merge_size is None:
                raise VlmUnavailable(
                    f"{model_dir}: its processor needs torchvision (not installed) and it is not "
                    "a Qwen-VL style model that can do without"
                ) from exc
            self.image_token_id: int = image_token_id
            self.merge_size: int = merge_size
            self.image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
            self.via = "tokenizer+image_processor"
            log.info(
                "%s: no torchvision, building Qwen-VL inputs from tokenizer and image processor",
                model_dir,
            )

    def render(self, messages: Messages) -> str:
        return render_prompt(self.tokenizer, messages)

    def __call__(self, prompts: list[str], images: list[Image.Image]):
        if self.processor is not None:
            return self.processor(text=prompts, images=images, padding=True, return_tensors="pt")
        return self._qwen_inputs(prompts, images)

    def _qwen_inputs(self, prompts: list[str], images: list[Image.Image]):
        from transformers import BatchFeature

        pixels = self.image_processor(images=images, return_tensors="pt")
        per_image = (pixels["image_grid_thw"].prod(-1) // self.merge_size**2).tolist()
        texts = []
        for prompt, n_tokens in zip(prompts, per_image, strict=True):
            if prompt.count(self.image_token) != 1:
                raise ValueError(
                    f"expected one {self.image_token} in the prompt, found "
                    f"{prompt.count(self.image_token)}"
                )
            texts.append(prompt.replace(self.image_token, self.image_token * int(n_tokens)))
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        mm_token_type_ids = (enc["input_ids"] == self.image_token_id).int()
        return BatchFeature({**enc, **pixels, "mm_token_type_ids": mm_token_type_ids})
