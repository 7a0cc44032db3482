"""Evaluate a published snapshot on a gold set, and index a dataset through the pipeline.

``evaluate_searcher`` runs every gold query through one engine of an open ``Searcher`` and
returns a JSON-able result: aggregate metrics, per-query results (ranked doc keys, metrics,
latency, CPU time, error) and provenance. ``index_dataset`` exports a BEIR corpus as files (or
takes a folder as is) and materializes the whole graph through Dagster into its own data dir.

Engines: ``hybrid`` (serving's default: BM25 + MV fused by weighted RRF), ``bm25``
(``axes=["fts"]``), ``mv`` (``axes=["mv"]``), ``vv`` (``axes=["vv"]``: refused while no visual
axis is served; every query then counts as an error), ``lancedb-hybrid`` (LanceDB's built-in
hybrid with its RRFReranker: ``evals.baselines.lancedb_hybrid``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, Literal

from evals.goldsets import GoldQuery, GoldSet
from evals.metrics import EVAL_METRICS, evaluate_per_query, latency_summary
from rag_pipeline.settings import Settings, packaged_file

# "hybrid": what serving answers (fusion, then the rerank stage when the snapshot has a
# ranker); "hybrid-fused": the fused order alone; the single axes are never reranked.
ENGINES = ("hybrid", "hybrid-fused", "bm25", "mv", "vv", "lancedb-hybrid")
ENGINE_AXES: dict[str, list[str] | None] = {
    "hybrid": None,
    "hybrid-fused": None,
    "bm25": ["fts"],
    "mv": ["mv"],
    "vv": ["vv"],
}
K_HITS = 100
REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Path = REPO) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------
# Mapping hits to the gold set's document keys


class DocMapper:
    """A hit's file path(s) -> the gold set's document keys.

    BEIR: the exported file's stem -> doc id (``beir_map``). Extended JSONL: the path relative
    to whichever source root contains it (POSIX), e.g. ``docs/outdoors/beekeeping.md``.
    """

    def __init__(self, roots: Sequence[Path] = (), beir_map: dict[str, str] | None = None):
        self.roots = [Path(r).resolve() for r in roots]
        self.beir_map = beir_map

    def hit_keys(self, hits: Sequence[Any]) -> list[str]:
        """Document keys of serving hits, which name files by source and relative path: the
        hit's path and every other location of its content."""
        return self._rel_keys(
            [
                rel
                for h in hits
                for rel in (h.path, *_rel_locations(h.explanation.file_version.locations))
            ]
        )

    def row_keys(self, row: Any) -> list[str]:
        """Document keys of a snapshot row (its ``path`` and ``locations``): a rerank
        candidate's."""
        return self._rel_keys([row.get("path") or "", *_rel_locations(row.get("locations"))])

    def _rel_keys(self, rels: Sequence[str]) -> list[str]:
        out: dict[str, None] = {}
        for rel in rels:
            if not rel:
                continue
            if self.beir_map is not None:
                from rag_pipeline.datasets.beir import doc_id_for_uri

                d = doc_id_for_uri(rel, self.beir_map)
                if d is not None:
                    out.setdefault(d, None)
            else:
                out.setdefault(PurePath(rel).as_posix(), None)
        return list(out)

    def keys(self, uris: Sequence[str]) -> list[str]:
        out: dict[str, None] = {}
        for uri in uris:
            if not uri:
                continue
            if self.beir_map is not None:
                from rag_pipeline.datasets.beir import doc_id_for_uri

                d = doc_id_for_uri(uri, self.beir_map)
                if d is not None:
                    out.setdefault(d, None)
                continue
            p = Path(uri)
            for root in self.roots:
                try:
                    out.setdefault(p.resolve().relative_to(root).as_posix(), None)
                    break
                except ValueError:
                    continue
            else:
                out.setdefault(PurePath(uri).as_posix(), None)
        return list(out)


def _rel_locations(locations: Sequence[str] | None) -> list[str]:
    """``<source>/<path>`` locations -> their paths."""
    return [loc.split("/", 1)[1] for loc in locations or () if "/" in loc]


def _violates(q: GoldQuery, text: str) -> bool:
    low = text.lower()
    return any(t.lower() not in low for t in q.must) or any(t.lower() in low for t in q.exclude)


def _hit_text(hit: Any) -> str:
    parts = [hit.title or "", hit.snippet or "", hit.path]
    parts += [e.text for e in hit.explanation.matched_evidence]
    return "\n".join(parts)


def unit_uris(searcher: Any) -> dict[str, list[str]]:
    table = searcher.table
    n = int(table.count_rows())
    rows = table.search().select(["unit_id", "uri", "uris"]).limit(max(n, 1)).to_arrow()
    return {
        u: [uri, *(uris or [])]
        for u, uri, uris in zip(
            rows.column("unit_id").to_pylist(),
            rows.column("uri").to_pylist(),
            rows.column("uris").to_pylist(),
            strict=True,
        )
    }


def provenance(searcher: Any, engine: str, gold: GoldSet, **extra: Any) -> dict:
    from rag_pipeline.retrieval.fusion import FUSION_WEIGHTS, RRF_K

    m = searcher.manifest
    models = {
        axis: (info.model.model_dump(mode="json") if info.model else None)
        for axis, info in m.axes.items()
    }
    return {
        "snapshot_id": m.snapshot_id,
        "snapshot_created_at": m.created_at.isoformat(),
        "snapshot_table": m.table_name,
        "n_units": m.n_units,
        "axes_available": {a: i.available for a, i in m.axes.items()},
        "models": models,
        "field_weights": m.field_weights,
        "policy": m.stats.get("policy"),
        "fusion_weights": FUSION_WEIGHTS,
        "rrf_k": RRF_K,
        "fts_combine": searcher.fts_combine,
        "engine": engine,
        "dataset": str(gold.path) if gold.path else gold.name,
        "dataset_name": gold.name,
        "gold_kind": gold.kind,
        "split": gold.split,
        "git_commit": git_commit(),
        "evaluated_at": datetime.now(UTC).isoformat(),
        "python": sys.version.split()[0],
        **extra,
    }


def eval_principal(searcher: Any, tenant: str | None = None) -> Any:
    """Evals read as the operator of one whole tenant: ``tenant``, else the snapshot's only
    tenant, else RAG_TENANT."""
    if tenant is None:
        tenants = getattr(searcher, "tenants", None) or []
        tenant = tenants[0] if len(tenants) == 1 else Settings().tenant_id
    return searcher.operator_principal(tenant)


def query_runner(
    searcher: Any,
    mapper: DocMapper,
    *,
    engine: str = "hybrid",
    k: int = K_HITS,
    use_gold_types: bool = False,
) -> Callable[[GoldQuery], tuple[list[str], str | None]]:
    """A function: gold query -> (ranked doc keys, served query type) for one engine."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    from evals.baselines.lancedb_hybrid import lancedb_hybrid
    from serving.models import SearchFilters

    uris_of = unit_uris(searcher) if engine == "lancedb-hybrid" else None
    principal = eval_principal(searcher)

    def run_one(q: GoldQuery) -> tuple[list[str], str | None]:
        filters = None
        if q.scope and (q.scope.kind or q.scope.folder):
            filters = SearchFilters(kind=q.scope.kind, folder_prefix=q.scope.folder)
        if engine == "lancedb-hybrid":
            ids = lancedb_hybrid(searcher, q.query, principal, k=k, filters=filters)
            return mapper.keys([u for uid in ids for u in (uris_of or {}).get(uid, [])]), None
        qt = q.query_type if use_gold_types else None  # gold types are serving's types
        resp = searcher.search(
            q.query,
            principal,
            k=k,
            axes=ENGINE_AXES[engine],
            filters=filters,
            query_type=qt,
            rerank=engine == "hybrid",
        )
        hits = [h for h in resp.hits if not ((q.must or q.exclude) and _violates(q, _hit_text(h)))]
        return mapper.hit_keys(hits), resp.query_type

    return run_one


def _timed(run_one: Callable, q: GoldQuery, k: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    error, qtype, ranked = None, None, []
    try:
        ranked, qtype = run_one(q)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    ms = (time.perf_counter() - t0) * 1000.0
    cpu = time.process_time() - c0
    if qtype is None and q.query_type is None:  # lancedb-hybrid: group by serving's classifier
        from rag_pipeline.retrieval.fusion import classify_query

        qtype_group: str | None = classify_query(q.query)
    else:
        qtype_group = q.query_type or qtype
    return {
        "query_id": q.query_id,
        "query": q.query,
        "query_type": qtype_group,
        "served_query_type": qtype,
        "ranked": ranked[:k],
        "latency_ms": round(ms, 3),
        "cpu_s": round(cpu, 6),
        "error": error,
    }


def _finish(per_query: list[dict], gold: GoldSet, metrics: Sequence[str]) -> dict:
    run = {r["query_id"]: r["ranked"] for r in per_query}
    scores = evaluate_per_query(run, gold.qrels, metrics)
    for row in per_query:
        row["metrics"] = {m: scores[m].get(row["query_id"], 0.0) for m in metrics}
    return {
        "metrics": summarize(per_query, metrics),
        "n_queries": len(per_query),
        "per_query": per_query,
    }


def evaluate_searcher(
    searcher: Any,
    gold: GoldSet,
    mapper: DocMapper,
    *,
    engine: str = "hybrid",
    metrics: Sequence[str] = EVAL_METRICS,
    k: int = K_HITS,
    use_gold_types: bool = False,
    warmup: bool = True,
    extra_provenance: dict | None = None,
) -> dict:
    """Run every gold query through ``engine``; score with ``metrics``; time each query
    (wall: ``perf_counter``; CPU: ``process_time``, the whole process incl. search threads)."""
    return evaluate_interleaved(
        [searcher],
        gold,
        mapper,
        engine=engine,
        metrics=metrics,
        k=k,
        use_gold_types=use_gold_types,
        warmup=warmup,
        extra_provenance=extra_provenance,
    )[0]


def evaluate_interleaved(
    searchers: Sequence[Any],
    gold: GoldSet,
    mapper: DocMapper,
    *,
    engine: str = "hybrid",
    metrics: Sequence[str] = EVAL_METRICS,
    k: int = K_HITS,
    use_gold_types: bool = False,
    warmup: bool = True,
    extra_provenance: dict | None = None,
) -> list[dict]:
    """Evaluate several snapshots query by query, alternating which goes first, so that load
    on the machine (another job, a GC pause) hits every snapshot alike: latencies compare.
    With ``warmup`` each query first runs once untimed (like with like: the embedding cache
    they share is warm for both)."""
    runners = [
        query_runner(s, mapper, engine=engine, k=k, use_gold_types=use_gold_types)
        for s in searchers
    ]
    if warmup and gold.queries:  # first-query costs (lazy loading, caches) are not latency
        for run_one in runners:
            _timed(run_one, gold.queries[0], k)
    per_query: list[list[dict]] = [[] for _ in searchers]
    for i, q in enumerate(gold.queries):
        if warmup and len(runners) > 1:
            # Untimed first: the snapshots share the query-embedding cache, so whichever ran a
            # query first would pay its encoding alone (seconds under load, against
            # milliseconds): timed, both now search with the same cached vector.
            _timed(runners[i % len(runners)], q, k)
        order = range(len(runners)) if i % 2 == 0 else reversed(range(len(runners)))
        for j in order:
            per_query[j].append(_timed(runners[j], q, k))
    out = []
    for s, rows in zip(searchers, per_query, strict=True):
        res = _finish(rows, gold, metrics)
        res["provenance"] = provenance(
            s, engine, gold, k=k, use_gold_types=use_gold_types, **(extra_provenance or {})
        )
        out.append(res)
    return out


def summarize(per_query: Sequence[dict], metrics: Sequence[str] = EVAL_METRICS) -> dict:
    n = len(per_query)
    out: dict[str, float] = {
        m: (sum(r["metrics"][m] for r in per_query) / n if n else 0.0) for m in metrics
    }
    out |= latency_summary([r["latency_ms"] for r in per_query])
    out["error_rate"] = (sum(1 for r in per_query if r.get("error")) / n) if n else 0.0
    out["cpu_s_per_1k_queries"] = (1000.0 * sum(r["cpu_s"] for r in per_query) / n) if n else 0.0
    return out


# --------------------------------------------------------------------------------------------
# Indexing a dataset through the pipeline


def configure_environment(root: Path, sources: Sequence[Path]) -> None:
    """RAG_DATA_DIR, RAG_SOURCES, DAGSTER_HOME under ``root`` (before importing the defs)."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    yaml_src, target = packaged_file("dagster.yaml"), home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != yaml_src.read_bytes():
        shutil.copyfile(yaml_src, target)
    os.environ["RAG_DATA_DIR"] = str(root / "data")
    os.environ["RAG_SOURCES"] = os.pathsep.join(str(s) for s in sources)
    os.environ["DAGSTER_HOME"] = str(home)


def prepare_dataset(
    gold: GoldSet, workdir: Path, corpus_dir: Path | None = None
) -> tuple[list[Path], DocMapper]:
    """Sources to index and the hit -> doc key mapper. BEIR: the corpus exported as Markdown
    under ``workdir/corpus`` (unchanged files keep their mtime: nothing is re-analysed)."""
    if gold.kind == "beir":
        from rag_pipeline.datasets.beir import BeirDataset, export_corpus_as_files

        out = workdir / "corpus"
        ds = BeirDataset(
            name=gold.name, split=gold.split or "", corpus=gold.corpus or {}, queries={}, qrels={}
        )
        mapping = export_corpus_as_files(ds, out)
        return [out], DocMapper(beir_map=mapping)
    if corpus_dir is None:
        raise ValueError("an extended JSONL gold set needs the corpus folder (--dataset DIR)")
    return [corpus_dir], DocMapper(roots=[corpus_dir])


def open_searcher(
    data_dir: Path,
    *,
    pointer: str = "CURRENT",
    snapshot_id: str | None = None,
    fts_combine: Literal["max", "sum"] = "max",
) -> Any:
    from serving.searcher import Searcher

    return Searcher.open(
        data_dir / "snapshots",
        data_dir / "lance",
        pointer=pointer,
        snapshot_id=snapshot_id,
        fts_combine=fts_combine,
        mv_model_dir=Settings().query_model_dir,
        ce_model_dir=Settings().query_ce_model_dir,
    )
