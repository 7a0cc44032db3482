"""Shared benchmark helpers: index a BEIR dataset through the real pipeline, search it by doc id.

The corpus is exported as Markdown files under ``<repo>/var/bench/<name>/corpus``; the pipeline
runs through Dagster (``materialize_all``: discover_job, shard_job per shard, snapshot_job) with

    RAG_DATA_DIR = var/bench/<name>/data
    RAG_SOURCES  = var/bench/<name>/corpus
    DAGSTER_HOME = var/bench/<name>/dagster_home   (the repo's dagster.yaml copied there)

set *before* ``rag_pipeline.definitions`` is imported (the shard partitions are fixed at import).
Rebuilding an existing index is incremental: unchanged files are not re-analysed and an
unchanged catalog publishes no new snapshot.

Search results are units (document chunks); ``search_docs`` maps them back to BEIR doc ids
through each hit's file path(s), keeping a document's first (best) rank.

The dataset is read from ``$RAG_SHARED_DATA/<dataset>`` (default ``<repo>/../shared/data``),
never copied into the repository. Benchmarks only: no test imports this module.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/x.py` puts benchmarks/, not the repo, first
    sys.path.insert(0, str(REPO))

from rag_pipeline.datasets import (  # noqa: E402
    BeirDataset,
    doc_id_for_uri,
    export_corpus_as_files,
    load_beir,
)
from rag_pipeline.settings import Settings  # noqa: E402

BENCH_ROOT = REPO / "var" / "bench"

# Quiet, offline model loading for every benchmark.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LANCEDB_LOG", "error")  # lance's Rust deprecation chatter on every query
# The publish run's blocking smoke-eval gate judges the demo corpus (var/demo_gold.jsonl), not a
# benchmark corpus: off unless asked for, so a benchmark neither depends on nor times it.
os.environ.setdefault("RAG_SMOKE_GOLD", "off")


def eprint(*args: Any) -> None:
    """Progress goes to stderr; stdout carries only the result tables."""
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Dataset


def shared_data_dir() -> Path:
    path = Settings().shared_data
    return path if path.is_absolute() else REPO / path


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="only the first N corpus documents (and the queries whose relevant "
        "documents are all among them): a quick run",
    )
    parser.add_argument(
        "--dataset",
        default="scifact",
        help="BEIR dataset folder under $RAG_SHARED_DATA (default: scifact)",
    )
    parser.add_argument("--split", default="train", help="qrels split (default: train)")


def dataset_and_index(args: argparse.Namespace) -> tuple[BeirDataset, BenchIndex]:
    """The dataset and its index as ``add_dataset_args`` / ``add_index_args`` asked for."""
    ds = load_dataset(args.dataset, args.split, args.limit)
    index = ensure_index(
        ds, bench_name(args.dataset, args.limit), rebuild=args.rebuild, update=not args.no_update
    )
    return ds, index


def add_index_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="wipe and rebuild the index under var/bench/<dataset> first",
    )
    parser.add_argument(
        "--no-update",
        action="store_true",
        help="search the existing index as it is: no Dagster run (a search "
        "benchmark then neither waits for nor depends on the pipeline)",
    )


def load_dataset(
    name: str = "scifact", split: str = "train", limit: int | None = None
) -> BeirDataset:
    path = shared_data_dir() / name
    if not path.is_dir():
        raise SystemExit(f"dataset folder {path} not found (set RAG_SHARED_DATA)")
    ds = load_beir(path, split)
    return ds.first_docs(limit) if limit else ds


def bench_name(base: str, limit: int | None) -> str:
    """var/bench folder name: a limited run never reuses (or clobbers) the full index."""
    return f"{base}-first{limit}" if limit else base


# --------------------------------------------------------------------------------------------
# Indexing through the pipeline


@dataclass
class BenchIndex:
    name: str
    root: Path
    corpus_dir: Path
    dataset: BeirDataset
    mapping: dict[str, str]  # file stem -> doc id
    settings: Any  # rag_pipeline.settings.Settings
    summary: dict | None = None  # materialize_all's summary
    seconds: float | None = None  # materialize_all wall time
    export_stats: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def configure_environment(root: Path, corpus_dir: Path) -> None:
    """Point RAG_DATA_DIR, RAG_SOURCES and DAGSTER_HOME into ``root`` (call before importing
    ``rag_pipeline.definitions``)."""
    from evals.runner import configure_environment as configure_eval_environment

    configure_eval_environment(root, [corpus_dir])
    partitions = sys.modules.get("rag_pipeline.defs.partitions")
    if partitions is not None:
        from rag_pipeline.settings import Settings

        if Settings.from_env().shard_count != partitions.SHARD_COUNT:
            raise RuntimeError(
                "rag_pipeline.definitions was imported with another RAG_SHARDS: "
                "configure the environment before importing it"
            )


def prepare_corpus(ds: BeirDataset, name: str, *, fresh: bool = False) -> BenchIndex:
    """Export the corpus under var/bench/<name>/corpus and set the environment (no indexing)."""
    root = BENCH_ROOT / name
    if fresh and root.exists():
        shutil.rmtree(root)
    corpus_dir = root / "corpus"
    stats: dict[str, int] = {}
    mapping = export_corpus_as_files(ds, corpus_dir, stats=stats)
    configure_environment(root, corpus_dir)
    from rag_pipeline.settings import Settings

    return BenchIndex(
        name=name,
        root=root,
        corpus_dir=corpus_dir,
        dataset=ds,
        mapping=mapping,
        settings=Settings.from_env(),
        export_stats=stats,
    )


def _meta_value(v: Any) -> Any:
    return getattr(v, "value", v)


def read_stage_seconds(
    instance: Any, run_ids: Iterable[str]
) -> tuple[dict[str, float], dict[str, int]]:
    """Per-stage seconds and counts, summed over the runs' asset materialization metadata.

    Seconds keys: ``discover``, ``<asset>.<stage>`` for the partitioned analysis assets
    (``analysis_runs``: text analyzers; ``inference_runs``: MV embeddings; stages
    text_analyzers, mv_embed, stage, persist, total), ``evidence``, ``search_snapshot``.
    """
    import dagster as dg

    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(d: dict, key: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            d[key] = d.get(key, 0) + value

    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            mat = entry.asset_materialization
            if mat is None:
                continue
            asset = mat.asset_key.to_user_string()
            meta = {k: _meta_value(v) for k, v in mat.metadata.items()}
            if asset == "asset_versions":
                add(seconds, "discover", meta.get("seconds"))
            elif asset in ("analysis_runs", "inference_runs"):
                for k, v in meta.items():
                    if k.startswith("seconds_"):
                        add(seconds, f"{asset}.{k[len('seconds_') :]}", v)
                add(counts, f"{asset}.runs", 1)
                add(counts, f"{asset}.tasks", meta.get("n_tasks"))
                add(counts, "failed", meta.get("n_failed"))
                add(counts, "vectors", meta.get("vectors", meta.get("n_vectors")))
            elif asset == "evidence":
                add(seconds, "evidence", meta.get("seconds"))
            elif asset == "search_snapshot":
                add(seconds, "search_snapshot", meta.get("seconds"))
                add(counts, "snapshot_units", meta.get("dagster/row_count"))
                add(counts, "snapshot_units_with_mv", meta.get("units_with_mv"))
    return seconds, counts


def build_index(
    ds: BeirDataset, name: str, *, fresh: bool = False, log: Callable[..., None] = eprint
) -> BenchIndex:
    """Export ``ds`` and materialize the whole graph through Dagster; time it.

    ``fresh`` wipes var/bench/<name> first (needed after a catalog schema change).
    """
    index = prepare_corpus(ds, name, fresh=fresh)
    log(
        f"[{name}] corpus: {len(ds.corpus)} docs in {index.corpus_dir} "
        f"({index.export_stats}); shards: {index.settings.shard_count}"
    )
    import dagster as dg

    from rag_pipeline.definitions import defs
    from rag_pipeline.launcher import materialize_all

    with dg.DagsterInstance.get() as instance:
        t0 = time.perf_counter()
        try:
            summary = materialize_all(defs, instance=instance, log=lambda *_: None)
        except Exception as exc:
            raise SystemExit(
                f"[{name}] materializing failed: {type(exc).__name__}: {exc}\n(an index built "
                f"by an older version of the pipeline? rerun with --rebuild, or remove "
                f"{index.root})"
            ) from exc
        index.seconds = time.perf_counter() - t0
        index.summary = summary
        index.stage_seconds, index.counts = read_stage_seconds(instance, summary["runs"])
    n_runs = len(summary.get("partitions", summary.get("shards", [])))
    log(
        f"[{name}] materialized in {index.seconds:.1f}s: snapshot {summary['snapshot_id']} "
        f"({'published' if summary['published'] else 'unchanged'}), "
        f"{n_runs} partition run(s)"
    )
    return index


def ensure_index(
    ds: BeirDataset,
    name: str,
    *,
    rebuild: bool = False,
    update: bool = True,
    log: Callable[..., None] = eprint,
) -> BenchIndex:
    """The index under var/bench/<name>, built if absent, brought up to date (cheap: nothing is
    re-analysed when nothing changed) if not; ``rebuild`` starts from scratch. ``update=False``
    uses a published index as it is (no Dagster run)."""
    if not update and not rebuild:
        index = prepare_corpus(ds, name)
        if not (index.settings.snapshots_dir / "CURRENT").exists():
            raise SystemExit(
                f"[{name}] no published snapshot under {index.settings.data_dir}: "
                "run once without --no-update to build it"
            )
        log(f"[{name}] using the published index as it is (--no-update)")
        return index
    return build_index(ds, name, fresh=rebuild, log=log)


# --------------------------------------------------------------------------------------------
# Searching by document id


def open_searcher(index: BenchIndex, **kw: Any) -> Any:
    """A searcher without the query-embedding cache (benchmarks time every encode)."""
    from serving.cache import no_vector_cache
    from serving.searcher import Searcher

    kw.setdefault("query_cache", no_vector_cache())
    return Searcher.from_settings(index.settings, **kw)


def docs_from_hits(hits: Iterable[Any], mapping: dict[str, str]) -> list[str]:
    """Doc ids of ranked hits, each at its first (best) rank. A unit whose content is shared
    by several files (identical documents) stands for all of them."""
    out: dict[str, None] = {}
    for hit in hits:
        for loc in [hit.path, *hit.explanation.file_version.locations]:
            doc = doc_id_for_uri(loc, mapping)
            if doc is not None:
                out.setdefault(doc, None)
    return list(out)


def search_docs(
    searcher: Any, query: str, mapping: dict[str, str], *, k_units: int = 100, **kw: Any
) -> list[str]:
    """``Searcher.search`` for ``k_units`` units, deduplicated to doc ids (best rank)."""
    from evals.runner import eval_principal

    resp = searcher.search(query, eval_principal(searcher), k=k_units, **kw)
    return docs_from_hits(resp.hits, mapping)


def unit_doc_map(
    searcher: Any, mapping: dict[str, str], key: str = "unit_id"
) -> dict[str, list[str]]:
    """unit_id (or, with ``key="asset_id"``, asset id) -> doc ids, read once from the
    snapshot table (for the ``lancedb_hybrid`` baseline, which returns unit ids only)."""
    table = searcher.table
    n = int(table.count_rows())
    rows = table.search().select([key, "uri", "uris"]).limit(max(n, 1)).to_arrow()
    out: dict[str, dict[str, None]] = {}
    for kid, uri, uris in zip(
        rows.column(key).to_pylist(),
        rows.column("uri").to_pylist(),
        rows.column("uris").to_pylist(),
        strict=True,
    ):
        docs = out.setdefault(kid, {})
        for u in [uri, *(uris or [])]:
            d = doc_id_for_uri(u, mapping)
            if d is not None:
                docs.setdefault(d, None)
    return {kid: list(docs) for kid, docs in out.items()}


def lancedb_hybrid_docs(
    searcher: Any, query: str, unit_docs: dict[str, list[str]], *, k_units: int = 100
) -> list[str]:
    from evals.baselines.lancedb_hybrid import lancedb_hybrid

    out: dict[str, None] = {}
    from evals.runner import eval_principal

    for uid in lancedb_hybrid(searcher, query, eval_principal(searcher), k=k_units):
        for doc in unit_docs.get(uid, ()):
            out.setdefault(doc, None)
    return list(out)


# --------------------------------------------------------------------------------------------
# Reporting


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default), p in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "mean": statistics.fmean(ms) if ms else float("nan"),
    }


def md_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> str:
    """A Markdown table (``align``: one of l/r per column, default: first left, rest right)."""
    align = align or ("l" + "r" * (len(headers) - 1))
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if a == "l" else c.rjust(w)
                for c, w, a in zip(row, widths, align, strict=True)
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([fmt(cells[0]), sep, *(fmt(r) for r in cells[1:])])


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count() or 0
    threads = ""
    if "torch" in sys.modules:
        threads = f", torch threads {sys.modules['torch'].get_num_threads()}"
    gpu = "no GPU"
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        gpu = "GPU present (benchmarks run on CPU)"
    return (
        f"{cpu}, {ncpu} CPU cores{threads}, {gpu}; Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
