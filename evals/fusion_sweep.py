"""Offline fusion tuning from two single-axis eval results (BM25 and MV rankings).

    python -m evals.fusion_sweep BM25.json MV.json [--metric ndcg@10]

Fuses each query's ranked doc lists with ``weighted_rrf`` (serving's fusion) over a grid of
FTS weights and RRF k, per served query type and overall, and prints the best settings. Each
single-axis ranking is the engine's top 100 files (per-axis candidates 100 chunks, collapsed to
files): the same lists ``Searcher.search`` fuses, so the grid reproduces serving's hybrid up to
ties. Tune on a train split only; confirm with a real ``eval run`` after changing the weights.

``choose_fusion`` is how the served values are chosen: on a training split's per-axis
rankings it picks, per query type, the FTS share of the text axes' weight, and the query
classifier's threshold (``semantic_min_words``: how long a query must be to read as a
sentence), by nDCG@10, with a 5-fold cross-validation over queries whose out-of-fold figure
(against the built-in weights and threshold, paired bootstrap CI) is written with the chosen
values into the ranker file (``fusion``); serving applies them with the ranker only when that
figure's CI is above zero (``adopted``), else it keeps the built-in weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from evals.metrics import evaluate_per_query

W_FTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
RRF_KS = (10, 20, 40, 60)


def fused_run(
    bm25: dict, mv: dict, w_fts: float, k: int, qids: list[str] | None = None
) -> dict[str, list[str]]:
    from rag_pipeline.retrieval.fusion import weighted_rrf

    a = {q["query_id"]: q["ranked"] for q in bm25["per_query"]}
    b = {q["query_id"]: q["ranked"] for q in mv["per_query"]}
    qids = qids if qids is not None else list(a)
    return {
        q: [
            d
            for d, _ in weighted_rrf(
                {"fts": a[q], "mv": b.get(q, [])}, {"fts": w_fts, "mv": 1.0 - w_fts}, k=k
            )
        ][:100]
        for q in qids
    }


def sweep(bm25: dict, mv: dict, qrels: dict, metric: str = "ndcg@10") -> dict:
    types: dict[str, list[str]] = defaultdict(list)
    for q in mv["per_query"]:
        types[q.get("served_query_type") or "all"].append(q["query_id"])
    out: dict = {"overall": {}, "by_type": {}}
    for k in RRF_KS:
        for w in W_FTS:
            per = evaluate_per_query(fused_run(bm25, mv, w, k), qrels, [metric])[metric]
            out["overall"][(w, k)] = sum(per.values()) / len(per)
            for t, qids in types.items():
                vals = [per[q] for q in qids if q in per]
                out["by_type"].setdefault(t, {})[(w, k)] = sum(vals) / max(1, len(vals))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bm25")
    ap.add_argument("mv")
    ap.add_argument("--metric", default="ndcg@10")
    args = ap.parse_args(argv)
    bm25, mv = (json.loads(Path(p).read_text()) for p in (args.bm25, args.mv))
    # the qrels are not in the result files: read the gold set the provenance names
    from evals.cli import load_goldset
    from evals.goldsets import load_gold_jsonl

    prov = bm25["provenance"]
    gs = (
        load_gold_jsonl(prov["dataset"])
        if prov.get("gold_kind") == "jsonl"
        else load_goldset(prov["dataset"], None, prov["split"])
    )
    res = sweep(bm25, mv, gs.qrels, args.metric)
    from evals.report import md_table

    rows = [[k, w, f"{res['overall'][(w, k)]:.4f}"] for k in RRF_KS for w in W_FTS]
    print(f"### Offline weighted RRF ({args.metric}, {len(bm25['per_query'])} queries)\n")
    print(md_table(["RRF k", "w_fts (w_mv = 1 - w_fts)", args.metric], rows))
    best = max(res["overall"], key=res["overall"].get)
    print(f"\nbest overall: w_fts={best[0]}, k={best[1]}: {res['overall'][best]:.4f}")
    for t, grid in res["by_type"].items():
        b = max(grid, key=grid.get)
        print(f"best for served query type {t!r}: w_fts={b[0]}, k={b[1]}: {grid[b]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- learned per-query-type weights and the classifier threshold --------------------------------

SEMANTIC_MIN_WORDS = (4, 5, 6, 7, 8, 10)


def _per_query(bm25_runs: dict, mv_runs: dict, qrels: dict, w: float, metric: str) -> dict:
    from rag_pipeline.retrieval.fusion import RRF_K, weighted_rrf

    run = {
        q: [
            d
            for d, _ in weighted_rrf(
                {"fts": bm25_runs[q], "mv": mv_runs.get(q, [])}, {"fts": w, "mv": 1.0 - w}, RRF_K
            )
        ][:100]
        for q in bm25_runs
    }
    return evaluate_per_query(run, qrels, [metric])[metric]


def _fit(
    ids: list[str], texts: dict[str, str], score: dict[float, dict], grid: list[float]
) -> tuple[int, dict[str, float]]:
    """The threshold and per-type FTS shares that maximise the mean over ``ids``."""
    from rag_pipeline.retrieval.fusion import classify_query

    best: tuple[float, int, dict[str, float]] | None = None
    for n in SEMANTIC_MIN_WORDS:
        by_type: dict[str, list[str]] = defaultdict(list)
        for q in ids:
            by_type[classify_query(texts[q], n)].append(q)
        shares: dict[str, float] = {}
        total = 0.0
        for t, qs in by_type.items():
            sums = {w: sum(score[w].get(q, 0.0) for q in qs) for w in grid}
            w_best = max(grid, key=lambda w: sums[w])
            shares[t] = w_best
            total += sum(score[w_best].get(q, 0.0) for q in qs)
        if best is None or total > best[0] + 1e-12:
            best = (total, n, shares)
    assert best is not None
    return best[1], best[2]


def choose_fusion(
    bm25_runs: dict[str, list[str]],
    mv_runs: dict[str, list[str]],
    texts: dict[str, str],
    qrels: dict[str, dict[str, int]],
    *,
    folds: int = 5,
    seed: int = 20261129,
    metric: str = "ndcg@10",
) -> dict:
    """Per-type FTS shares and the classifier threshold, chosen on all queries, with their
    out-of-fold figure against the built-in ones (see the module)."""
    import numpy as np

    from evals.stats import paired_bootstrap
    from rag_pipeline.retrieval.fusion import FUSION_WEIGHTS, classify_query
    from rag_pipeline.retrieval.fusion import SEMANTIC_MIN_WORDS as BUILTIN_MIN_WORDS

    ids = [q for q in texts if q in bm25_runs]
    builtin = {t: round(w["fts"] / (w["fts"] + w["mv"]), 4) for t, w in FUSION_WEIGHTS.items()}
    grid = sorted(set(W_FTS) | set(builtin.values()))
    score = {w: _per_query(bm25_runs, mv_runs, qrels, w, metric) for w in grid}

    def per_query(q: str, n: int, shares: dict[str, float]) -> float:
        t = classify_query(texts[q], n)
        return score[shares.get(t, builtin[t])].get(q, 0.0)

    order = np.random.default_rng(seed).permutation(len(ids))
    fold_of = {ids[int(i)]: pos % folds for pos, i in enumerate(order)}
    oof: dict[str, float] = {}
    for k in range(folds):
        train = [q for q in ids if fold_of[q] != k]
        n, shares = _fit(train, texts, score, grid)
        oof.update({q: per_query(q, n, shares) for q in ids if fold_of[q] == k})
    base = [per_query(q, BUILTIN_MIN_WORDS, builtin) for q in ids]
    learned = [oof[q] for q in ids]
    n_all, shares_all = _fit(ids, texts, score, grid)
    ci = paired_bootstrap(base, learned)
    return {
        "fts_share": shares_all,
        "semantic_min_words": n_all,
        # Served only when it beats the built-in weights out of fold (the CI above zero); else
        # the ranker file keeps the figures and serving keeps the built-ins.
        "adopted": bool(ci["lo"] > 0),
        "cv": {
            "metric": metric,
            "folds": folds,
            "seed": seed,
            "queries": len(ids),
            "builtin": round(float(np.mean(base)), 4),
            "learned_out_of_fold": round(float(np.mean(learned)), 4),
            "diff": {k: round(v, 4) if isinstance(v, float) else v for k, v in ci.items()},
            "note": "offline weighted RRF of the BM25 and MV file rankings (no tag or VV axis)",
        },
    }
