"""The file sensors: new, changed and deleted files start discovery for the shards they touch,
and a finished discovery starts those shards' partitions that have work.

  source_files_sensor  -> discover_job (tags: touched shards)
  discover_done_sensor -> cpu_job / gpu_job for the partitions of touched shards that have work
  (then ``analysis_done_sensor``, in ``analysis/``, starts publish_job when the chain is done)
"""

import dagster as dg

from rag_pipeline.analysis.profiles import load_profiles
from rag_pipeline.defs.analysis import jobs as analysis_jobs
from rag_pipeline.defs.catalog import jobs as catalog_jobs
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.defs.run_tags import CHAIN, TOUCHED, TRIGGER
from rag_pipeline.defs.search import jobs as search_jobs
from rag_pipeline.discovery.scanner import detect_changes
from rag_pipeline.settings import shard_key
from rag_pipeline.storage import plans


@dg.sensor(
    job=catalog_jobs.discover_job,
    minimum_interval_seconds=60,
    description="Notices new, changed and deleted files in the sources (stat walk, "
    "hashing only what changed) and starts discovery for the shards they "
    "touch.",
)
def source_files_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineSettings):
    changes = detect_changes(pipeline.settings())
    if not changes.any:
        return dg.SkipReason("no new, changed or deleted files")
    shards = ",".join(shard_key(s) for s in sorted(changes.touched_shards))
    context.log.info(
        f"{len(changes.new)} new, {len(changes.changed)} changed, "
        f"{len(changes.deleted)} deleted; shards {shards}"
    )
    return dg.RunRequest(
        run_key=changes.digest, tags={TRIGGER: "source_files_sensor", TOUCHED: shards}
    )


# Discoveries started by these carry TOUCHED and start a chain; others (the CLI, the UI) do not.
CHAIN_TRIGGERS = ("source_files_sensor", "ingest_sensor")


def requests_for_touched(settings, touched: set[str], chain: str) -> list[dg.RunRequest]:
    """One run per profile x shard partition that has work, among the touched shards."""
    profiles = load_profiles(settings)
    requests = []
    for prof in profiles.by_name.values():
        job = analysis_jobs.cpu_job if prof.pool == "cpu" else analysis_jobs.gpu_job
        for shard in sorted(touched):
            if plans.read_plan(settings, prof.name, shard):
                pk = plans.partition_key(prof.name, shard)
                requests.append(
                    dg.RunRequest(
                        run_key=f"{chain}:{pk}",
                        job_name=job.name,
                        partition_key=pk,
                        tags={CHAIN: chain},
                    )
                )
    return requests


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[catalog_jobs.discover_job],
    request_jobs=[analysis_jobs.cpu_job, analysis_jobs.gpu_job, search_jobs.publish_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a sensor-started discovery: runs for the touched "
    "shards' partitions that have work.",
)
def discover_done_sensor(context: dg.RunStatusSensorContext, pipeline: PipelineSettings):
    run = context.dagster_run
    if run.tags.get(TRIGGER) not in CHAIN_TRIGGERS:
        return dg.SkipReason("discovery not started by the source or ingest sensor")
    touched = {s for s in run.tags.get(TOUCHED, "").split(",") if s}
    requests = requests_for_touched(pipeline.settings(), touched, run.run_id)
    if not requests:  # only deletions (or nothing to analyse): publish straight away
        return dg.RunRequest(
            run_key=f"{run.run_id}:publish",
            job_name=search_jobs.publish_job.name,
            tags={CHAIN: run.run_id},
        )
    return requests
