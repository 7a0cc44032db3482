"""The search group: ``search_snapshot`` (a tagged version of the snapshot table, written
incrementally and published atomically as CURRENT) and ``promoted_snapshot`` (the PROMOTED
pointer serving follows, moved only when the blocking ``smoke_eval_gates`` check in
``checks.py`` passes)."""

import json

import dagster as dg
from pydantic import Field

from rag_pipeline.defs import evaluation as ev
from rag_pipeline.defs.metadata import md_doc, md_metrics
from rag_pipeline.defs.owners import OWNERS
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.snapshot.build import build_snapshot
from rag_pipeline.snapshot.schema import write_atomic
from rag_pipeline.storage.catalog.catalog import open_settings_catalog


class SnapshotConfig(dg.Config):
    full: bool = Field(
        False,
        description="rewrite every unit of the snapshot table (a full rebuild) instead of "
        "applying the change since the last snapshot",
    )


@dg.asset(
    name="search_snapshot",
    deps=["evidence"],
    kinds={"lancedb"},
    owners=OWNERS,
    group_name="search",
    pool="catalog_writer",
    description="Materialized, versioned search snapshot: one row per document chunk or image "
    "with its current-best evidence per axis, BM25 indexes per text field, MV "
    "vectors, filter columns and provenance. Publishing upserts the changed units into "
    "the snapshot table (config full: rewrite all), tags the version and swaps the "
    "CURRENT pointer; an unchanged catalog publishes nothing new.",
    check_specs=[
        dg.AssetCheckSpec(
            "covers_current_assets",
            asset="search_snapshot",
            description="Every current asset with persisted text evidence has "
            "at least one searchable unit.",
        ),
        dg.AssetCheckSpec(
            "mv_axis_complete",
            asset="search_snapshot",
            description="Every unit with text to embed carries an MV vector.",
        ),
    ],
)
def search_snapshot(
    context: dg.AssetExecutionContext, config: SnapshotConfig, pipeline: PipelineSettings
):
    settings = pipeline.settings()
    with open_settings_catalog(settings) as cat:
        result = build_snapshot(settings, cat, dagster_run_id=context.run.run_id, full=config.full)
        expected = cat.current_assets_with_text()  # every tenant
    m = result.manifest
    stats = m.stats
    yield dg.MaterializeResult(
        metadata={
            "snapshot_id": m.snapshot_id,
            "table": m.table_name,
            "table_version": stats.get("table_version", -1),
            "published": result.published,
            # full (asked, first table, or schema change), incremental, or "columns: vector_mv"
            # (a policy switch that rewrote only a vector column), and what it wrote
            "publish_mode": stats.get("publish_mode", "") if result.published else "unchanged",
            "rows_upserted": stats.get("rows_upserted", 0) if result.published else 0,
            "rows_deleted": stats.get("rows_deleted", 0) if result.published else 0,
            "rows_column_rewritten": (
                stats.get("rows_column_rewritten", 0) if result.published else 0
            ),
            "dagster/row_count": m.n_units,
            "documents": m.n_documents,
            "images": m.n_images,
            "units_with_mv": stats.get("n_units_with_mv", 0),
            "mv_model": stats.get("mv_model_key", ""),
            "seconds": round(result.seconds, 3),
            "summary": md_doc(
                f"Snapshot `{m.snapshot_id}`",
                "Published as CURRENT."
                if result.published
                else "Catalog unchanged: the current snapshot stays.",
                md_metrics(
                    {
                        "units": m.n_units,
                        "documents": m.n_documents,
                        "images": m.n_images,
                        "units with MV vector": stats.get("n_units_with_mv", 0),
                        "axes": [k for k, a in m.axes.items() if a.available],
                    }
                ),
            ),
        }
    )
    covered = stats.get("n_assets", 0)
    yield dg.AssetCheckResult(
        check_name="covers_current_assets",
        passed=covered == expected,
        metadata={"assets_in_snapshot": covered, "expected": expected},
    )
    yield dg.AssetCheckResult(
        check_name="mv_axis_complete",
        passed=stats.get("n_units_missing_mv", 0) == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "units": m.n_units,
            "with_mv": stats.get("n_units_with_mv", 0),
            "missing_mv": stats.get("n_units_missing_mv", 0),
        },
    )


@dg.asset(
    name="promoted_snapshot",
    deps=["search_snapshot"],
    kinds={"lancedb"},
    owners=OWNERS,
    group_name="search",
    pool="catalog_writer",
    description="The snapshot serving follows: snapshots/PROMOTED, swapped atomically to the "
    "CURRENT snapshot once the blocking smoke_eval_gates check passed (Dagster skips "
    "this asset when it fails).",
)
def promoted_snapshot(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    settings = pipeline.settings()
    current = ev.pointer_id(settings, "CURRENT")
    if current is None:
        raise dg.Failure("no CURRENT snapshot to promote")
    previous = ev.pointer_id(settings, ev.PROMOTED)
    write_atomic(settings.snapshots_dir / ev.PROMOTED, current)
    history = ev.evals_dir(settings) / "promotions.jsonl"
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("a", encoding="utf-8") as f:
        f.write(
            json.dumps(
                {"promoted": current, "previous": previous, "dagster_run_id": context.run.run_id}
            )
            + "\n"
        )
    meta: dict = {
        "snapshot_id": current,
        "previous": previous or "",
        "changed": previous != current,
    }
    smoke = ev.evals_dir(settings) / f"{current}-smoke.json"
    if smoke.is_file():
        res = json.loads(smoke.read_text())
        meta |= ev.float_metadata(res["metrics"])
        meta["report"] = ev.eval_report([res], f"Promoted snapshot {current}")
    else:
        meta["report"] = md_doc(
            f"Promoted `{current}`", "No smoke eval results (no smoke set for this corpus)."
        )
    return dg.MaterializeResult(metadata=meta)
