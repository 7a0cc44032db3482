"""Chunking A/B on SciFact: text-v1 (512 regex tokens a chunk) against text-v2 (chunks that fit
MiniLM's window), compared through the snapshot policy as a user would compare two profiles.

    python benchmarks/chunking_ab.py [--limit N] [--rebuild] [--no-update]

The catalog of ``var/bench/<dataset>`` (``quality_scifact.py``'s, built with the default
text-v2) gets the text-v1 profiles too (``benchmarks/config/models_chunking_ab.yaml``: text-v1
+ minilm-l6 beside text-v2 + minilm-l6-fit): one ``materialize_all`` analyses what it lacks.
Each arm is then published by switching the policy (``policy set text|mv``) and materializing
again (only the snapshot changes), and every judged query runs through ``Searcher.search``
(k=100 files, the fused order: ``rerank=False``, so the comparison is the chunking's alone) for
BM25, MV and the hybrid. Reported per arm: units, units whose title + text exceed the model's
window (what MiniLM cuts), nDCG@10, Recall@100, MRR@10, and text-v2 minus text-v1 with paired
bootstrap CIs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import eprint, md_table

from evals.metrics import evaluate, evaluate_per_query
from evals.stats import paired_bootstrap

METRICS = ("ndcg@10", "recall@100", "mrr@10")
MODELS_FILE = Path(__file__).resolve().parent / "config" / "models_chunking_ab.yaml"
ARMS = {"text-v1": "minilm-l6", "text-v2": "minilm-l6-fit"}
CONFIGS = {"BM25": {"axes": ["fts"]}, "MV": {"axes": ["mv"]}, "hybrid": {}}


def publish_arm(index: common.BenchIndex, text: str, mv: str) -> str:
    """Point the policy at one arm and publish its snapshot; the snapshot id."""
    import dagster as dg

    from rag_pipeline.analysis.profiles import load_profiles
    from rag_pipeline.definitions import defs
    from rag_pipeline.launcher import materialize_all
    from rag_pipeline.snapshot.policy import set_policy
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    profiles = load_profiles(index.settings)
    with open_settings_catalog(index.settings) as cat:
        set_policy(profiles, cat, "text", text, "chunking A/B")
        set_policy(profiles, cat, "mv", mv, "chunking A/B")
    with dg.DagsterInstance.get() as instance:
        summary = materialize_all(defs, instance=instance, log=lambda *_: None)
    return str(summary["snapshot_id"])


def over_window(searcher) -> tuple[int, int]:
    """Units whose title + chunk (what the MV analyzer embeds) exceed the model's window."""
    from rag_pipeline.analysis.analyzers.token_budget import ModelTokenizer

    if searcher.encoder is None:
        raise SystemExit("the snapshot has no MV axis")
    window = ModelTokenizer.load(searcher.encoder.model_dir)
    rows = searcher.table.to_lance().to_table(columns=["title", "body"]).to_pylist()
    texts = [f"{r['title']}\n{r['body']}" if r["title"] else r["body"] or "" for r in rows]
    return len(texts), sum(window.truncated(t) for t in texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_dataset_args(parser)
    common.add_index_args(parser)
    args = parser.parse_args(argv)
    os.environ["RAG_MODELS_FILE"] = str(MODELS_FILE)
    ds = common.load_dataset(args.dataset, args.split, args.limit)
    name = common.bench_name(args.dataset, args.limit)
    index = common.ensure_index(ds, name, rebuild=args.rebuild, update=not args.no_update)
    if index.seconds is not None:
        eprint(f"[{name}] both arms analysed (what was missing) in {index.seconds:.0f}s")

    from evals.runner import eval_principal

    queries, qrels = ds.queries, ds.qrels
    per: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    mean: dict[tuple[str, str], dict[str, float]] = {}
    units: dict[str, tuple[int, int]] = {}
    snapshots: dict[str, str] = {}
    # text-v2 last: the index is left serving the default chunking.
    for text, mv in ARMS.items():
        t0 = time.perf_counter()
        snapshots[text] = publish_arm(index, text, mv)
        searcher = common.open_searcher(index)
        if searcher.manifest.policy.get("text") != text:
            raise SystemExit(f"the published snapshot serves {searcher.manifest.policy}")
        units[text] = over_window(searcher)
        who = eval_principal(searcher)
        for label, kw in CONFIGS.items():
            run = {
                qid: common.docs_from_hits(
                    searcher.search(q, who, k=100, rerank=False, **kw).hits, index.mapping
                )
                for qid, q in queries.items()
            }
            per[(text, label)] = evaluate_per_query(run, qrels, METRICS)
            mean[(text, label)] = evaluate(run, qrels, METRICS)
        searcher.close()
        eprint(f"[{text}] snapshot {snapshots[text]}: {time.perf_counter() - t0:.0f}s")

    print(
        f"## Chunking A/B: {args.dataset} {args.split} ({len(queries)} queries, "
        f"{len(ds.corpus)} docs); k = 100 files, fused order (no rerank)\n"
    )
    rows = []
    for (text, label), r in mean.items():
        n, over = units[text]
        cells = [f"{r[m]:.4f}" for m in METRICS]
        if text == "text-v2":
            ids = list(queries)
            for j, m in enumerate(METRICS):
                a = [per[("text-v1", label)][m].get(q, 0.0) for q in ids]
                b = [per[("text-v2", label)][m].get(q, 0.0) for q in ids]
                ci = paired_bootstrap(a, b)
                cells[j] += f" ({ci['diff']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}])"
        rows.append([text, label, f"{n} ({over} over the window)", *cells])
    print(md_table(["chunking", "search", "units", "nDCG@10", "Recall@100", "MRR@10"], rows))
    print(
        "\ntext-v2 rows: (difference with text-v1 [95% paired bootstrap CI]). "
        f"Snapshots: {snapshots}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
