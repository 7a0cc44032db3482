"""Learning a ranker's weights offline: pairwise logistic regression on judged candidates.

    rag-pipeline eval train-ranker --gold var/demo_gold.jsonl --out ranker.json

For every judged query the served snapshot's fused candidates (``Searcher.fused_candidates``:
the top ``depth``, what the rerank stage sees) get their features (``retrieval.features``) and
a label from the gold set (the grade of the document a candidate is). The model is linear:
it learns from pairs (a more relevant candidate, a less relevant one of the same query) to
score the better one higher (logistic loss on the score difference, L2-regularised, plain
numpy gradient descent on standardised features; penalty weights are kept >= 0).

Everything learned is cross-validated over queries (``folds`` folds, a fixed seed): each
fold's queries are reranked by a model trained on the other folds, and the out-of-fold
rankings are scored against the fused order with paired bootstrap CIs (``evals.stats``).
Those figures, never in-sample ones, go into the ranker file (``cv``); the weights written
are then fitted on all queries.

When the served snapshot has a cross-encoder (``Searcher.cross_encoder``), its score of each
query's top ``top_n`` candidates is the ``ce_score`` feature, learned like the others; as in
serving, a candidate it did not score counts as the mean of those it did. Without one the
ranker does not list ``ce_score`` at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from evals.metrics import evaluate_per_query
from evals.stats import paired_bootstrap
from rag_pipeline.retrieval.features import (
    CE_FEATURE,
    FEATURES,
    MODEL_FEATURES,
    PENALTIES,
    QueryFeatures,
)
from rag_pipeline.retrieval.ranker import RankerModel
from rag_pipeline.retrieval.rerank import candidate_features, cross_encoder_scores

CV_METRICS = ("ndcg@10", "recall@100", "mrr@10")
SEED = 20261129
L2 = 1e-3
STEPS = 400
LEARNING_RATE = 0.5
MAX_NEGATIVES = 30  # per positive, the best-fused non-relevant candidates
# Rerank depths training chooses from (inner cross-validation): reordering fewer, better-fused
# candidates can beat reordering all of them, and costs less per search.
DEPTHS = (20, 30, 50, 100)


@dataclass
class JudgedQuery:
    """One query's fused candidates: features, the document key(s) each stands for, labels."""

    query_id: str
    query: str
    keys: list[list[str]]  # per candidate, in fused order
    features: list[dict[str, float]]
    qrels: dict[str, int]

    def labels(self) -> list[int]:
        return [max((self.qrels.get(k, 0) for k in ks), default=0) for ks in self.keys]


def collect(
    searcher: Any,
    queries: Sequence[tuple[str, str, dict[str, int]]],
    keys_of: Callable[[Mapping[str, Any]], list[str]],
    principal: Any,
    *,
    depth: int = 100,
    **search_kw: Any,
) -> list[JudgedQuery]:
    """Features of every judged query's fused candidates. ``queries``: (id, text, qrels);
    ``keys_of``: a candidate row (path, locations) -> the gold set's document keys. With the
    searcher's cross-encoder, ``ce_score`` of the top candidates (no time budget here)."""
    scorer = getattr(searcher, "cross_encoder", None)
    out = []
    for qid, text, qrels in queries:
        cands = searcher.fused_candidates(text, principal, rerank_depth=depth, **search_kw)
        features = candidate_features(QueryFeatures(text), cands)
        if scorer is not None:
            for i, x in cross_encoder_scores(scorer, text, cands)[0].items():
                features[i][CE_FEATURE] = x
        out.append(JudgedQuery(qid, text, [keys_of(c.row) for c in cands], features, dict(qrels)))
    return out


# ---------------------------------------------------------------------------------------------
# The model


def _matrix(
    jq: JudgedQuery, names: Sequence[str], fill: Mapping[str, float] | None = None
) -> np.ndarray:
    fill = fill or {}
    return np.array(
        [[f.get(n, fill.get(n, 0.0)) for n in names] for f in jq.features], dtype=np.float64
    )


def _model_feature_fill(queries: Sequence[JudgedQuery]) -> dict[str, float]:
    """Per model feature some candidate has: the mean of the values present, what a candidate
    without one counts as (serving counts it as the ranker's mean: the same value)."""
    fill = {}
    for name in MODEL_FEATURES:
        values = [f[name] for q in queries for f in q.features if name in f]
        if values:
            fill[name] = float(np.mean(values))
    return fill


def _pairs(
    queries: Sequence[JudgedQuery], names: Sequence[str], fill: Mapping[str, float] | None = None
) -> np.ndarray:
    """Feature differences (better - worse) of every judged pair."""
    diffs = []
    for jq in queries:
        if not jq.features:
            continue
        x, y = _matrix(jq, names, fill), np.array(jq.labels())
        for i in np.flatnonzero(y > 0):
            worse = [j for j in np.flatnonzero(y < y[i])][:MAX_NEGATIVES]
            if worse:
                diffs.append(x[i] - x[worse])
    return np.vstack(diffs) if diffs else np.zeros((0, len(names)))


def fit(
    queries: Sequence[JudgedQuery],
    *,
    version: str,
    l2: float = L2,
    steps: int = STEPS,
    learning_rate: float = LEARNING_RATE,
) -> RankerModel:
    """A ranker fitted on ``queries`` (pairwise logistic regression). A model feature
    (``ce_score``) is listed only when some candidate has it."""
    fill = _model_feature_fill(queries)
    features = [f for f in FEATURES if f not in MODEL_FEATURES or f in fill]
    names = [*features, *PENALTIES]
    all_x = np.vstack(
        [_matrix(q, names, fill) for q in queries if q.features] or [np.zeros((1, 1))]
    )
    if all_x.shape[1] != len(names):
        all_x = np.zeros((1, len(names)))
    n_feat = len(features)
    mean = np.zeros(len(names))
    mean[:n_feat] = all_x[:, :n_feat].mean(axis=0)
    scale = all_x.std(axis=0)
    scale[n_feat:] = np.maximum(np.abs(all_x[:, n_feat:]).max(axis=0), 0.0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    d = _pairs(queries, names, fill) / scale  # the mean cancels in a difference
    w = np.zeros(len(names))
    w[names.index("fused_rr")] = 1.0  # start from the fused order
    for _ in range(steps if len(d) else 0):
        margin = d @ w
        grad = -(d.T @ (1.0 / (1.0 + np.exp(np.clip(margin, -30, 30))))) / len(d) + l2 * w
        w -= learning_rate * grad
        w[n_feat:] = np.minimum(w[n_feat:], 0.0)  # a penalty only pushes down
    return RankerModel(
        version=version,
        created_at=datetime.now(UTC),
        features=features,
        penalties=list(PENALTIES),
        mean={n: float(m) for n, m in zip(names, mean, strict=True)},
        scale={n: float(s) for n, s in zip(names, scale, strict=True)},
        weights={n: float(x) for n, x in zip(features, w[:n_feat], strict=True)},
        penalty_weights={
            n: max(0.0, float(-x)) + 0.0 for n, x in zip(PENALTIES, w[n_feat:], strict=True)
        },
        trained={
            "method": "pairwise logistic regression (numpy), L2",
            "l2": l2,
            "steps": steps,
            "pairs": len(d),
            "queries": len(queries),
        },
    )


def ranked_keys(jq: JudgedQuery, order: Sequence[int]) -> list[str]:
    out: dict[str, None] = {}
    for i in order:
        for k in jq.keys[i]:
            out.setdefault(k, None)
    return list(out)


def top(jq: JudgedQuery, depth: int) -> JudgedQuery:
    """The query with its first ``depth`` fused candidates only (what a stage of that depth
    reorders)."""
    return replace(jq, keys=jq.keys[:depth], features=jq.features[:depth])


def rerank_order(model: RankerModel, jq: JudgedQuery, depth: int | None = None) -> list[int]:
    """Candidate indices as the stage orders them: the first ``depth`` (default: the model's,
    else all) by score, ties in fused order, then the rest in fused order."""
    n = len(jq.features)
    d = min(n, depth or model.depth or n)
    scores = model.score_many(jq.features[:d]).tolist()
    return sorted(range(d), key=lambda i: (-scores[i], i)) + list(range(d, n))


def choose_depth(
    queries: Sequence[JudgedQuery],
    *,
    depths: Sequence[int] = DEPTHS,
    folds: int = 4,
    seed: int = SEED,
    **fit_kw: Any,
) -> tuple[int, dict[int, float]]:
    """The rerank depth with the best cross-validated nDCG@10 on ``queries`` (ties: the
    smaller, cheaper one), and each depth's figure. Too few queries to split: the deepest."""
    deepest = max(len(q.features) for q in queries) if queries else 0
    usable = sorted({min(d, deepest) for d in depths if d > 0}) or [max(depths)]
    if len(queries) < 2 * folds or len(usable) == 1:
        return usable[-1], {}
    fold = folds_of(queries, folds, seed)
    qrels = {q.query_id: q.qrels for q in queries}
    figures: dict[int, float] = {}
    for d in usable:
        run: dict[str, list[str]] = {}
        for k in range(folds):
            train_q = [top(q, d) for q, f in zip(queries, fold, strict=True) if f != k]
            model = fit(train_q, version=f"depth-{d}-fold-{k}", **fit_kw)
            for q, f in zip(queries, fold, strict=True):
                if f == k:
                    run[q.query_id] = ranked_keys(q, rerank_order(model, q, d))
        per = evaluate_per_query(run, qrels, ["ndcg@10"])["ndcg@10"]
        figures[d] = round(float(np.mean([per.get(q.query_id, 0.0) for q in queries])), 4)
    best = max(usable, key=lambda d: (figures[d], -d))
    return best, figures


def fit_with_depth(
    queries: Sequence[JudgedQuery],
    *,
    version: str,
    depths: Sequence[int] | None = DEPTHS,
    seed: int = SEED,
    **fit_kw: Any,
) -> RankerModel:
    """A ranker fitted on ``queries``' top candidates at the depth ``choose_depth`` picks on
    them (``depths`` None: every candidate, no depth recorded)."""
    if not depths:
        return fit(queries, version=version, **fit_kw)
    depth, figures = choose_depth(queries, depths=depths, seed=seed, **fit_kw)
    model = fit([top(q, depth) for q in queries], version=version, **fit_kw)
    trained = {**model.trained, "depth_ndcg@10_inner_cv": {str(d): v for d, v in figures.items()}}
    return model.model_copy(update={"depth": depth, "trained": trained})


def folds_of(queries: Sequence[JudgedQuery], folds: int, seed: int = SEED) -> list[int]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(queries))
    fold = [0] * len(queries)
    for pos, i in enumerate(order):
        fold[int(i)] = pos % folds
    return fold


def cross_validate(
    queries: Sequence[JudgedQuery],
    *,
    folds: int = 5,
    seed: int = SEED,
    metrics: Sequence[str] = CV_METRICS,
    depths: Sequence[int] | None = DEPTHS,
    **fit_kw: Any,
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, list[str]]]:
    """Out-of-fold figures of the reranked order versus the fused order, and both runs. The
    depth is chosen inside each training split (nested: the held-out fold never chooses it)."""
    if len(queries) < folds:
        raise ValueError(f"{len(queries)} judged queries cannot make {folds} folds")
    fold = folds_of(queries, folds, seed)
    fused_run: dict[str, list[str]] = {}
    rerank_run: dict[str, list[str]] = {}
    chosen: list[int | None] = []
    for k in range(folds):
        train_q = [q for q, f in zip(queries, fold, strict=True) if f != k]
        model = fit_with_depth(train_q, version=f"cv-fold-{k}", depths=depths, seed=seed, **fit_kw)
        chosen.append(model.depth)
        for q, f in zip(queries, fold, strict=True):
            if f == k:
                fused_run[q.query_id] = ranked_keys(q, range(len(q.keys)))
                rerank_run[q.query_id] = ranked_keys(q, rerank_order(model, q))
    qrels = {q.query_id: q.qrels for q in queries}
    per_fused = evaluate_per_query(fused_run, qrels, metrics)
    per_rerank = evaluate_per_query(rerank_run, qrels, metrics)
    ids = [q.query_id for q in queries]
    figures: dict[str, Any] = {
        "folds": folds,
        "seed": seed,
        "queries": len(queries),
        "depth_per_fold": chosen,
        "fused": {},
        "reranked": {},
        "diff": {},
    }
    for m in metrics:
        a = [per_fused[m].get(i, 0.0) for i in ids]
        b = [per_rerank[m].get(i, 0.0) for i in ids]
        figures["fused"][m] = round(float(np.mean(a)), 4)
        figures["reranked"][m] = round(float(np.mean(b)), 4)
        ci = paired_bootstrap(a, b)
        figures["diff"][m] = {
            k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v)
            for k, v in ci.items()
        }
    return figures, fused_run, rerank_run


def train(
    queries: Sequence[JudgedQuery],
    *,
    version: str,
    folds: int = 5,
    seed: int = SEED,
    trained_on: Mapping[str, Any] | None = None,
    depths: Sequence[int] | None = DEPTHS,
    **fit_kw: Any,
) -> RankerModel:
    """Cross-validate (weights and depth), then fit on every query: the ranker file's
    content."""
    figures, _, _ = cross_validate(queries, folds=folds, seed=seed, depths=depths, **fit_kw)
    model = fit_with_depth(queries, version=version, depths=depths, seed=seed, **fit_kw)
    return model.model_copy(
        update={"cv": figures, "trained": {**model.trained, **(trained_on or {})}}
    )
