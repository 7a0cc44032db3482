"""Dagster entry point: load each domain's definitions and bind the settings resource."""

import dagster as dg

from rag_pipeline.defs import jobs
from rag_pipeline.defs.ingest import assets as ingest_assets
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.defs.search import assets as search_assets

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest_assets, search_assets]),
    asset_checks=dg.load_asset_checks_from_modules([ingest_assets, search_assets]),
    jobs=[jobs.discover_job, jobs.shard_job, jobs.snapshot_job],
    resources={"pipeline": PipelineSettings()},
)
