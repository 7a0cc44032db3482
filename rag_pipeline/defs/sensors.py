"""Sensors: register profiles as partitions; react to new, changed and deleted files.

The file chain, each step started by the previous one's success:
  source_files_sensor  -> discover_job (tags: touched shards)
  discover_done_sensor -> cpu_job / gpu_job for the partitions of touched shards that have work
  analysis_done_sensor -> publish_job once every run of the chain has finished
"""

import dagster as dg

from rag_pipeline.analysis.profiles import load_profiles
from rag_pipeline.defs.jobs import cpu_job, discover_job, gpu_job, publish_job
from rag_pipeline.defs.partitions import profile_partition_requests
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.discovery.scanner import detect_changes
from rag_pipeline.settings import shard_key
from rag_pipeline.storage import plans

TRIGGER = "rag/trigger"
TOUCHED = "rag/touched_shards"
CHAIN = "rag/chain"


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Registers every profile of models.yaml as a dynamic partition.")
def profiles_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineSettings):
    requests = profile_partition_requests(context.instance, pipeline.settings())
    if not requests:
        return dg.SkipReason("every profile in the models file is registered")
    return dg.SensorResult(dynamic_partitions_requests=requests)


@dg.sensor(job=discover_job, minimum_interval_seconds=60,
           description="Notices new, changed and deleted files in the sources (stat walk, "
                       "hashing only what changed) and starts discovery for the shards they "
                       "touch.")
def source_files_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineSettings):
    changes = detect_changes(pipeline.settings())
    if not changes.any:
        return dg.SkipReason("no new, changed or deleted files")
    shards = ",".join(shard_key(s) for s in sorted(changes.touched_shards))
    context.log.info(f"{len(changes.new)} new, {len(changes.changed)} changed, "
                     f"{len(changes.deleted)} deleted; shards {shards}")
    return dg.RunRequest(run_key=changes.digest,
                         tags={TRIGGER: "source_files_sensor", TOUCHED: shards})


def requests_for_touched(settings, touched: set[str], chain: str) -> list[dg.RunRequest]:
    """One run per profile x shard partition that has work, among the touched shards."""
    profiles = load_profiles(settings)
    requests = []
    for prof in profiles.by_name.values():
        job = cpu_job if prof.pool == "cpu" else gpu_job
        for shard in sorted(touched):
            if plans.read_plan(settings, prof.name, shard):
                pk = plans.partition_key(prof.name, shard)
                requests.append(dg.RunRequest(run_key=f"{chain}:{pk}", job_name=job.name,
                                              partition_key=pk, tags={CHAIN: chain}))
    return requests


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[discover_job],
                      request_jobs=[cpu_job, gpu_job, publish_job],
                      description="After a sensor-started discovery: runs for the touched "
                                  "shards' partitions that have work.")
def discover_done_sensor(context: dg.RunStatusSensorContext, pipeline: PipelineSettings):
    run = context.dagster_run
    if run.tags.get(TRIGGER) != "source_files_sensor":
        return dg.SkipReason("discovery not started by the source sensor")
    touched = {s for s in run.tags.get(TOUCHED, "").split(",") if s}
    requests = requests_for_touched(pipeline.settings(), touched, run.run_id)
    if not requests:  # only deletions (or nothing to analyse): publish straight away
        return dg.RunRequest(run_key=f"{run.run_id}:publish", job_name=publish_job.name,
                             tags={CHAIN: run.run_id})
    return requests


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[cpu_job, gpu_job],
                      request_job=publish_job,
                      description="Publishes a new snapshot when every run of a chain is done.")
def analysis_done_sensor(context: dg.RunStatusSensorContext):
    chain = context.dagster_run.tags.get(CHAIN)
    if not chain:
        return dg.SkipReason("run not part of a sensor chain")
    pending = context.instance.get_run_records(dg.RunsFilter(
        tags={CHAIN: chain}, statuses=[dg.DagsterRunStatus.QUEUED,
                                       dg.DagsterRunStatus.NOT_STARTED,
                                       dg.DagsterRunStatus.STARTING,
                                       dg.DagsterRunStatus.STARTED]))
    pending = [r for r in pending if r.dagster_run.run_id != context.dagster_run.run_id]
    if pending:
        return dg.SkipReason(f"{len(pending)} runs of chain {chain[:8]} still running")
    return dg.RunRequest(run_key=f"{chain}:publish", tags={CHAIN: chain})
