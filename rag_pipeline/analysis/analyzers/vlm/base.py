"""The captioner protocol and the two-step flow every backend shares.

A backend only knows how to generate text for a batch of (image, chat messages) under one JSON
schema. ``TwoStepCaptioner`` does the rest: classify every image of a batch, caption the ones
that classified, parse both answers strictly. One image's bad answer becomes that image's
``VlmOutputInvalid``; it never sinks the batch. A backend that cannot answer at all raises
``VlmUnavailable`` for the whole batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from rag_pipeline.analysis.analyzers.vlm.config import CaptionerConfig
from rag_pipeline.analysis.analyzers.vlm.parsing import (
    RAW_CLAMP,
    TokenLogprob,
    parse_caption,
    parse_classification,
)
from rag_pipeline.analysis.analyzers.vlm.prompts import Messages, messages_for
from rag_pipeline.analysis.analyzers.vlm.schema import (
    SCHEMAS,
    CaptionResult,
    ImageClass,
    Step,
)
from rag_pipeline.contracts import ModelSpec
from rag_pipeline.errors import AnalysisError, VlmOutputInvalid


@dataclass(frozen=True)
class Generation:
    """What a backend generated for one request."""

    text: str
    token_logprobs: list[TokenLogprob] | None = None
    n_tokens: int = 0
    finished: bool = True  # False: stopped by max_new_tokens, the JSON is likely cut off


@dataclass(frozen=True)
class GenerationRequest:
    image: Image.Image
    messages: Messages


@runtime_checkable
class Captioner(Protocol):
    @property
    def spec(self) -> ModelSpec: ...

    def caption_batch(self, images: list[Image.Image]) -> list[CaptionResult | AnalysisError]:
        """One entry per image, in order: a result, or the error for that image alone
        (``VlmOutputInvalid``; ``VlmRequestRejected`` from an endpoint)."""
        ...


def prepare_image(image: Image.Image, max_side: int) -> Image.Image:
    """RGB (transparency over white, as a viewer shows it), longest side at most ``max_side``."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


class TwoStepCaptioner(ABC):
    """Classify, then caption and tag given the category."""

    config: CaptionerConfig
    _spec: ModelSpec

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @abstractmethod
    def _generate(
        self, step: Step, schema: dict[str, Any], requests: list[GenerationRequest]
    ) -> list[Generation | AnalysisError]:
        """Greedy generation for each request under ``schema`` (enforced where the backend can,
        asked for in the prompt everywhere). Per-request failures are returned, not raised."""

    def caption_batch(self, images: list[Image.Image]) -> list[CaptionResult | AnalysisError]:
        prepared = [prepare_image(im, self.config.max_image_side) for im in images]
        out: list[CaptionResult | AnalysisError] = []
        for start in range(0, len(prepared), self.config.batch_size):
            out.extend(self._two_steps(prepared[start : start + self.config.batch_size]))
        return out

    def _two_steps(self, images: list[Image.Image]) -> list[CaptionResult | AnalysisError]:
        results: list[CaptionResult | AnalysisError | None] = [None] * len(images)
        classes: dict[int, ImageClass] = {}
        gens = self._generate(
            "classify",
            SCHEMAS["classify"],
            [GenerationRequest(im, messages_for("classify")) for im in images],
        )
        for i, gen in zip(range(len(images)), gens, strict=True):
            try:
                classes[i] = parse_classification(*_checked(gen, "classify"))
            except AnalysisError as exc:
                results[i] = exc

        todo = sorted(classes)
        gens = (
            self._generate(
                "caption",
                SCHEMAS["caption"],
                [
                    GenerationRequest(images[i], messages_for("caption", classes[i].category))
                    for i in todo
                ],
            )
            if todo
            else []
        )
        for i, gen in zip(todo, gens, strict=True):
            try:
                text, logprobs = _checked(gen, "caption")
                results[i] = parse_caption(text, classes[i], logprobs)
            except AnalysisError as exc:
                results[i] = exc
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]


def _checked(gen: Generation | AnalysisError, step: Step) -> tuple[str, list[TokenLogprob] | None]:
    if isinstance(gen, AnalysisError):
        raise gen
    if not gen.finished and not gen.text.rstrip().endswith(("}", "```")):
        raise VlmOutputInvalid(
            f"{step} output invalid: cut off at the token limit after {gen.n_tokens} tokens "
            f"(raise max_new_tokens?); model said {gen.text[:200]!r}",
            step=step,
            raw=gen.text[:RAW_CLAMP],
        )
    return gen.text, gen.token_logprobs
