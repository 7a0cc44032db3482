"""What an answer is made of: numbered evidence in, cited sentences out (pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

AnswerMode = Literal["extractive", "generative"]


class Evidence(BaseModel):
    """One search hit's unit, numbered as a source (``n``, 1-based, in hit order)."""

    n: int = Field(ge=1)
    unit_id: str
    asset_id: str
    source: str
    path: str
    title: str | None = None
    page: int | None = None
    section: str | None = None
    text: str  # the unit's text: a chunk's body, an image's caption and OCR lines


class Citation(BaseModel):
    n: int = Field(ge=1)  # the source number, as the sentences cite it
    unit_id: str
    asset_id: str
    source: str
    path: str
    title: str | None = None
    page: int | None = None
    section: str | None = None
    text: str  # the cited span
    start: int  # char offsets of the span in the unit's text (Evidence.text)
    end: int


class AnswerSentence(BaseModel):
    text: str
    citations: list[int]


class Answer(BaseModel):
    answer: str
    refused: bool
    refusal_reason: str | None = None
    mode: AnswerMode
    sentences: list[AnswerSentence] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)
    # Why a generative answer fell back to the extractive one (None: it did not).
    fallback: str | None = None
    # The evidence score the refusal decision was taken on (0..1), and the threshold.
    evidence_score: float = 0.0
    threshold: float = 0.0
