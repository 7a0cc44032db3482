"""Offline fusion tuning from two single-axis eval results (BM25 and MV rankings).

    python -m evals.fusion_sweep BM25.json MV.json [--metric ndcg@10]

Fuses each query's ranked doc lists with ``weighted_rrf`` (serving's fusion) over a grid of
FTS weights and RRF k, per served query type and overall, and prints the best settings. Each
single-axis ranking is the engine's top 100 files (per-axis candidates 100 chunks, collapsed to
files): the same lists ``Searcher.search`` fuses, so the grid reproduces serving's hybrid up to
ties. Tune on a train split only; confirm with a real ``eval run`` after changing the weights.
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
