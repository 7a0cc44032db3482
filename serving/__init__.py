"""Read-only search service over the pipeline's published snapshot (no Dagster, no catalog).

One concept per module: ``models`` (request and response models), ``errors`` (refusals),
``filters`` (SQL predicates), ``axes`` (candidate search per axis, row keys, fusion), ``hits``
(hits and their explanations), ``tags`` (the tag boost), ``visual`` (the VV query encoder),
``searcher`` (``Searcher``), ``live`` (the snapshot a server follows) and the HTTP API:
``app`` (FastAPI routes), ``auth`` and ``keys`` (API keys), ``limits``, ``middleware``,
``http_errors`` and ``server`` (uvicorn).
"""

from serving.errors import AxisUnavailable, ModelMismatch, SearchError
from serving.models import (
    AxisHit,
    Explanation,
    Hit,
    SearchFilters,
    SearchRequest,
    SearchResponse,
    SimilarRequest,
)
from serving.searcher import Searcher

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
