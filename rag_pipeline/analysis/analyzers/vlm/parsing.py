"""Strict parsing of what a VLM says into validated results.

The output must be one JSON object (a surrounding Markdown code fence is tolerated, nothing
else), valid against the step's answer model; anything else is ``VlmOutputInvalid`` with the
raw text attached. Accepted values are normalised: whitespace collapsed, tag values lowercased
and stripped of edge punctuation, duplicate tags merged, long strings cut at a word boundary.

Confidence, in order of preference: the number the model gave; else, when the backend returned
token log-probabilities, the mean probability of the tokens that spell the value (all generated
tokens when the value cannot be located in the token stream); else ``DEFAULT_CONFIDENCE``. The
source is recorded (``confidence_source``) so that a default is never mistaken for a measurement.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from rag_pipeline.analysis.analyzers.vlm.prompts import PROMPT_VERSION
from rag_pipeline.analysis.analyzers.vlm.schema import (
    DEFAULT_CONFIDENCE,
    MAX_CAPTION_CHARS,
    MAX_TAG_CHARS,
    CaptionAnswer,
    CaptionResult,
    ClassifyAnswer,
    ConfidenceSource,
    ImageClass,
    Step,
    Tag,
)
from rag_pipeline.errors import VlmOutputInvalid

M = TypeVar("M", bound=BaseModel)

RAW_CLAMP = 2000  # raw output kept on an error: enough to see what went wrong

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?[ \t]*```$", re.DOTALL)
_EDGE_CHARS = " \t\n.,;:!?\"'`*#_-()[]{}<>"
# The prompt's own placeholders, echoed back by a model that did not understand the task.
_PLACEHOLDERS = {"<sentence>", "<value>", "sentence", "value"}


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as the backend decoded it, and its log-probability."""

    text: str
    logprob: float


def _invalid(step: Step, problem: str, raw: str) -> VlmOutputInvalid:
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    return VlmOutputInvalid(
        f"{step} output invalid: {problem}; model said {shown!r}", step=step, raw=raw[:RAW_CLAMP]
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in {keys}")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def extract_json_object(raw: str, step: Step) -> tuple[dict[str, Any], int]:
    """The JSON object that is the whole output (optionally inside a code fence), and where it
    starts in ``raw``."""
    text = raw.strip()
    if not text:
        raise _invalid(step, "empty output", raw)
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text.startswith("{"):
        raise _invalid(step, "expected a JSON object and nothing else", raw)
    try:
        obj = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise _invalid(step, f"not valid JSON ({exc.msg} at char {exc.pos})", raw) from None
    except ValueError as exc:
        raise _invalid(step, f"not valid JSON ({exc})", raw) from None
    if not isinstance(obj, dict):
        raise _invalid(step, "expected a JSON object", raw)
    return obj, raw.find(text)


def _validate(model: type[M], obj: dict[str, Any], step: Step, raw: str) -> M:
    try:
        return model.model_validate(obj, strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'object'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise _invalid(step, f"does not match the schema ({problems})", raw) from None


class _TokenProbs:
    """Mean token probability of a value, located in the raw output by its JSON spelling."""

    def __init__(self, raw: str, tokens: list[TokenLogprob] | None):
        self.raw = raw
        self.tokens = [t for t in (tokens or []) if math.isfinite(t.logprob)]
        self.spans: list[tuple[int, int, float]] | None = None
        if self.tokens and "".join(t.text for t in self.tokens) == raw:
            pos = 0
            self.spans = []
            for t in self.tokens:
                self.spans.append((pos, pos + len(t.text), t.logprob))
                pos += len(t.text)

    @staticmethod
    def _mean_prob(logprobs: list[float]) -> float:
        return min(1.0, max(0.0, sum(math.exp(lp) for lp in logprobs) / len(logprobs)))

    def of(self, value: str, start: int) -> tuple[float, ConfidenceSource, int]:
        """(confidence, source, end of the value in raw) for the first spelling of ``value``
        at or after ``start``."""
        if not self.tokens:
            return DEFAULT_CONFIDENCE, "default", start
        if self.spans is not None:
            needle = json.dumps(value, ensure_ascii=False)
            at = self.raw.find(needle, start)
            if at >= 0:
                end = at + len(needle)
                lps = [lp for s, e, lp in self.spans if s < end and e > at]
                if lps:
                    return self._mean_prob(lps), "logprobs", end
        return self._mean_prob([t.logprob for t in self.tokens]), "logprobs", start


def _confidence(
    given: float | None, probs: _TokenProbs, value: str, start: int
) -> tuple[float, ConfidenceSource, int]:
    conf, source, end = probs.of(value, start)
    if given is not None:
        return given, "model", end
    return conf, source, end


def clamp_words(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, at a word boundary when there is one in
    the second half."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-")


def normalise_tag_value(value: str) -> str:
    value = " ".join(unicodedata.normalize("NFKC", value).lower().split()).strip(_EDGE_CHARS)
    return clamp_words(value, MAX_TAG_CHARS).strip(_EDGE_CHARS)


def _lower_field(obj: dict[str, Any], key: str) -> None:
    # Case and padding are not worth losing an answer over; any other spelling is.
    if isinstance(obj.get(key), str):
        obj[key] = obj[key].strip().lower()


def parse_classification(raw: str, token_logprobs: list[TokenLogprob] | None = None) -> ImageClass:
    obj, start = extract_json_object(raw, "classify")
    _lower_field(obj, "category")
    answer = _validate(ClassifyAnswer, obj, "classify", raw)
    conf, source, _ = _confidence(
        answer.confidence, _TokenProbs(raw, token_logprobs), answer.category, max(start, 0)
    )
    return ImageClass(category=answer.category, confidence=conf, confidence_source=source)


def parse_caption(
    raw: str, image_class: ImageClass, token_logprobs: list[TokenLogprob] | None = None
) -> CaptionResult:
    obj, start = extract_json_object(raw, "caption")
    for tag in obj.get("tags") or []:
        if isinstance(tag, dict):
            _lower_field(tag, "type")
    answer = _validate(CaptionAnswer, obj, "caption", raw)
    caption = clamp_words(" ".join(answer.caption.split()), MAX_CAPTION_CHARS)
    if not caption or caption.lower() in _PLACEHOLDERS:
        raise _invalid("caption", "empty caption", raw)

    probs = _TokenProbs(raw, token_logprobs)
    start = max(start, 0)
    caption_conf, source, _ = _confidence(answer.confidence, probs, answer.caption, start)
    tags_at = raw.find('"tags"', start)
    pos = tags_at if tags_at >= 0 else start
    merged: dict[tuple[str, str], float] = {}
    for tag in answer.tags:
        conf, _, pos = _confidence(tag.confidence, probs, tag.value, pos)
        value = normalise_tag_value(tag.value)
        if not value or value in _PLACEHOLDERS:
            continue  # nothing left to index: drop the tag, keep the caption
        key = (tag.type, value)
        merged[key] = max(conf, merged.get(key, 0.0))
    return CaptionResult(
        category=image_class.category,
        category_confidence=image_class.confidence,
        caption=caption,
        caption_confidence=caption_conf,
        confidence_source=source,
        tags=[Tag(type=t, value=v, confidence=c) for (t, v), c in merged.items()],
        prompt_version=PROMPT_VERSION,
    )
