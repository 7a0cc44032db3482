"""Ingest assets: sources -> assets/asset_versions -> analysis_runs -> evidence.

Thin wiring: each asset calls the core and reports counts, timings and a Markdown summary.
Partition workers (analysis_runs) never open the catalog; the writers (discover, evidence) hold
the catalog writer lock for one short transaction and sit in the ``catalog_writer`` pool.
"""


import time

import dagster as dg

from rag_pipeline import analysis, persist, planner
from rag_pipeline.catalog.catalog import open_settings_catalog
from rag_pipeline.defs.partitions import shard_partitions
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.discovery import scan

OWNERS = ["team:search-platform"]


def _md_table(rows: dict) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


@dg.multi_asset(
    name="discover",
    specs=[
        dg.AssetSpec("assets", description="Content identities: one row per distinct sha256 of "
                     "file bytes (DuckDB catalog).", kinds={"duckdb"}, owners=OWNERS,
                     group_name="catalog"),
        dg.AssetSpec("asset_versions", deps=["assets"], description="Observed file states "
                     "(uri, size, mtime_ns, content hash); moved files are new versions of the "
                     "same asset, vanished ones are tombstoned. Also writes each shard's plan.",
                     kinds={"duckdb"}, owners=OWNERS, group_name="catalog"),
    ],
    pool="catalog_writer",
)
def discover(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    settings = pipeline.settings()
    t0 = time.perf_counter()
    with open_settings_catalog(settings) as cat:
        report = scan(settings, cat)
        plan = planner.plan(settings, cat)
        counts = cat.counts(settings.tenant_id)
        lock_wait = cat.lock_wait_s
    seconds = round(time.perf_counter() - t0, 3)
    meta = report.as_metadata()
    yield dg.MaterializeResult(asset_key="assets", metadata={
        "dagster/row_count": counts["assets"], "new_assets": report.new_assets,
        "seconds": seconds})
    yield dg.MaterializeResult(asset_key="asset_versions", metadata={
        "dagster/row_count": counts["asset_versions"],
        "current_versions": counts["current_versions"], **{k: v for k, v in meta.items()
                                                           if k != "touched_shards"},
        "touched_shards": ", ".join(f"{s:02d}" for s in meta["touched_shards"]) or "none",
        "planned_tasks": plan.total, "already_done": plan.already_done,
        "lock_wait_seconds": round(lock_wait, 3), "seconds": seconds,
        "summary": dg.MetadataValue.md(
            "### Discovery\n" + _md_table(meta | {"planned tasks": plan.total})
            + ("\n\n**Dead letters this scan:**\n" + "\n".join(
                f"- `{u}`: {c}" for u, c in report.failures[:50]) if report.failures else "")),
    })


@dg.asset(
    name="analysis_runs",
    deps=["asset_versions"],
    partitions_def=shard_partitions,
    kinds={"python", "pytorch"},
    owners=OWNERS,
    group_name="analysis",
    description="Runs the shard's planned analyzers (document text + chunks, image metadata, "
                "MV text embeddings with the configured model) and stages their results "
                "(append-only Parquet, one file per analysis run). Never opens the catalog.",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
)
def analysis_runs(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    settings = pipeline.settings()
    results = [analysis.run_shard(settings, key, dagster_run_id=context.run_id)
               for key in context.partition_keys]
    total = {k: sum(getattr(r, k) for r in results)
             for k in ("n_tasks", "n_ok", "n_failed", "n_evidence_text", "n_vectors")}
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.errors_by_class.items():
            errors[k] = errors.get(k, 0) + v
    seconds = {k: round(sum(r.seconds.get(k, 0.0) for r in results), 3)
               for k in ("text_analyzers", "mv_embed", "stage", "total")}
    runs = [run for r in results for run in r.runs]
    return dg.MaterializeResult(metadata={
        **total, "staged_runs": len(runs),
        **{f"seconds_{k}": v for k, v in seconds.items()},
        "errors_by_class": errors or {"none": 0},
        "summary": dg.MetadataValue.md(
            "### Analysis runs\n| run | analyzer | model | ok | failed |\n|---|---|---|---|---|\n"
            + "\n".join(f"| `{r.run_id}` | {r.analyzer} | {r.model.model_id}@{r.model.revision}"
                        f" | {r.n_ok} | {r.n_failed} |" for r in runs)
            if runs else "Nothing planned for this shard: everything is analysed already."),
    })


@dg.asset(
    name="evidence",
    deps=["analysis_runs"],
    partitions_def=shard_partitions,
    kinds={"duckdb", "lancedb"},
    owners=OWNERS,
    group_name="analysis",
    pool="catalog_writer",
    description="Persists the shard's staged results: verifies every envelope's checksum, "
                "skips dedupe keys already persisted, writes evidence_text (DuckDB), "
                "evidence_vectors (LanceDB), results and analysis_runs in batched transactions.",
    check_specs=[dg.AssetCheckSpec("envelopes_verified", asset="evidence",
                                   description="No staged envelope failed its contract.")],
)
def evidence(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    settings = pipeline.settings()
    reports = []
    with open_settings_catalog(settings) as cat:
        for key in context.partition_keys:
            reports.append(persist.persist_shard(settings, cat, key))
        counts = cat.counts(settings.tenant_id)
        lock_wait = cat.lock_wait_s
    agg = {k: sum(getattr(r, k) for r in reports) for k in (
        "batches", "results", "evidence_text", "vectors", "duplicates_skipped", "rejected",
        "dead_letters")}
    yield dg.MaterializeResult(metadata={
        **agg, "catalog_evidence_text_rows": counts["evidence_text"],
        "catalog_dead_letters": counts["dead_letters"],
        "lock_wait_seconds": round(lock_wait, 3),
        "seconds": round(sum(r.seconds for r in reports), 3),
        "summary": dg.MetadataValue.md("### Persisted\n" + _md_table(agg)),
    })
    yield dg.AssetCheckResult(check_name="envelopes_verified", passed=agg["rejected"] == 0,
                              metadata={"rejected": agg["rejected"]})
