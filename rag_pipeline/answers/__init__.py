"""Answers with citations, or a refusal when the evidence is weak.

Serving finds the evidence (a search as the caller's principal, then the hits' unit texts) and
hands it here numbered; this package imports neither serving nor Dagster. ``POST /v1/ask`` and
``rag-pipeline eval qa`` both go through ``serving.ask.Asker``, which calls
``extractive_answer`` and, when generating (streamed or not), ``build_messages`` and
``finish_generated``; ``answer_question`` is the same sequence in one call.

* extractive (default, no model): MMR over the evidence's sentences embedded with the MV model;
* generative (``RAG_GENERATOR_URL``): an OpenAI-compatible endpoint, its answer validated
  against the sources, else the extractive answer with ``fallback`` saying why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from rag_pipeline.answers.extractive import (
    REFUSAL_THRESHOLD,
    Embed,
    extractive_answer,
)
from rag_pipeline.answers.generative import (
    GenerationError,
    Generator,
    OpenAIGenerator,
    build_messages,
    validate,
)
from rag_pipeline.answers.models import Answer, AnswerMode, AnswerSentence, Citation, Evidence
from rag_pipeline.settings import Settings

AskMode = Literal["auto", "extractive", "generative"]

__all__ = [
    "REFUSAL_THRESHOLD",
    "Answer",
    "AnswerMode",
    "AnswerSentence",
    "AskMode",
    "Citation",
    "Evidence",
    "GenerationError",
    "Generator",
    "answer_question",
    "build_messages",
    "finish_generated",
    "generator_from_settings",
    "resolve_mode",
    "threshold_from_settings",
]


def generator_from_settings(settings: Settings) -> Generator | None:
    """The configured generator (None: extractive answers only)."""
    url = settings.generator_url
    if not url:
        return None
    if url == "local":
        from rag_pipeline.answers.local_vllm import LocalVLLMGenerator

        return LocalVLLMGenerator(
            settings.generator_model, max_tokens=settings.generator_max_tokens
        )
    key = settings.generator_api_key
    return OpenAIGenerator(
        url,
        settings.generator_model,
        api_key=key.get_secret_value() if key is not None else None,
        max_tokens=settings.generator_max_tokens,
        timeout_s=settings.generator_timeout_s,
    )


def threshold_from_settings(settings: Settings) -> float:
    s = settings.answer_min_score
    return REFUSAL_THRESHOLD if s is None else s


def resolve_mode(mode: AskMode, generator: Generator | None) -> AnswerMode:
    """``auto``: generative when a generator is configured. Asking for ``generative`` without
    one is answered extractively (with ``fallback`` saying so)."""
    if mode == "auto":
        return "generative" if generator is not None else "extractive"
    return mode


def finish_generated(
    text: str | None, error: str | None, evidence: Sequence[Evidence], extractive: Answer
) -> Answer:
    """The validated generated answer, or ``extractive`` with the reason it fell back."""
    if error is None and text is not None:
        try:
            ans = validate(text, evidence)
        except GenerationError as exc:
            error = str(exc)
        else:
            ans.evidence_score, ans.threshold = extractive.evidence_score, extractive.threshold
            return ans
    return extractive.model_copy(update={"fallback": error or "no generated answer"})


def answer_question(
    question: str,
    evidence: Sequence[Evidence],
    embed: Embed,
    *,
    mode: AskMode = "auto",
    generator: Generator | None = None,
    threshold: float = REFUSAL_THRESHOLD,
    question_vector: np.ndarray | None = None,
) -> Answer:
    """The answer to ``question`` from ``evidence`` (numbered 1..n in hit order). Weak evidence
    is refused before any generation."""
    extractive = extractive_answer(
        question, evidence, embed, threshold=threshold, question_vector=question_vector
    )
    if resolve_mode(mode, generator) == "extractive":
        return extractive
    if generator is None:
        return extractive.model_copy(update={"fallback": "no generator is configured"})
    if extractive.refused:
        return extractive
    try:
        text = generator.complete(build_messages(question, evidence))
    except GenerationError as exc:
        return finish_generated(None, str(exc), evidence, extractive)
    return finish_generated(text, None, evidence, extractive)
