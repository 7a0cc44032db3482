"""Retrieval quality on SciFact (BEIR, train split): BM25, MV, our hybrid and LanceDB's hybrid.

    python benchmarks/quality_scifact.py [--limit N] [--explore] [--no-update]
                                         [--rerank [--ranker-out FILE]]

Uses (or builds, or brings up to date) the index under ``var/bench/scifact`` (``common.py``).
Every judged query runs through ``Searcher.search`` with ``k=100`` (per-axis candidates: the
default 100; one hit per file, the default ``collapse=True``) or
``evals.baselines.lancedb_hybrid(k=100)`` (chunks); hits are mapped to SciFact doc ids (a
document's first, best-ranked chunk counts) and scored with ``evals.metrics``: nDCG@10,
Recall@100 and MRR@10, averaged over the queries.

Configurations, each with ``fts_combine`` "max" (MultiMatchQuery: best boosted field) and
"sum" (BooleanQuery of per-field SHOULD clauses) where the FTS axis takes part: BM25 only
(``axes=["fts"]``), MV only (``axes=["mv"]``), hybrid with the query type from
``classify_query``, hybrid with each fixed query type (keyword, semantic, balanced), and
LanceDB's built-in hybrid (RRFReranker).

``--explore`` also looks for why the default hybrid does or does not beat the single axes,
without changing the serving code: it fuses the BM25 and MV file rankings offline with
``weighted_rrf`` over a grid of FTS weights and RRF k (first checked to reproduce
``Searcher.search`` exactly), varies the per-axis candidate depth (real searches), breaks
nDCG@10 down by classified query type, tries alternative query typings, and sweeps the BM25
title boost (in memory only: the searcher's per-field boosts are overridden for the run).

``--rerank`` measures the rerank stage instead (BM25, MV, the default hybrid and hybrid +
rerank only): every query's top 100 fused candidates (``Searcher.fused_candidates``) get their
features, a ranker (weights and rerank depth: the depth is chosen inside each training split)
is trained by ``evals.ranker_training`` with 5-fold cross-validation over the queries, and the
**out-of-fold** reranked rankings are scored against the hybrid's, with
paired bootstrap CIs (10,000 resamples); the ranker fitted on all queries is written to
``--ranker-out`` (default ``var/bench/<dataset>/ranker.json``) with those figures in it.

Query vectors are cached per query text (the same vector every time: results are identical,
it only saves re-encoding each query once per configuration).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import eprint, md_table

from evals.metrics import evaluate, evaluate_per_query
from evals.runner import eval_principal

METRICS = ("ndcg@10", "recall@100", "mrr@10")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*[A-Za-z0-9]|[A-Za-z0-9]")  # as fusion's
K_UNITS = 100


def _dedupe(unit_ids: list[str], unit_docs: dict[str, list[str]]) -> list[str]:
    out: dict[str, None] = {}
    for uid in unit_ids:
        for d in unit_docs.get(uid, ()):
            out.setdefault(d, None)
    return list(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_dataset_args(parser)
    common.add_index_args(parser)
    parser.add_argument(
        "--explore", action="store_true", help="also sweep fusion weights and RRF k offline"
    )
    parser.add_argument(
        "--rerank", action="store_true", help="measure the rerank stage (out-of-fold)"
    )
    parser.add_argument("--ranker-out", help="where --rerank writes its ranker file")
    parser.add_argument(
        "--queries", type=int, default=None, help="--rerank: only the first N queries (quick)"
    )
    parser.add_argument(
        "--no-axes", action="store_true", help="--rerank: skip the BM25/MV runs and the fusion"
    )
    args = parser.parse_args(argv)
    if args.rerank:
        return rerank_quality(args)

    ds, index = common.dataset_and_index(args)
    searchers = {c: common.open_searcher(index, fts_combine=c) for c in ("max", "sum")}
    encoder = searchers["max"].encoder
    if encoder is None:
        raise SystemExit("the snapshot has no MV axis")
    # Both searchers share the process-wide cached TextEncoder: cache its query vectors.
    encoder.encode_query = lru_cache(maxsize=None)(encoder.encode_query)
    unit_docs = common.unit_doc_map(searchers["max"], index.mapping)
    asset_docs = common.unit_doc_map(searchers["max"], index.mapping, key="asset_id")
    queries = ds.queries
    qrels = ds.qrels

    from evals.baselines.lancedb_hybrid import lancedb_hybrid
    from rag_pipeline.retrieval.fusion import classify_query

    types = Counter(classify_query(q) for q in queries.values())

    configs: list[tuple[str, str, str, dict]] = [
        ("BM25 (axes=[fts])", "max", "search", {"axes": ["fts"]}),
        ("BM25 (axes=[fts])", "sum", "search", {"axes": ["fts"]}),
        ("MV (axes=[mv])", "-", "search", {"axes": ["mv"]}),
        ("hybrid, auto query type (default)", "max", "search", {}),
        ("hybrid, query_type=keyword", "max", "search", {"query_type": "keyword"}),
        ("hybrid, query_type=semantic", "max", "search", {"query_type": "semantic"}),
        ("hybrid, query_type=balanced", "max", "search", {"query_type": "balanced"}),
        ("hybrid, auto, collapse=False (chunk-level fusion)", "max", "search", {"collapse": False}),
        ("hybrid, auto query type (default)", "sum", "search", {}),
        ("hybrid, query_type=keyword", "sum", "search", {"query_type": "keyword"}),
        ("hybrid, query_type=semantic", "sum", "search", {"query_type": "semantic"}),
        ("hybrid, query_type=balanced", "sum", "search", {"query_type": "balanced"}),
        ("LanceDB built-in hybrid (RRF)", "max", "lancedb", {}),
        ("LanceDB built-in hybrid (RRF)", "sum", "lancedb", {}),
    ]
    # Ranked keys per query: asset ids for Searcher.search (one hit per file, the default),
    # unit ids for collapse=False and lancedb_hybrid; each mapped to doc ids.
    key_runs: dict[tuple[str, str], dict[str, list[str]]] = {}
    results: dict[tuple[str, str], dict[str, float]] = {}
    doc_runs: dict[tuple[str, str], dict[str, list[str]]] = {}
    t_all = time.perf_counter()
    for label, combine, kind, kw in configs:
        s = searchers["max" if combine == "-" else combine]
        t0 = time.perf_counter()
        keys: dict[str, list[str]] = {}
        by_unit = kind == "lancedb" or kw.get("collapse") is False
        for qid, text in queries.items():
            if kind == "lancedb":
                keys[qid] = lancedb_hybrid(s, text, eval_principal(s), k=K_UNITS)
            else:
                hits = s.search(text, eval_principal(s), k=K_UNITS, **kw).hits
                keys[qid] = [h.unit_id if by_unit else h.asset_id for h in hits]
        run = {qid: _dedupe(u, unit_docs if by_unit else asset_docs) for qid, u in keys.items()}
        key = (label, combine)
        key_runs[key], doc_runs[key] = keys, run
        results[key] = evaluate(run, qrels, METRICS)
        eprint(f"{label} [{combine}]: {results[key]} ({time.perf_counter() - t0:.0f}s)")
    eprint(f"all configurations: {time.perf_counter() - t_all:.0f}s")

    print(
        f"## Retrieval quality: {args.dataset} {args.split} ({len(queries)} queries, "
        f"{len(ds.corpus)} docs{f', first {args.limit}' if args.limit else ''})\n"
    )
    print(
        f"Units: {searchers['max'].manifest.n_units} (document chunks); k = {K_UNITS} hits "
        f"(files, or chunks where noted) mapped to documents; per-axis candidates 100 "
        f"(chunks). Query types from "
        f"classify_query: {', '.join(f'{t} {n}' for t, n in types.most_common())}.\n"
    )
    best = {m: max(r[m] for r in results.values()) for m in METRICS}
    rows = []
    for (label, combine), r in results.items():
        rows.append(
            [
                label,
                combine,
                *(f"**{r[m]:.4f}**" if r[m] == best[m] else f"{r[m]:.4f}" for m in METRICS),
            ]
        )
    print(md_table(["configuration", "fts_combine", "nDCG@10", "Recall@100", "MRR@10"], rows))

    for m in METRICS:
        winners = [f"{label} [{c}]" for (label, c), r in results.items() if r[m] == best[m]]
        print(f"\nbest {m}: {best[m]:.4f}: {'; '.join(winners)}", end="")
    print()
    mv = results[("MV (axes=[mv])", "-")]
    for combine in ("max", "sum"):
        hyb = results[("hybrid, auto query type (default)", combine)]
        bm25 = results[("BM25 (axes=[fts])", combine)]
        verdict = ", ".join(
            f"{m} {'yes' if hyb[m] > max(bm25[m], mv[m]) else 'NO'}" for m in METRICS
        )
        print(f"\nhybrid (default, fts_combine={combine}) beats both BM25 and MV: {verdict}")

    if args.explore:
        explore(queries, qrels, key_runs, asset_docs, doc_runs, searchers["max"])
    for s in searchers.values():
        s.close()
    return 0


def rerank_quality(args) -> int:
    """BM25, MV, hybrid and hybrid + rerank (out-of-fold), with CIs against the hybrid."""
    from evals.fusion_sweep import choose_fusion
    from evals.ranker_training import collect, cross_validate, fit_with_depth, ranked_keys
    from evals.stats import paired_bootstrap
    from rag_pipeline.datasets import doc_id_for_uri

    ds, index = common.dataset_and_index(args)
    searcher = common.open_searcher(index, fts_combine="max")
    if searcher.encoder is None:
        raise SystemExit("the snapshot has no MV axis")
    searcher.encoder.encode_query = lru_cache(maxsize=None)(searcher.encoder.encode_query)
    asset_docs = common.unit_doc_map(searcher, index.mapping, key="asset_id")
    who = eval_principal(searcher)
    queries, qrels = ds.queries, ds.qrels
    if args.queries:  # the table averages over the judged queries: these alone
        queries = dict(list(queries.items())[: args.queries])
        qrels = {q: qrels[q] for q in queries if q in qrels}

    def keys_of(row) -> list[str]:
        locs = [loc.split("/", 1)[1] for loc in row.get("locations") or () if "/" in loc]
        out: dict[str, None] = {}
        for rel in [row.get("path") or "", *locs]:
            d = doc_id_for_uri(rel, index.mapping)
            if d is not None:
                out.setdefault(d, None)
        return list(out)

    def ranked(cands) -> list[str]:
        out: dict[str, None] = {}
        for c in cands:
            for d in keys_of(c.row):
                out.setdefault(d, None)
        return list(out)

    # Every configuration from the fused candidates (what Searcher.search would rank, without
    # building 100 explained hits per query): single axes, then the hybrid with features.
    runs: dict[str, dict[str, list[str]]] = {}
    for label, axes in () if args.no_axes else (("BM25", ["fts"]), ("MV", ["mv"])):
        t0 = time.perf_counter()
        runs[label] = {
            qid: ranked(searcher.fused_candidates(text, who, rerank_depth=K_UNITS, axes=axes))
            for qid, text in queries.items()
        }
        eprint(
            f"{label}: {evaluate(runs[label], qrels, METRICS)} ({time.perf_counter() - t0:.0f}s)"
        )
    t0 = time.perf_counter()
    judged = collect(
        searcher,
        [(qid, text, qrels.get(qid, {})) for qid, text in queries.items()],
        keys_of,
        who,
        depth=K_UNITS,
    )
    runs["hybrid"] = {q.query_id: ranked_keys(q, range(len(q.keys))) for q in judged}
    eprint(
        f"hybrid + features of {len(judged)} queries x {K_UNITS} candidates: "
        f"{time.perf_counter() - t0:.0f}s"
    )
    # The fused candidates are Searcher.search's ranking: checked on a sample.
    sample = list(queries)[: 10 if args.queries else 50]
    same = sum(
        _dedupe(
            [h.asset_id for h in searcher.search(queries[q], who, k=K_UNITS, rerank=False).hits],
            asset_docs,
        )
        == runs["hybrid"][q]
        for q in sample
    )
    fusion = None if args.no_axes else choose_fusion(runs["BM25"], runs["MV"], dict(queries), qrels)
    eprint(f"fusion: {fusion}")
    figures, _fused_run, rerank_run = cross_validate(judged, folds=5)
    # No cross-encoder weights here: the stage's features are all cross-encoder-free.
    runs["hybrid + rerank, cross-encoder-free features (out-of-fold)"] = rerank_run
    per = {name: evaluate_per_query(run, qrels, METRICS) for name, run in runs.items()}
    ids = list(queries)
    print(
        f"## Rerank stage: {args.dataset} {args.split} ({len(queries)} queries, "
        f"{len(ds.corpus)} docs); 5-fold cross-validation over queries, out-of-fold figures\n"
    )
    print(
        f"The fused candidates reproduce Searcher.search's ranking on {same}/{len(sample)} "
        "sampled queries. CI: paired bootstrap (10,000 resamples) of the difference with the "
        "hybrid.\n"
    )
    rows = []
    for name, run in runs.items():
        r = evaluate(run, qrels, METRICS)
        cells = []
        for m in METRICS:
            if name == "hybrid":
                cells.append(f"{r[m]:.4f}")
                continue
            ci = paired_bootstrap(
                [per["hybrid"][m].get(q, 0.0) for q in ids], [per[name][m].get(q, 0.0) for q in ids]
            )
            cells.append(f"{r[m]:.4f} ({ci['diff']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}])")
        rows.append([name, *cells])
    print(md_table(["configuration", "nDCG@10", "Recall@100", "MRR@10"], rows))
    model = fit_with_depth(judged, version=f"ranker-{args.dataset}-{args.split}")
    cvf = fusion["cv"] if fusion else None
    print(
        ""
        if cvf is None or fusion is None
        else "\nFusion learned per query type (5-fold, out-of-fold nDCG@10, offline BM25+MV RRF): "
        f"built-in {cvf['builtin']:.4f} -> learned {cvf['learned_out_of_fold']:.4f} "
        f"({cvf['diff']['diff']:+.4f} [{cvf['diff']['lo']:+.4f}, {cvf['diff']['hi']:+.4f}]); "
        f"chosen on all queries: FTS share {fusion['fts_share']}, semantic_min_words "
        f"{fusion['semantic_min_words']}"
    )
    model = model.model_copy(
        update={
            "fusion": fusion,
            "cv": figures,
            "trained": {
                **model.trained,
                "gold": f"{args.dataset} {args.split} (BEIR qrels)",
                "snapshot_id": searcher.manifest.snapshot_id,
                "depth": K_UNITS,
            },
        }
    )
    out = Path(args.ranker_out) if args.ranker_out else index.root / "ranker.json"
    model.write(out)
    top = sorted(model.weights.items(), key=lambda kv: -abs(kv[1]))[:8]
    print(
        "\nWeights fitted on all queries (standardised features; largest first): "
        + ", ".join(f"{k} {v:+.3f}" for k, v in top)
        + "; penalties: "
        + ", ".join(f"{k} {v:.3f}" for k, v in model.penalty_weights.items())
        + f". Rerank depth chosen on all queries: {model.depth} (inner CV nDCG@10 "
        + f"{model.trained.get('depth_ndcg@10_inner_cv')}; per outer fold: "
        + f"{figures.get('depth_per_fold')}). Ranker file: {out}"
    )
    searcher.close()
    return 0


def explore(queries, qrels, key_runs, asset_docs, doc_runs, searcher) -> None:
    """Why the default hybrid does (not) beat the single axes: offline weighted RRF of the
    per-axis file rankings over fusion weights and RRF k (exactly as Searcher.search fuses
    them, collapse=True), per-axis candidate depth (real searches), and query typing."""
    from rag_pipeline.retrieval.fusion import (
        RRF_K,
        classify_query,
        weighted_rrf,
        weights_for,
    )

    mv_keys = key_runs[("MV (axes=[mv])", "-")]
    fts_by_combine = {c: key_runs[("BM25 (axes=[fts])", c)] for c in ("max", "sum")}

    def fuse(
        qid: str, weights: dict[str, float], k: int = RRF_K, combine: str = "max"
    ) -> list[str]:
        fused = weighted_rrf(
            {"fts": fts_by_combine[combine][qid], "mv": mv_keys[qid]}, weights, k=k
        )
        return _dedupe([u for u, _ in fused[:K_UNITS]], asset_docs)

    def row(run: dict[str, list[str]]) -> list[str]:
        r = evaluate(run, qrels, METRICS)
        return [f"{r[m]:.4f}" for m in METRICS]

    # 1. Fusion weights and RRF k.
    for combine in ("max", "sum"):
        same = sum(
            fuse(qid, weights_for(classify_query(text), ["fts", "mv"]), RRF_K, combine)
            == doc_runs[("hybrid, auto query type (default)", combine)][qid]
            for qid, text in queries.items()
        )
        print(
            f"\n### Fusion weight sweep (offline weighted_rrf), fts_combine={combine}\n\n"
            f"The offline fusion reproduces Searcher.search (default hybrid) on "
            f"{same}/{len(queries)} queries.\n"
        )
        rows = []
        for k in (10, 30, 60):
            for w_fts in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
                w = {"fts": w_fts, "mv": round(1.0 - w_fts, 3)}
                rows.append(
                    [
                        k,
                        f"{w_fts:.1f}",
                        f"{1 - w_fts:.1f}",
                        *row({qid: fuse(qid, w, k, combine) for qid in queries}),
                    ]
                )
        print(
            md_table(
                ["RRF k", "w_fts", "w_mv", "nDCG@10", "Recall@100", "MRR@10"], rows, align="rrrrrr"
            )
        )

    # 2. Per-axis candidate depth (real searches, default hybrid, fts_combine=max).
    # (Searcher.search asks each axis for max(candidates, k) chunks: with k = 100, fewer than
    # 100 candidates would change nothing.)
    print("\n### Per-axis candidates (Searcher.search default hybrid, fts_combine=max)\n")
    rows = []
    who = eval_principal(searcher)
    for cand in (100, 200, 400, 1000):
        run = {
            qid: [
                d
                for h in searcher.search(text, who, k=K_UNITS, candidates=cand).hits
                for d in asset_docs.get(h.asset_id, ())
            ]
            for qid, text in queries.items()
        }
        rows.append([cand, *row(run)])
    print(md_table(["candidates", "nDCG@10", "Recall@100", "MRR@10"], rows))

    # 3. Query typing: the weights each query gets.
    per = {
        key: evaluate_per_query(run, qrels, ["ndcg@10"])["ndcg@10"] for key, run in doc_runs.items()
    }
    hyb = per[("hybrid, auto query type (default)", "max")]
    bm25, mv = per[("BM25 (axes=[fts])", "max")], per[("MV (axes=[mv])", "-")]
    by_type: dict[str, list[tuple[float, float, float]]] = {}
    for qid, text in queries.items():
        if qid in hyb:
            by_type.setdefault(classify_query(text), []).append((hyb[qid], bm25[qid], mv[qid]))
    print("\n### nDCG@10 by classified query type (fts_combine=max)\n")
    print(
        md_table(
            ["query type", "queries", "hybrid (default)", "BM25", "MV"],
            [
                [t, len(v), *(f"{sum(x[i] for x in v) / len(v):.4f}" for i in range(3))]
                for t, v in sorted(by_type.items())
            ],
        )
    )

    def long_is_semantic(text: str) -> str:
        # Alternative rule: a sentence-long query (6+ words) is semantic even when it contains
        # a digit, an acronym or a camelCase token; quoted phrases stay keyword.
        t = classify_query(text)
        if t == "keyword" and '"' not in text and len(_WORD.findall(text)) >= 6:
            return "semantic"
        return t

    rows = []
    for label, typer in (
        ("classify_query (current)", classify_query),
        ("6+ word queries -> semantic", long_is_semantic),
        ("all balanced", lambda _t: "balanced"),
        ("all semantic", lambda _t: "semantic"),
    ):
        run = {
            qid: fuse(qid, weights_for(typer(text), ["fts", "mv"])) for qid, text in queries.items()
        }
        rows.append([label, *row(run)])
    print("\n### Query typing (offline, RRF k=60, fts_combine=max)\n")
    print(md_table(["query typing", "nDCG@10", "Recall@100", "MRR@10"], rows))

    # 5. BM25 title boost. Experiment: overrides the searcher's in-memory per-field boosts
    # (a private attribute; the snapshot and the settings are untouched) to see what
    # Settings.field_weights.title would do without rebuilding the snapshot.
    fields, boosts = getattr(searcher, "_fts_fields", None), getattr(searcher, "_fts_boosts", None)
    if not fields or boosts is None or "title" not in fields:
        print("\n(title boost sweep skipped: this Searcher has no _fts_fields/_fts_boosts)")
        return
    base = list(boosts)
    rows = []
    try:
        for title_boost in (0.5, 1.0, 1.5, 2.0, 3.0):
            searcher._fts_boosts = [
                title_boost if f == "title" else b for f, b in zip(fields, base, strict=True)
            ]
            cells = []
            for axes in (["fts"], None):
                who = eval_principal(searcher)
                run = {
                    qid: [
                        d
                        for h in searcher.search(text, who, k=K_UNITS, axes=axes).hits
                        for d in asset_docs.get(h.asset_id, ())
                    ]
                    for qid, text in queries.items()
                }
                cells += row(run)
            rows.append(
                [
                    f"{title_boost:g}"
                    + (" (current)" if title_boost == base[fields.index("title")] else ""),
                    *cells,
                ]
            )
    finally:
        searcher._fts_boosts = base
    others = ", ".join(f"{f} {b:g}" for f, b in zip(fields, base, strict=True) if f != "title")
    print(f"\n### BM25 title boost (fts_combine=max; other boosts: {others})\n")
    print(
        md_table(
            [
                "title boost",
                "BM25 nDCG@10",
                "BM25 R@100",
                "BM25 MRR@10",
                "hybrid nDCG@10",
                "hybrid R@100",
                "hybrid MRR@10",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
