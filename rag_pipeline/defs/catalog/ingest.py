"""The ingest sensor: uploads and deletions accepted by the HTTP API become Dagster runs.

``POST /v1/documents`` and ``DELETE /v1/documents/{asset_id}`` queue a row in the serving
database's ``ingest_jobs`` (``serving.ingest`` says why an outbox, not a GraphQL call). Each
tick, for every queued job, this sensor requests a ``discover_job`` run with the job id as run
key (launched once, however often the sensor ticks), tagged like the file sensor's runs (the
shards the job touches), so ``discover_done_sensor`` -> analysis partitions ->
``analysis_done_sensor`` -> ``publish_job`` carry it to a promoted snapshot. It then follows
each job's runs and writes back to the job row: the discovery run id (``running``), and once the
chain's publish run has ended, ``succeeded`` with the dead letters of the job's files, or
``failed`` with the failed run.
"""

import dagster as dg

from rag_pipeline.defs.catalog import jobs as catalog_jobs
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.defs.run_tags import CHAIN, INGEST_JOB, TOUCHED, TRIGGER
from rag_pipeline.storage.catalog.catalog import open_settings_catalog
from serving.ingest import IngestJob, IngestStore, open_store

INGEST_TRIGGER = "ingest_sensor"
PROMOTED = dg.AssetKey("promoted_snapshot")
_FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def _dead_letters(store: IngestStore, job: IngestJob) -> list[dict]:
    """Unresolved dead letters of the job's files (by their path on disk)."""
    if job.kind != "upload":
        return []
    by_uri = {store.file_uri(job.tenant, f["path"]): f for f in job.files}
    with open_settings_catalog(store.settings) as cat:
        letters = cat.dead_letters(tenant_id=job.tenant)
    return [
        {
            "asset_id": by_uri[d["uri"]]["asset_id"],
            "name": by_uri[d["uri"]]["name"],
            "stage": d.get("stage") or "",
            "error_class": d.get("error_class") or "",
            "message": str(d.get("message") or "")[:500],
        }
        for d in letters
        if d["uri"] in by_uri
    ]


def follow(instance: dg.DagsterInstance, store: IngestStore, job: IngestJob) -> str:
    """Bring one running job's row up to date with its runs; returns its state."""
    assert job.run_id is not None
    discover = instance.get_run_by_id(job.run_id)
    if discover is None:
        store.update(job.job_id, state="failed", error="its discovery run was deleted")
        return "failed"
    chain = [
        r.dagster_run for r in instance.get_run_records(dg.RunsFilter(tags={CHAIN: job.run_id}))
    ]
    failed = [r for r in [discover, *chain] if r.status in _FAILED]
    if failed:
        bad = failed[0]
        why = (
            " (a blocking check, such as the smoke-eval gate, may have refused the snapshot)"
            if bad.job_name == "publish_job"
            else ""
        )
        store.update(
            job.job_id, state="failed", error=f"run {bad.run_id} ({bad.job_name}) failed{why}"
        )
        return "failed"
    published = [
        r for r in chain if r.job_name == "publish_job" and r.status == dg.DagsterRunStatus.SUCCESS
    ]
    if not published:
        return "running"
    records = instance.get_records_for_run(
        published[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    promoted = any(
        (m := r.event_log_entry.asset_materialization) is not None and m.asset_key == PROMOTED
        for r in records
    )
    store.update(
        job.job_id, state="succeeded", dead_letters=_dead_letters(store, job), promoted=promoted
    )
    return "succeeded"


@dg.sensor(
    job=catalog_jobs.discover_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns uploads and deletions queued by the HTTP API (ingest_jobs) into "
    "discovery runs (run key: the job id) and records their state.",
)
def ingest_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineSettings):
    store = open_store(pipeline.settings())
    if store is None:
        return dg.SkipReason("no serving database: nothing can have been uploaded")
    try:
        requests = []
        for job in store.active():
            if job.state == "queued":
                runs = context.instance.get_run_records(
                    dg.RunsFilter(tags={INGEST_JOB: job.job_id}), limit=1
                )
                if not runs:
                    requests.append(
                        dg.RunRequest(
                            run_key=job.job_id,
                            tags={
                                TRIGGER: INGEST_TRIGGER,
                                TOUCHED: ",".join(job.shards),
                                INGEST_JOB: job.job_id,
                            },
                        )
                    )
                    continue
                job.run_id = runs[0].dagster_run.run_id
                store.update(job.job_id, state="running", run_id=job.run_id)
            state = follow(context.instance, store, job)
            if state != "running":
                context.log.info(f"ingest job {job.job_id}: {state}")
        if not requests:
            return dg.SkipReason("no queued ingest job")
        return requests
    finally:
        store.engine.dispose()
