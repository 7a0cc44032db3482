"""Dagster entry point: load each domain's definitions and bind the settings resource."""

import dagster as dg

from rag_pipeline.defs import evals as eval_defs
from rag_pipeline.defs import jobs, sensors
from rag_pipeline.defs.ingest import assets as ingest_assets
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.defs.search import assets as search_assets

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([ingest_assets, search_assets]), *eval_defs.assets],
    asset_checks=[*dg.load_asset_checks_from_modules([ingest_assets, search_assets]),
                  *eval_defs.asset_checks],
    jobs=[jobs.discover_job, jobs.cpu_job, jobs.gpu_job, jobs.publish_job, *eval_defs.jobs],
    schedules=eval_defs.schedules,
    sensors=[sensors.profiles_sensor, sensors.source_files_sensor,
             sensors.discover_done_sensor, sensors.analysis_done_sensor],
    resources={"pipeline": PipelineSettings()},
)
