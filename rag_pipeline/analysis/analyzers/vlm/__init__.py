"""Captions and tags from a vision-language model (Qwen2-VL / Qwen2.5-VL family).

Classify the image, then caption and tag it given the category; parse both answers strictly;
report a caption and typed tags as evidence. Backends: ``transformers`` (local, CPU or GPU),
``vllm`` (offline, batched, structured output; the optional ``gpu`` extra) and ``openai`` (any
OpenAI-compatible endpoint). Backends load lazily: importing this package imports no torch,
transformers or vLLM.
"""

from rag_pipeline.analysis.analyzers.vlm.base import Captioner, prepare_image
from rag_pipeline.analysis.analyzers.vlm.config import CaptionerConfig
from rag_pipeline.analysis.analyzers.vlm.evidence import content_tags, to_evidence
from rag_pipeline.analysis.analyzers.vlm.loading import load_captioner
from rag_pipeline.analysis.analyzers.vlm.parsing import (
    TokenLogprob,
    parse_caption,
    parse_classification,
)
from rag_pipeline.analysis.analyzers.vlm.prompts import PROMPT_VERSION
from rag_pipeline.analysis.analyzers.vlm.schema import (
    CAPTION_SCHEMA,
    CATEGORIES,
    CLASSIFY_SCHEMA,
    DEFAULT_CONFIDENCE,
    TAG_TYPES,
    CaptionResult,
    ImageClass,
    Tag,
)
from rag_pipeline.errors import VlmOutputInvalid, VlmRequestRejected, VlmUnavailable

__all__ = [
    "CAPTION_SCHEMA",
    "CATEGORIES",
    "CLASSIFY_SCHEMA",
    "DEFAULT_CONFIDENCE",
    "PROMPT_VERSION",
    "TAG_TYPES",
    "CaptionResult",
    "Captioner",
    "CaptionerConfig",
    "ImageClass",
    "Tag",
    "TokenLogprob",
    "VlmOutputInvalid",
    "VlmRequestRejected",
    "VlmUnavailable",
    "content_tags",
    "load_captioner",
    "parse_caption",
    "parse_classification",
    "prepare_image",
    "to_evidence",
]
