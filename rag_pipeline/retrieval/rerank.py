"""The rerank stage: the fused candidates' top ``depth`` reordered by a ranker's score.

It runs after fusion, on what the search already read (``features.py``), under a time
ceiling: when computing the features would take longer than ``budget_ms`` the fused order
stands and the outcome says so (``timed_out``). Candidates below ``depth`` keep their fused
order after the reranked ones. Pure Python, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_pipeline.retrieval.features import AxisEvidence, QueryFeatures
from rag_pipeline.retrieval.ranker import RankerModel

DEFAULT_DEPTH = 100
DEFAULT_BUDGET_MS = 50.0


@dataclass(frozen=True)
class Candidate:
    """One fused candidate: its snapshot row (text fields, tags, evidence), its axes' ranks and
    scores, and its fused rank (1-based) and score."""

    row: Mapping[str, Any]
    axes: Mapping[str, AxisEvidence]
    fused_rank: int
    fused_score: float


@dataclass
class RerankOutcome:
    order: list[int]  # candidate indices, best first (all of them)
    applied: bool = False
    reranked: int = 0
    timed_out: bool = False
    ranker_version: str | None = None
    scores: dict[int, float] = field(default_factory=dict)  # by candidate index
    contributions: dict[int, dict[str, float]] = field(default_factory=dict)  # see ``explain``
    features: dict[int, dict[str, float]] = field(default_factory=dict)


def candidate_features(query: QueryFeatures, candidates: Sequence[Candidate]) -> list[dict]:
    """Every candidate's features (what training and serving both compute)."""
    fts_max = max((c.axes["fts"].score for c in candidates if "fts" in c.axes), default=0.0)
    return [query.features(c.row, c.axes, c.fused_rank, c.fused_score, fts_max) for c in candidates]


def rerank(
    query: str | QueryFeatures,
    candidates: Sequence[Candidate],
    ranker: RankerModel,
    *,
    depth: int = DEFAULT_DEPTH,
    budget_ms: float = DEFAULT_BUDGET_MS,
) -> RerankOutcome:
    """Reorder the first ``depth`` candidates (given in fused order) by ``ranker``'s score;
    ties keep the fused order. Past ``budget_ms`` the fused order stands (``timed_out``)."""
    t0 = time.perf_counter()
    deadline = t0 + budget_ms / 1000.0
    qf = query if isinstance(query, QueryFeatures) else QueryFeatures(query)
    top = list(candidates[: max(0, depth)])
    fts_max = max((c.axes["fts"].score for c in top if "fts" in c.axes), default=0.0)
    out = RerankOutcome(order=list(range(len(candidates))), ranker_version=ranker.version)
    for i, c in enumerate(top):
        if time.perf_counter() > deadline:
            out.timed_out = True
            out.features.clear()
            return out
        out.features[i] = qf.features(c.row, c.axes, c.fused_rank, c.fused_score, fts_max)
    scores = ranker.score_many([out.features[i] for i in range(len(top))])
    out.scores = {i: float(x) for i, x in enumerate(scores)}
    reordered = sorted(range(len(top)), key=lambda i: (-out.scores[i], i))
    out.order = reordered + list(range(len(top), len(candidates)))
    out.applied, out.reranked = True, len(top)
    return out


def explain(outcome: RerankOutcome, ranker: RankerModel, index: int) -> dict[str, float]:
    """Each feature's share of a reranked candidate's score (made for the hits shown only)."""
    if index not in outcome.contributions:
        outcome.contributions[index] = ranker.contributions(outcome.features[index])
    return outcome.contributions[index]
