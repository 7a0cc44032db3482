"""Read-only search service over the pipeline's published snapshot (no Dagster, no catalog)."""

from serving.search import (
    AxisHit,
    AxisUnavailable,
    Explanation,
    Hit,
    ModelMismatch,
    Searcher,
    SearchError,
    SearchFilters,
    SearchRequest,
    SearchResponse,
    SimilarRequest,
)

__all__ = [
    "AxisHit",
    "AxisUnavailable",
    "Explanation",
    "Hit",
    "ModelMismatch",
    "SearchError",
    "SearchFilters",
    "SearchRequest",
    "SearchResponse",
    "Searcher",
    "SimilarRequest",
]
