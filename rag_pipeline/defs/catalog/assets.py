"""The catalog group: sources -> ``assets`` + ``asset_versions`` (one ``discover`` step), which
also writes the plan of every profile x shard partition."""

import time

import dagster as dg

from rag_pipeline.defs.metadata import md_doc, md_metrics, md_table
from rag_pipeline.defs.owners import OWNERS
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.discovery.scanner import scan
from rag_pipeline.planning import planner
from rag_pipeline.storage.catalog.catalog import open_settings_catalog

DEAD_LETTERS_SHOWN = 50


@dg.multi_asset(
    name="discover",
    specs=[
        dg.AssetSpec(
            "assets",
            description="Content identities: one row per distinct sha256 of "
            "file bytes (DuckDB catalog).",
            kinds={"duckdb"},
            owners=OWNERS,
            group_name="catalog",
        ),
        dg.AssetSpec(
            "asset_versions",
            deps=["assets"],
            description="Observed file states "
            "(uri, size, mtime_ns, content hash); moved files are new versions of the "
            "same asset, vanished ones are tombstoned. Also writes the plan of every "
            "profile x shard partition.",
            kinds={"duckdb"},
            owners=OWNERS,
            group_name="catalog",
        ),
    ],
    pool="catalog_writer",
)
def discover(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    settings = pipeline.settings()
    t0 = time.perf_counter()
    with open_settings_catalog(settings) as cat:
        report = scan(settings, cat)
        plan = planner.plan(settings, cat)
        counts = cat.counts()  # every tenant
        lock_wait = cat.lock_wait_s
    seconds = round(time.perf_counter() - t0, 3)
    meta = report.as_metadata()
    work = plan.partitions_with_work()
    yield dg.MaterializeResult(
        asset_key="assets",
        metadata={
            "dagster/row_count": counts["assets"],
            "new_assets": report.new_assets,
            "seconds": seconds,
        },
    )
    yield dg.MaterializeResult(
        asset_key="asset_versions",
        metadata={
            "dagster/row_count": counts["asset_versions"],
            "current_versions": counts["current_versions"],
            **{k: v for k, v in meta.items() if k != "touched_shards"},
            "touched_shards": ", ".join(f"{s:02d}" for s in meta["touched_shards"]) or "none",
            "planned_tasks": plan.total,
            "already_done": plan.already_done,
            "partitions_with_work": ", ".join(work) or "none",
            "lock_wait_seconds": round(lock_wait, 3),
            "seconds": seconds,
            "summary": md_doc(
                "Discovery",
                md_metrics(meta | {"planned tasks": plan.total, "partitions with work": len(work)}),
                md_table(
                    [
                        {"file": f"`{uri}`", "error class": cls}
                        for uri, cls in report.failures[:DEAD_LETTERS_SHOWN]
                    ],
                    title="Dead letters this scan",
                )
                if report.failures
                else None,
            ),
        },
    )
