"""Search's request and response models (pydantic): what a client sends and gets back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from rag_pipeline.answers.models import AnswerSentence, Citation
from rag_pipeline.contracts import QueryType
from rag_pipeline.retrieval.fusion import AXES

# --------------------------------------------------------------------------------------------
# Requests


class SearchFilters(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: str | None = None  # "document" | "image"
    folder_prefix: str | None = None  # folder (relative to its source) or any sub-folder
    source: str | None = None  # source name (as in the sources file), exact
    media_type: str | None = None  # exact, or "image/*"-style major type
    modified_after: datetime | None = None  # mtime >= this (naive datetimes are UTC)
    modified_before: datetime | None = None  # mtime < this
    taken_after: datetime | None = None  # an image's EXIF/XMP date >= this (no date: no match)
    taken_before: datetime | None = None  # taken_at < this
    tags: list[str] | None = None  # every one of these content tags (pre-filter)

    @field_validator(
        "modified_after", "modified_before", "taken_after", "taken_before", mode="before"
    )
    @classmethod
    def _dates_are_dates(cls, v: object) -> object:
        # A number is not a date (lax mode would read it as seconds since 1970).
        if isinstance(v, int | float):  # bool is an int too
            raise ValueError("expected an ISO 8601 date or date-time")
        return v


class SearchRequest(BaseModel):
    """What to search for. It never names its tenant: that comes with the ``Principal`` (over
    HTTP, from the API key)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(10, ge=1, le=100)
    filters: SearchFilters | None = None
    query_type: QueryType | None = None  # None: classify_query decides
    axes: list[str] | None = None  # restrict to these axes, e.g. ["fts"] (BM25 only)
    candidates: int = Field(100, ge=1, le=1000)  # per-axis candidate depth
    # One hit per file (its best chunk) rather than one per chunk. Collapsing happens per axis
    # before fusion, so each axis ranks files, not chunks.
    collapse: bool = True
    # The rerank stage after fusion (when the snapshot names a ranker): False keeps the fused
    # order; rerank_depth: how many fused candidates it reorders (default: RAG_RERANK_DEPTH).
    rerank: bool = True
    rerank_depth: int | None = Field(None, ge=1, le=1000)

    @field_validator("axes")
    @classmethod
    def _known_axes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        axes = list(dict.fromkeys(a.strip().lower() for a in v if a.strip()))
        if not axes:
            raise ValueError("axes must name at least one axis (or be omitted)")
        unknown = [a for a in axes if a not in AXES]
        if unknown:
            raise ValueError(f"unknown axes {unknown}; known axes are {list(AXES)}")
        return axes


class SimilarRequest(BaseModel):
    """Find units like a given asset: image -> image on the VV axis (default for images with
    VV vectors), or on the MV axis (documents; images without VV)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    asset_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    k: int = Field(10, ge=1, le=100)
    filters: SearchFilters | None = None
    axis: Literal["vv", "mv"] | None = None
    collapse: bool = True


# --------------------------------------------------------------------------------------------
# Responses


class AxisHit(BaseModel):
    rank: int  # 1-based rank within the axis' candidates
    score: float  # fts: BM25 score; mv: cosine similarity (1 - cosine distance)


class MatchedEvidence(BaseModel):
    kind: str | None = None
    field: str | None = None
    ordinal: int | None = None
    text: str  # windowed around the first match (about 300 characters)
    confidence: float | None = None
    matched_terms: list[str]
    run_id: str | None = None  # the analysis run that produced this evidence
    locator: dict[str, Any] = Field(default_factory=dict)  # page, char offsets, ...


class FileVersion(BaseModel):
    """The file version behind a unit, named by source and path inside it: never the server's
    absolute path."""

    version_id: str
    source: str  # the source's name (sources file, or the folder's name)
    path: str  # relative to the source
    # every current copy with the same content and ACL in this tenant, "<source>/<path>"
    locations: list[str] = Field(default_factory=list)
    asset_id: str
    size: int | None = None
    mtime: datetime | None = None


class FusionInfo(BaseModel):
    query_type: QueryType
    weights: dict[str, float]
    rrf_k: int


class RerankExplanation(BaseModel):
    """Why the rerank stage put a hit where it is: its ranker score, each feature's share of it
    (penalties negative; they sum to the score), the features' values and its fused rank."""

    score: float
    fused_rank: int
    contributions: dict[str, float]
    features: dict[str, float]


class CrossEncoderSummary(BaseModel):
    """What the cross-encoder did within the rerank stage's budget: candidates it did not
    score (past its top N or the budget) count as neutral in the ranker's score."""

    applied: bool  # it scored at least one candidate
    scored: int  # the top candidates it scored
    timed_out: bool  # the budget stopped it before its top N
    reason: str | None = None  # why it did not run (unavailable, refused, failed)


class RerankInfo(BaseModel):
    """What the rerank stage did for this response."""

    applied: bool  # False: the fused order (no ranker, switched off, or timed out)
    reranked: int  # candidates reordered
    timed_out: bool  # the time ceiling was reached: the fused order stands
    ranker_version: str | None = None
    # None: the ranker does not weigh ``ce_score`` (the cross-encoder is not run).
    cross_encoder: CrossEncoderSummary | None = None


class Explanation(BaseModel):
    matched_evidence: list[MatchedEvidence]
    runs: dict[str, Any]  # task_type -> {run_id, model_key, model_id, revision, ...}
    file_version: FileVersion
    fusion: FusionInfo
    # Query entities found in this unit's content_tags (the tag boost).
    matched_tags: list[str] = Field(default_factory=list)
    # The snapshot that answered (set by ``Searcher.unit``; a search names it once, in its
    # response).
    snapshot_id: str | None = None
    # The rerank stage's reasons (None: the hit kept its fused rank).
    rerank: RerankExplanation | None = None


class Hit(BaseModel):
    unit_id: str
    asset_id: str
    version_id: str
    source: str  # the source's name
    path: str  # the file's path relative to the source
    kind: str
    media_type: str | None = None
    title: str | None = None
    snippet: str
    chunk_index: int | None = None
    locator: dict[str, Any] = Field(default_factory=dict)
    score: float  # fused weighted-RRF score
    axes: dict[str, AxisHit]
    explanation: Explanation
    thumbnail: str | None = None  # relative to the data dir (HTTP: /thumbnail/<asset_id>)
    # An image's caption and OCR text (start, about 300 characters): what a result page shows
    # under the thumbnail and its alt text.
    caption: str | None = None
    ocr: str | None = None


class SearchResponse(BaseModel):
    query: str
    query_type: QueryType
    snapshot_id: str
    axes_used: list[str]
    axes_unavailable: dict[str, str]
    hits: list[Hit]
    timings_ms: dict[str, float]
    # Set by the HTTP API when the query log is on: quote it in POST /v1/feedback.
    query_id: str | None = None
    rerank: RerankInfo | None = None  # None: a request the stage does not apply to


# --------------------------------------------------------------------------------------------
# Answers (POST /v1/ask)


class AskRequest(BaseModel):
    """A question answered from the caller's documents, with citations (or refused)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    question: str = Field(min_length=1, max_length=1000)
    k: int = Field(8, ge=1, le=50, description="hits used as evidence")
    filters: SearchFilters | None = None
    mode: Literal["auto", "extractive", "generative"] = Field(
        "auto", description="auto: generative when a generator is configured, else extractive"
    )
    stream: StrictBool = Field(
        False, description="server-sent events: token chunks, then the answer"
    )


class AskResponse(BaseModel):
    query_id: str = ""  # quote it in POST /v1/feedback (logged when the query log is on)
    answer: str
    refused: bool
    refusal_reason: str | None = None
    mode: Literal["extractive", "generative"]
    sentences: list[AnswerSentence]  # the core's answer models, as they are
    citations: list[Citation]
    hits: list[Hit]  # the evidence searched; when refused, the closest hits
    snapshot_id: str
    latency_ms: float
    fallback: str | None = None  # why a generative answer fell back to the extractive one
    evidence_score: float = 0.0  # what the refusal was decided on, and its threshold
    threshold: float = 0.0
    timings_ms: dict[str, float] = Field(default_factory=dict)


class TagCount(BaseModel):
    tag: str
    units: int  # searchable units (document chunks, images) the caller may read that carry it


class TagsResponse(BaseModel):
    snapshot_id: str
    tags: list[TagCount]
