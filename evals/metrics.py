"""Standard IR metrics over a ranked list and graded relevance judgements (qrels).

Conventions (those of ``trec_eval``/``ranx``):

* a document is relevant when its grade is > 0; unjudged documents are not relevant;
* nDCG@k uses graded gains ``2**rel - 1`` and discount ``log2(i + 1)`` for 1-based rank ``i``
  (Burges et al.); the ideal DCG sorts *all* of the query's judged grades, cut at k;
* precision@k divides by k even when fewer than k documents were returned;
* a ranked list's repeated ids count once, at their first (best) rank;
* ``evaluate`` averages over the queries of ``qrels`` that have at least one relevant document
  (a query missing from the run scores 0); run queries without qrels are ignored.

Pure Python, no dependencies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "DEFAULT_METRICS",
    "EVAL_METRICS",
    "METRICS",
    "evaluate",
    "evaluate_per_query",
    "latency_summary",
    "mrr_at_k",
    "ndcg_at_k",
    "percentile",
    "precision_at_k",
    "recall_at_k",
]

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str]]

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10", "precision@5")
# What `rag-pipeline eval` reports and the gates read.
EVAL_METRICS: tuple[str, ...] = ("ndcg@10", "recall@50", "recall@100", "mrr@10", "precision@5")


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")


def _top_k(ranked_ids: Iterable[str], k: int) -> list[str]:
    """The first k distinct ids, in order."""
    out: list[str] = []
    seen: set[str] = set()
    for doc in ranked_ids:
        if doc in seen:
            continue
        seen.add(doc)
        out.append(doc)
        if len(out) == k:
            break
    return out


def _relevant(qrels_for_query: Mapping[str, int]) -> set[str]:
    return {d for d, g in qrels_for_query.items() if g > 0}


def ndcg_at_k(ranked_ids: Iterable[str], qrels_for_query: Mapping[str, int], k: int) -> float:
    """nDCG@k with gains 2**rel - 1; 0.0 when the query has no relevant document."""
    _check_k(k)
    ideal_grades = sorted((g for g in qrels_for_query.values() if g > 0), reverse=True)[:k]
    idcg = sum((2.0**g - 1.0) / math.log2(i + 2) for i, g in enumerate(ideal_grades))
    if idcg <= 0.0:
        return 0.0
    dcg = 0.0
    for i, doc in enumerate(_top_k(ranked_ids, k)):
        g = qrels_for_query.get(doc, 0)
        if g > 0:
            dcg += (2.0**g - 1.0) / math.log2(i + 2)
    return dcg / idcg


def recall_at_k(ranked_ids: Iterable[str], qrels_for_query: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k; 0.0 without relevant documents."""
    _check_k(k)
    relevant = _relevant(qrels_for_query)
    if not relevant:
        return 0.0
    return sum(1 for d in _top_k(ranked_ids, k) if d in relevant) / len(relevant)


def precision_at_k(ranked_ids: Iterable[str], qrels_for_query: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k, divided by k."""
    _check_k(k)
    relevant = _relevant(qrels_for_query)
    return sum(1 for d in _top_k(ranked_ids, k) if d in relevant) / k


def mrr_at_k(ranked_ids: Iterable[str], qrels_for_query: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document in the top k (0.0 if none)."""
    _check_k(k)
    relevant = _relevant(qrels_for_query)
    for i, doc in enumerate(_top_k(ranked_ids, k), start=1):
        if doc in relevant:
            return 1.0 / i
    return 0.0


METRICS: dict[str, Callable[[Iterable[str], Mapping[str, int], int], float]] = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "precision": precision_at_k,
    "mrr": mrr_at_k,
}
_METRIC = re.compile(r"^(ndcg|recall|precision|mrr)@([1-9][0-9]*)$")


def _parse_metric(name: str) -> tuple[Callable[..., float], int]:
    m = _METRIC.match(name.strip().lower())
    if not m:
        raise ValueError(
            f"unknown metric {name!r}: expected one of "
            f"{sorted(METRICS)} followed by @k, e.g. 'ndcg@10'"
        )
    return METRICS[m.group(1)], int(m.group(2))


def evaluate_per_query(
    run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS
) -> dict[str, dict[str, float]]:
    """metric -> {query id: score} over the qrels' queries with a relevant document."""
    parsed = {name: _parse_metric(name) for name in metrics}
    queries = [q for q, judged in qrels.items() if _relevant(judged)]
    return {
        name: {q: fn(run.get(q, ()), qrels[q], k) for q in queries}
        for name, (fn, k) in parsed.items()
    }


def evaluate(run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, float]:
    """metric -> mean over the qrels' queries that have at least one relevant document."""
    per_query = evaluate_per_query(run, qrels, metrics)
    return {
        name: (sum(scores.values()) / len(scores) if scores else 0.0)
        for name, scores in per_query.items()
    }


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default method), ``p`` in [0, 100]; NaN if empty."""
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"p must be in [0, 100], not {p!r}")
    xs = sorted(float(v) for v in values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * p / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean of per-query latencies (milliseconds)."""
    return {
        "latency_p50_ms": percentile(ms, 50),
        "latency_p95_ms": percentile(ms, 95),
        "latency_p99_ms": percentile(ms, 99),
        "latency_mean_ms": (sum(ms) / len(ms)) if ms else float("nan"),
    }
