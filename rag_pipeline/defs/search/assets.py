"""The search snapshot: a new read-only LanceDB table per version, published atomically."""


import dagster as dg

from rag_pipeline.defs.ingest.assets import OWNERS, _md_table
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.snapshot.build import build_snapshot
from rag_pipeline.storage.catalog.catalog import open_settings_catalog


@dg.asset(
    name="search_snapshot",
    deps=["evidence"],
    kinds={"lancedb"},
    owners=OWNERS,
    group_name="search",
    pool="catalog_writer",
    description="Materialized, versioned search snapshot: one row per document chunk or image "
                "with its current-best evidence per axis, BM25 indexes per text field, MV "
                "vectors, filter columns and provenance. Publishing swaps the CURRENT pointer; "
                "an unchanged catalog publishes nothing new.",
    check_specs=[
        dg.AssetCheckSpec("covers_current_assets", asset="search_snapshot",
                          description="Every current asset with persisted text evidence has "
                                      "at least one searchable unit."),
        dg.AssetCheckSpec("mv_axis_complete", asset="search_snapshot",
                          description="Every unit with text to embed carries an MV vector."),
    ],
)
def search_snapshot(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    settings = pipeline.settings()
    with open_settings_catalog(settings) as cat:
        result = build_snapshot(settings, cat, dagster_run_id=context.run.run_id)
        expected = int(cat.scalar(
            "SELECT count(DISTINCT v.asset_id) FROM asset_versions v JOIN results r "
            "ON r.asset_id = v.asset_id AND r.status = 'ok' AND r.task_type IN "
            "('doc_text', 'image_meta') WHERE v.tenant_id = ? AND v.is_current",
            [settings.tenant_id]))
    m = result.manifest
    stats = m.stats
    yield dg.MaterializeResult(metadata={
        "snapshot_id": m.snapshot_id, "table": m.table_name, "published": result.published,
        "dagster/row_count": m.n_units, "documents": m.n_documents, "images": m.n_images,
        "units_with_mv": stats.get("n_units_with_mv", 0),
        "mv_model": stats.get("mv_model_key", ""),
        "seconds": round(result.seconds, 3),
        "summary": dg.MetadataValue.md(
            f"### Snapshot `{m.snapshot_id}`\n"
            + ("Published as CURRENT.\n\n" if result.published else
               "Catalog unchanged: the current snapshot stays.\n\n")
            + _md_table({"units": m.n_units, "documents": m.n_documents, "images": m.n_images,
                         "units with MV vector": stats.get("n_units_with_mv", 0),
                         "axes": ", ".join(k for k, a in m.axes.items() if a.available)})),
    })
    covered = stats.get("n_assets", 0)
    yield dg.AssetCheckResult(check_name="covers_current_assets", passed=covered == expected,
                              metadata={"assets_in_snapshot": covered, "expected": expected})
    yield dg.AssetCheckResult(
        check_name="mv_axis_complete", passed=stats.get("n_units_missing_mv", 0) == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"units": m.n_units, "with_mv": stats.get("n_units_with_mv", 0),
                  "missing_mv": stats.get("n_units_missing_mv", 0)})
