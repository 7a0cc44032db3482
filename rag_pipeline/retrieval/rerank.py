"""The rerank stage: the fused candidates' top ``depth`` reordered by a ranker's score.

It runs after fusion, on what the search already read (``features.py``), under a time
ceiling: when computing the features would take longer than ``budget_ms`` the fused order
stands and the outcome says so (``timed_out``). Candidates below ``depth`` keep their fused
order after the reranked ones. No I/O.

With a cross-encoder (``cross_encoder.PairScorer``) and a ranker that weighs ``ce_score``, the
stage then scores the top ``top_n`` candidates' (query, text) pairs, batch by batch, within
what is left of the same budget: a batch starts only if its measured cost fits. Candidates it
did not reach (past ``top_n``, or past the budget) have no ``ce_score``, which the ranker counts
as neutral (its mean: no contribution); the stage still applies, and ``cross_encoder`` says
how many were scored and whether the budget stopped it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_pipeline.retrieval.cross_encoder import PairScorer, pair_text
from rag_pipeline.retrieval.features import CE_FEATURE, AxisEvidence, QueryFeatures
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
class CrossEncoderOutcome:
    """What the cross-encoder did for one search."""

    applied: bool = False  # it scored at least one candidate
    scored: int = 0  # candidates scored (the top ones, in fused order)
    timed_out: bool = False  # the budget stopped it before ``top_n``
    reason: str | None = None  # why it did not run (unavailable, not weighed)


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
    cross_encoder: CrossEncoderOutcome | None = None  # None: the ranker does not weigh it


def candidate_features(query: QueryFeatures, candidates: Sequence[Candidate]) -> list[dict]:
    """Every candidate's features (what training and serving both compute)."""
    fts_max = best_fts_score(candidates)
    return [query.features(c.row, c.axes, c.fused_rank, c.fused_score, fts_max) for c in candidates]


def best_fts_score(candidates: Sequence[Candidate]) -> float:
    """The best BM25 score among the candidates: BM25 features are relative to it."""
    return max((c.axes["fts"].score for c in candidates if "fts" in c.axes), default=0.0)


def cross_encoder_scores(
    scorer: PairScorer,
    query: str,
    candidates: Sequence[Candidate],
    deadline: float | None = None,
) -> tuple[dict[int, float], bool]:
    """The cross-encoder's scores of the first ``scorer.top_n`` candidates, by index, batch by
    batch; with a ``deadline`` (``time.perf_counter`` seconds) a batch starts only if its
    estimated cost fits before it. Returns the scores and whether the deadline stopped it."""
    texts = [pair_text(c.row) for c in candidates[: scorer.top_n]]
    out: dict[int, float] = {}
    for start in range(0, len(texts), max(1, scorer.batch_size)):
        batch = texts[start : start + max(1, scorer.batch_size)]
        if deadline is not None and time.perf_counter() + scorer.estimate_s(len(batch)) > deadline:
            return out, True
        for j, x in enumerate(scorer.score(query, batch)):
            out[start + j] = float(x)
    return out, False


def rerank(
    query: str | QueryFeatures,
    candidates: Sequence[Candidate],
    ranker: RankerModel,
    *,
    depth: int = DEFAULT_DEPTH,
    budget_ms: float = DEFAULT_BUDGET_MS,
    cross_encoder: PairScorer | None = None,
    cross_encoder_unavailable: str | None = None,
) -> RerankOutcome:
    """Reorder the first ``depth`` candidates (given in fused order) by ``ranker``'s score;
    ties keep the fused order. Past ``budget_ms`` the fused order stands (``timed_out``).

    ``cross_encoder``: scores ``ce_score`` of the top candidates when the ranker weighs it
    (``cross_encoder_unavailable``: why there is none, for the outcome)."""
    t0 = time.perf_counter()
    deadline = t0 + budget_ms / 1000.0
    qf = query if isinstance(query, QueryFeatures) else QueryFeatures(query)
    top = list(candidates[: max(0, depth)])
    fts_max = best_fts_score(top)
    out = RerankOutcome(order=list(range(len(candidates))), ranker_version=ranker.version)
    ce: CrossEncoderOutcome | None = None
    if ranker.weighs(CE_FEATURE):
        ce = out.cross_encoder = CrossEncoderOutcome()
        if cross_encoder is None:
            ce.reason = cross_encoder_unavailable or "no cross-encoder in this snapshot"
    for i, c in enumerate(top):
        if time.perf_counter() > deadline:
            out.timed_out = True
            out.features.clear()
            if ce is not None and cross_encoder is not None:
                ce.timed_out = True  # never reached
            return out
        out.features[i] = qf.features(c.row, c.axes, c.fused_rank, c.fused_score, fts_max)
    if ce is not None and cross_encoder is not None:
        try:
            scored, ce.timed_out = cross_encoder_scores(cross_encoder, qf.query, top, deadline)
        except Exception as exc:  # a model failing at query time: rank without it, say why
            scored, ce.reason = {}, f"cross-encoder failed: {type(exc).__name__}: {exc}"
        for i, x in scored.items():
            out.features[i][CE_FEATURE] = x
        ce.scored, ce.applied = len(scored), bool(scored)
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
