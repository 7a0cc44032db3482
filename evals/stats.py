"""Paired bootstrap confidence intervals of metric differences between two eval runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

N_RESAMPLES = 10_000
SEED = 20240611


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n: int = N_RESAMPLES,
    seed: int = SEED,
    alpha: float = 0.05,
    stat: str = "mean",
) -> dict[str, float]:
    """CI of ``stat(b) - stat(a)`` over queries resampled with replacement (the same query
    indices for both runs: paired). ``stat``: "mean" or "p95". Returns the point difference,
    the percentile CI bounds and the share of resamples where B is better (diff > 0)."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"paired samples differ in length: {xa.size} vs {xb.size}")
    if xa.size == 0:
        return {
            "diff": float("nan"),
            "lo": float("nan"),
            "hi": float("nan"),
            "p_b_better": float("nan"),
            "n": 0,
        }
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, xa.size, size=(n, xa.size))
    if stat == "mean":
        point = float(xb.mean() - xa.mean())
        diffs = (xb - xa)[idx].mean(axis=1)
    elif stat == "p95":
        point = float(np.percentile(xb, 95) - np.percentile(xa, 95))
        diffs = np.percentile(xb[idx], 95, axis=1) - np.percentile(xa[idx], 95, axis=1)
    else:
        raise ValueError(f"unknown stat {stat!r}")
    lo, hi = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {
        "diff": point,
        "lo": float(lo),
        "hi": float(hi),
        "p_b_better": float((diffs > 0).mean()),
        "n": int(xa.size),
    }


def compare_runs(a: Mapping, b: Mapping, *, n: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """Per metric (and p95 latency) bootstrap CI of B - A over the queries both runs judged."""
    qa = {q["query_id"]: q for q in a["per_query"]}
    qb = {q["query_id"]: q for q in b["per_query"]}
    common = [q for q in qa if q in qb]
    out: dict[str, dict] = {}
    for m in a["metrics"]:
        if m not in b["metrics"] or m.split("@")[0] not in ("ndcg", "recall", "mrr", "precision"):
            continue
        xa = [qa[q]["metrics"].get(m, 0.0) for q in common]
        xb = [qb[q]["metrics"].get(m, 0.0) for q in common]
        out[m] = {
            "a": a["metrics"][m],
            "b": b["metrics"][m],
            **paired_bootstrap(xa, xb, n=n, seed=seed),
        }
    la = [qa[q]["latency_ms"] for q in common]
    lb = [qb[q]["latency_ms"] for q in common]
    out["latency_p95_ms"] = {
        "a": a["metrics"].get("latency_p95_ms"),
        "b": b["metrics"].get("latency_p95_ms"),
        **paired_bootstrap(la, lb, n=n, seed=seed, stat="p95"),
    }
    ea = [1.0 if qa[q].get("error") else 0.0 for q in common]
    eb = [1.0 if qb[q].get("error") else 0.0 for q in common]
    out["error_rate"] = {
        "a": a["metrics"].get("error_rate"),
        "b": b["metrics"].get("error_rate"),
        **paired_bootstrap(ea, eb, n=n, seed=seed),
    }
    return {"n_common_queries": len(common), "n_resamples": n, "seed": seed, "diffs": out}
