"""The evals group's job and schedule: ``nightly_eval`` on a cron (``$RAG_NIGHTLY_CRON``,
default ``0 2 * * *``, UTC; read when this module is imported), stopped until turned on."""

import dagster as dg

from rag_pipeline.settings import Settings

nightly_eval_job = dg.define_asset_job(
    "nightly_eval_job",
    selection=["nightly_eval"],
    description="Evaluate the promoted snapshot on the full gold set.",
)

nightly_eval_schedule = dg.ScheduleDefinition(
    name="nightly_eval_schedule",
    job=nightly_eval_job,
    cron_schedule=Settings().nightly_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly eval of the promoted snapshot (cron from RAG_NIGHTLY_CRON).",
)
