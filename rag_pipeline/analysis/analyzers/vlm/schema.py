"""What a vision-language model is asked to answer, and what the analyzer makes of it.

Two kinds of models: the *answer* models (``ClassifyAnswer``, ``CaptionAnswer``) describe the
JSON the model must produce and give the JSON schemas for structured output; the *result* models
(``ImageClass``, ``Tag``, ``CaptionResult``) are what the analyzer reports after validation and
normalisation, with every confidence filled in and its source named.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

Category = Literal["photo", "artwork", "illustration", "document", "screenshot", "diagram", "other"]
TagType = Literal[
    "object", "scene", "person", "activity", "color", "style", "text", "place", "other"
]
# Where a confidence came from: the model's own number, the mean probability of the tokens that
# spell the value, or DEFAULT_CONFIDENCE when the backend gives neither.
ConfidenceSource = Literal["model", "logprobs", "default"]
Step = Literal["classify", "caption"]

CATEGORIES: tuple[str, ...] = get_args(Category)
TAG_TYPES: tuple[str, ...] = get_args(TagType)

DEFAULT_CONFIDENCE = 0.5
MAX_TAGS = 15  # the prompt asks for 3 to 15; more is a schema violation
MAX_CAPTION_CHARS = 300  # longer captions are cut at a word boundary
MAX_TAG_CHARS = 40  # longer tag values are cut at a word boundary

_Confidence = Field(default=None, ge=0.0, le=1.0)


class _Answer(BaseModel):
    # Unknown keys are an error: structured decoders enforce the same (additionalProperties).
    model_config = ConfigDict(extra="forbid")


class ClassifyAnswer(_Answer):
    """Step 1: what kind of image this is."""

    category: Category
    confidence: float | None = _Confidence


class TagAnswer(_Answer):
    type: TagType
    value: str = Field(min_length=1)
    confidence: float | None = _Confidence


class CaptionAnswer(_Answer):
    """Step 2: one factual sentence and a few typed tags."""

    caption: str = Field(min_length=1)
    confidence: float | None = _Confidence
    tags: list[TagAnswer] = Field(max_length=MAX_TAGS)


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageClass(_Result):
    category: Category
    confidence: float = Field(ge=0.0, le=1.0)
    confidence_source: ConfidenceSource


class Tag(_Result):
    type: TagType
    value: str = Field(min_length=1, max_length=MAX_TAG_CHARS)
    confidence: float = Field(ge=0.0, le=1.0)

    @field_validator("value")
    @classmethod
    def _normalised(cls, v: str) -> str:
        if v != v.lower() or v != " ".join(v.split()):
            raise ValueError(f"tag value {v!r} is not lowercase with single spaces")
        return v


class CaptionResult(_Result):
    category: Category
    category_confidence: float = Field(ge=0.0, le=1.0)
    caption: str = Field(min_length=1, max_length=MAX_CAPTION_CHARS)
    caption_confidence: float = Field(ge=0.0, le=1.0)
    confidence_source: ConfidenceSource  # of caption_confidence
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    prompt_version: str


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace ``$ref``s with their ``$defs`` entries: not every structured-output engine
    resolves references."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]))
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


CLASSIFY_SCHEMA: dict[str, Any] = _inline_refs(ClassifyAnswer.model_json_schema())
CAPTION_SCHEMA: dict[str, Any] = _inline_refs(CaptionAnswer.model_json_schema())
SCHEMAS: dict[str, dict[str, Any]] = {"classify": CLASSIFY_SCHEMA, "caption": CAPTION_SCHEMA}
