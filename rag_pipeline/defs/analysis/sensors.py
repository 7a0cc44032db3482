"""The analysis group's sensors: profiles of the models file become partitions, and a finished
chain of partition runs (started by ``discover_done_sensor``) publishes a new snapshot."""

import dagster as dg

from rag_pipeline.defs.analysis import jobs as analysis_jobs
from rag_pipeline.defs.partitions import profile_partition_requests
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.defs.run_tags import CHAIN
from rag_pipeline.defs.search import jobs as search_jobs


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers every profile of models.yaml as a dynamic partition.",
)
def profiles_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineSettings):
    requests = profile_partition_requests(context.instance, pipeline.settings())
    if not requests:
        return dg.SkipReason("every profile in the models file is registered")
    return dg.SensorResult(dynamic_partitions_requests=requests)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[analysis_jobs.cpu_job, analysis_jobs.gpu_job],
    request_job=search_jobs.publish_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publishes a new snapshot when every run of a chain is done.",
)
def analysis_done_sensor(context: dg.RunStatusSensorContext):
    chain = context.dagster_run.tags.get(CHAIN)
    if not chain:
        return dg.SkipReason("run not part of a sensor chain")
    pending = context.instance.get_run_records(
        dg.RunsFilter(
            tags={CHAIN: chain},
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        )
    )
    pending = [r for r in pending if r.dagster_run.run_id != context.dagster_run.run_id]
    if pending:
        return dg.SkipReason(f"{len(pending)} runs of chain {chain[:8]} still running")
    return dg.RunRequest(run_key=f"{chain}:publish", tags={CHAIN: chain})
