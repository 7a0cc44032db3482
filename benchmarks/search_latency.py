"""Search latency on an indexed SciFact snapshot: our hybrid versus LanceDB's built-in hybrid.

    python benchmarks/search_latency.py [--limit N] [--k 10] [--fts-combine max|sum] [--no-update]
                                        [--queries N] [--ranker FILE] [--rerank-depth 100]

Uses (or builds, or brings up to date) the index under ``var/bench/scifact`` (see
``common.py``). Every query of the split runs through four methods, after a warm-up of 20
queries each:

* ``Searcher.search`` (default hybrid: BM25 + MV, weighted RRF, hits with explanations), with
  the rerank stage (the snapshot's ranker, else ``--ranker``, else the packaged one; the top
  ``--rerank-depth`` fused candidates) and without it (``rerank=False``, same searcher),
* ``evals.baselines.lancedb_hybrid`` (LanceDB's hybrid query with its RRFReranker, same
  filters and BM25 fields; unit ids only),
* ``Searcher.search(axes=["fts"])`` and ``Searcher.search(axes=["mv"])``.

The methods are interleaved per query (in a rotating order) so that background load spreads
evenly over them. Single-threaded client, one query at a time; wall-clock milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import eprint, latency_stats, md_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_dataset_args(parser)
    common.add_index_args(parser)
    parser.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up queries (default 20)")
    parser.add_argument("--fts-combine", choices=["max", "sum"], default="max")
    parser.add_argument("--queries", type=int, default=None, help="only the first N queries")
    parser.add_argument("--ranker", help="ranker file (default: the snapshot's, else packaged)")
    parser.add_argument("--rerank-depth", type=int, default=100, help="candidates reranked")
    parser.add_argument(
        "--rerank-budget-ms", type=float, default=1000.0, help="the stage's time ceiling"
    )
    args = parser.parse_args(argv)
    from evals.baselines.lancedb_hybrid import lancedb_hybrid
    from evals.runner import eval_principal

    ds, index = common.dataset_and_index(args)
    from rag_pipeline.retrieval.ranker import RankerModel, packaged_ranker

    searcher = common.open_searcher(
        index,
        fts_combine=args.fts_combine,
        rerank_depth=args.rerank_depth,
        rerank_budget_ms=args.rerank_budget_ms,
    )
    if args.ranker or searcher.ranker is None:
        searcher.ranker = RankerModel.read(Path(args.ranker)) if args.ranker else packaged_ranker()
    queries = list(ds.queries.values())[: args.queries]
    k = args.k
    who = eval_principal(searcher)  # the index's one tenant, every group

    methods = {
        "hybrid (Searcher.search)": lambda q: searcher.search(q, who, k=k, rerank=False),
        "hybrid + rerank": lambda q: searcher.search(q, who, k=k),
        "LanceDB built-in hybrid": lambda q: lancedb_hybrid(searcher, q, who, k=k),
        "FTS only (axes=[fts])": lambda q: searcher.search(q, who, k=k, axes=["fts"]),
        "MV only (axes=[mv])": lambda q: searcher.search(q, who, k=k, axes=["mv"]),
    }
    names = list(methods)
    eprint(f"warm-up: {args.warmup} queries x {len(names)} methods")
    for q in queries[: args.warmup]:
        for fn in methods.values():
            fn(q)

    eprint(f"measuring {len(queries)} queries x {len(names)} methods ...")
    ms: dict[str, list[float]] = {n: [] for n in names}
    inner: dict[str, list[float]] = {}
    timed_out = 0
    load_before = os.getloadavg()[0]
    for i, q in enumerate(queries):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            out = methods[name](q)
            ms[name].append((time.perf_counter() - t0) * 1000.0)
            if name == names[1]:  # with the rerank stage: every stage, rerank included
                for key, v in out.timings_ms.items():
                    inner.setdefault(key, []).append(v)
                timed_out += bool(out.rerank and out.rerank.timed_out)
    load_after = os.getloadavg()[0]

    stats = {n: latency_stats(v) for n, v in ms.items()}
    builtin = stats["LanceDB built-in hybrid"]
    print(
        f"## Search latency: {args.dataset} {args.split} queries ({len(queries)} queries, "
        f"k={k}, {index.settings.shard_count} shards, "
        f"{index.counts.get('snapshot_units') or searcher.manifest.n_units} units, "
        f"fts_combine={args.fts_combine})\n"
    )
    print(
        f"Machine: {common.machine_info()}. Warm-up {args.warmup} queries per method; "
        f"1-minute load average {load_before:.2f} before, {load_after:.2f} after.\n"
    )
    rows = []
    for n in names:
        s = stats[n]
        rows.append(
            [
                n,
                len(ms[n]),
                f"{s['p50']:.1f}",
                f"{s['p95']:.1f}",
                f"{s['p99']:.1f}",
                f"{s['mean']:.1f}",
                f"{s['p50'] / builtin['p50']:.2f}",
                f"{s['p95'] / builtin['p95']:.2f}",
            ]
        )
    print(
        md_table(
            [
                "method",
                "queries",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "mean ms",
                "p50 / built-in",
                "p95 / built-in",
            ],
            rows,
        )
    )

    print(
        "\nWhere the hybrid's time goes (Searcher.search timings_ms, mean / p95 ms): query "
        "encoding first, then the fts and mv index searches side by side (axes_wall ends "
        "there), fusion, reading the hits' columns (fetch), building hits with "
        "explanations:\n"
    )
    order = ["mv_encode", "mv", "fts", "axes_wall", "fuse", "rerank", "fetch", "build", "total"]
    print(
        md_table(
            ["stage", "mean ms", "p95 ms"],
            [
                [
                    key,
                    f"{statistics.fmean(inner[key]):.1f}",
                    f"{common.percentile(inner[key], 95):.1f}",
                ]
                for key in order
                if key in inner
            ],
        )
    )

    with_rr = stats[names[1]]
    paired = [b - a for a, b in zip(ms[names[0]], ms[names[1]], strict=True)]
    stage = inner.get("rerank", [0.0])
    print(
        f"\nrerank stage (ranker {searcher.ranker.version}, depth {args.rerank_depth}): "
        f"p50 {with_rr['p50'] - stats[names[0]]['p50']:+.2f} ms, p95 "
        f"{with_rr['p95'] - stats[names[0]]['p95']:+.2f} ms over the hybrid without it; the "
        f"stage itself (timings_ms.rerank) p50 {common.percentile(stage, 50):.2f} / p95 "
        f"{common.percentile(stage, 95):.2f} ms; paired per-query difference p50 "
        f"{common.percentile(paired, 50):+.2f} / p95 {common.percentile(paired, 95):+.2f} ms; "
        f"timed out on {timed_out} of {len(queries)} queries"
    )
    hybrid = stats[names[0]]
    ok_p95 = hybrid["p95"] <= 50.0
    faster = hybrid["p50"] < builtin["p50"] and hybrid["p95"] < builtin["p95"]
    print(
        f"\nhybrid p95 = {hybrid['p95']:.1f} ms ({'meets' if ok_p95 else 'misses'} the "
        f"<= 50 ms target); hybrid vs built-in: p50 {hybrid['p50']:.1f} vs "
        f"{builtin['p50']:.1f} ms, p95 {hybrid['p95']:.1f} vs {builtin['p95']:.1f} ms "
        f"({'faster' if faster else 'NOT faster'} on both)"
    )
    searcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
