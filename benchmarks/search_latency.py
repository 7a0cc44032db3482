"""Search latency on an indexed SciFact snapshot: our hybrid versus LanceDB's built-in hybrid.

    python benchmarks/search_latency.py [--limit N] [--k 10] [--fts-combine max|sum] [--no-update]

Uses (or builds, or brings up to date) the index under ``var/bench/scifact`` (see
``common.py``). Every query of the split runs through four methods, after a warm-up of 20
queries each:

* ``Searcher.search`` (default hybrid: BM25 + MV, weighted RRF, hits with explanations),
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
    args = parser.parse_args(argv)
    from evals.baselines.lancedb_hybrid import lancedb_hybrid
    from evals.runner import eval_principal

    ds, index = common.dataset_and_index(args)
    searcher = common.open_searcher(index, fts_combine=args.fts_combine)
    queries = list(ds.queries.values())
    k = args.k
    who = eval_principal(searcher)  # the index's one tenant, every group

    methods = {
        "hybrid (Searcher.search)": lambda q: searcher.search(q, who, k=k),
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
    load_before = os.getloadavg()[0]
    for i, q in enumerate(queries):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            out = methods[name](q)
            ms[name].append((time.perf_counter() - t0) * 1000.0)
            if name == names[0]:
                for key, v in out.timings_ms.items():
                    inner.setdefault(key, []).append(v)
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
    order = ["mv_encode", "mv", "fts", "axes_wall", "fuse", "fetch", "build", "total"]
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
