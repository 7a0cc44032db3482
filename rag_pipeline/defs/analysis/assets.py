"""The analysis group: plans + file bytes -> ``analysis_runs`` / ``inference_runs`` (one
profile x shard partition each) -> ``evidence``.

Analysis partitions compute without the catalog, then persist their staged results under the
catalog writer lock in one short transaction. ``inference_runs`` (model inference) sits in the
``gpu`` pool and carries placement tags; ``analysis_runs`` (CPU analyzers) runs apart from it.
"""

from typing import Any

import dagster as dg

from rag_pipeline.analysis import worker
from rag_pipeline.analysis.failures import RETRY_RULES, batch_size_for_retry, classify
from rag_pipeline.defs.metadata import md_doc, md_metrics, md_table
from rag_pipeline.defs.owners import OWNERS
from rag_pipeline.defs.partitions import (
    ANALYSIS_BACKFILL_POLICY,
    cpu_partitions,
    gpu_partitions,
)
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.planning.task_states import task_states
from rag_pipeline.storage import persister, staging
from rag_pipeline.storage.catalog.catalog import open_settings_catalog

STATE_COLUMNS = ("queued", "reported", "persisted", "failed", "dead_letter")
NOT_DONE = ("queued", "reported", "failed", "dead_letter")  # a partition with any is not done

# Where a Kubernetes or Docker run launcher should place inference steps.
GPU_OP_TAGS = {
    "rag/accelerator": "gpu",
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"node_selector": {"accelerator": "nvidia-gpu"}},
    },
    "docker/container_kwargs": {"device_requests": [{"count": 1, "capabilities": [["gpu"]]}]},
}


def _retry_or_fail(context: dg.AssetExecutionContext, exc: Exception, partitions: str):
    """A RetryRequested for a retryable failure class within its budget, else a Failure."""
    failure = classify(exc)
    rule = RETRY_RULES[failure]
    status = "model_mismatch" if failure == "model_mismatch" else "failed"
    if context.retry_number < rule.max_retries:
        context.log.warning(
            f"{failure}: {exc}; retry {context.retry_number + 1}/"
            f"{rule.max_retries} in {rule.delay(context.retry_number):.0f}s"
        )
        return dg.RetryRequested(
            max_retries=rule.max_retries, seconds_to_wait=rule.delay(context.retry_number)
        )
    return dg.Failure(
        description=f"{failure}: {exc}",
        metadata={"status": status, "failure_class": failure, "partition": partitions},
        allow_retries=False,
    )


def _totals(dicts) -> dict[str, Any]:
    """Key-wise sums of the numbers in ``dicts`` (other values, e.g. names, are skipped)."""
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return out


def _run_partitions(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    """Analyse the run's partitions: one, or a range of one profile's shards when the launcher
    (or a backfill's policy) batches small partitions into one run, so that a change touching
    many shards pays the run's fixed cost once. The metadata sums the partitions'."""
    settings = pipeline.settings()
    if context.retry_number:
        settings = settings.model_copy(
            update={
                "mv_batch_size": batch_size_for_retry(settings.mv_batch_size, context.retry_number)
            }
        )
    keys = [pk.keys_by_dimension for pk in context.partition_keys]
    # The launcher's ranges span one profile's shards; a backfill's range could span several.
    profiles = sorted({k["profile"] for k in keys})
    profile = ",".join(profiles)
    shards = sorted({k["shard"] for k in keys})
    label = shards[0] if len(shards) == 1 else f"{shards[0]}..{shards[-1]}"
    try:
        results = [
            worker.run_partition(
                settings, k["profile"], k["shard"], dagster_run_id=context.run.run_id
            )
            for k in keys
        ]
        # One catalog session for the run: persist the shards that staged anything, and read
        # the run's partitions' task states once.
        with open_settings_catalog(settings) as cat:
            persisted = [
                persister.persist_shard(settings, cat, shard)
                for shard in shards
                if staging.list_batches(settings.staging_dir, shard)
            ]
            states = task_states(settings, cat, shards=shards, profiles=profiles)
    except Exception as exc:
        raise _retry_or_fail(context, exc, f"{profile}|{label}") from exc
    seconds = _totals(r.seconds for r in results)
    errors = _totals(r.errors_by_class for r in results)
    limits = results[0].limits
    return dg.MaterializeResult(
        metadata={
            "profile": profile,
            "shard": label,
            "partitions_in_run": len(results),
            "n_tasks": sum(r.n_tasks for r in results),
            "n_ok": sum(r.n_ok for r in results),
            "n_failed": sum(r.n_failed for r in results),
            "evidence_text": sum(r.n_evidence_text for r in results),
            "vectors": sum(r.n_vectors for r in results),
            "truncated_documents": sum(r.n_truncated for r in results),
            **(limits.as_metadata() if limits else {}),
            "truncated_chunks": sum(r.truncated_chunks for r in results),
            "persisted_results": sum(p.results for p in persisted),
            "duplicates_skipped": sum(p.duplicates_skipped for p in persisted),
            "rejected_envelopes": sum(p.rejected for p in persisted),
            **{f"seconds_{k}": round(v, 3) for k, v in seconds.items()},
            "seconds_persist": round(sum(p.seconds for p in persisted), 3),
            "errors_by_class": errors or {"none": 0},
            "task_states": _totals(states),
            "summary": md_doc(
                "Analysis runs",
                md_table(
                    [
                        {
                            "run": f"`{run.run_id}`",
                            "analyzer": run.analyzer,
                            "model": f"{run.model.model_id}@{run.model.revision}",
                            "ok": run.n_ok,
                            "failed": run.n_failed,
                        }
                        for r in results
                        for run in r.runs
                    ],
                    empty="Nothing planned: this partition is up to date.",
                ),
            ),
        }
    )


@dg.asset(
    name="analysis_runs",
    deps=["asset_versions"],
    partitions_def=cpu_partitions,
    backfill_policy=ANALYSIS_BACKFILL_POLICY,
    kinds={"python"},
    owners=OWNERS,
    group_name="analysis",
    description="CPU analyzers of one profile over one shard: document text + chunks, image "
    "metadata (EXIF/XMP/IPTC, sidecars) and stored thumbnails (text profiles), OCR "
    "with word confidences (ocr profiles). Stages results, then persists them to "
    "evidence_text under the catalog writer lock.",
)
def analysis_runs(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    return _run_partitions(context, pipeline)


@dg.asset(
    name="inference_runs",
    deps=["asset_versions"],
    partitions_def=gpu_partitions,
    backfill_policy=ANALYSIS_BACKFILL_POLICY,
    kinds={"pytorch", "lancedb"},
    owners=OWNERS,
    group_name="analysis",
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    description="Model inference of one profile over one shard, in the `gpu` pool: MV text "
    "embeddings, VV image embeddings (CLIP/SigLIP image tower), VLM captions and "
    "tags. Checks model parity first (a local model that differs from the "
    "profile's pinned revision/weights writes nothing), then stages and persists "
    "vectors to LanceDB and captions/tags to evidence_text.",
)
def inference_runs(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    return _run_partitions(context, pipeline)


@dg.asset(
    name="evidence",
    deps=["analysis_runs", "inference_runs"],
    kinds={"duckdb", "lancedb"},
    owners=OWNERS,
    group_name="analysis",
    pool="catalog_writer",
    description="The evidence store (evidence_text in DuckDB, evidence_vectors in LanceDB): "
    "persists anything an interrupted run left staged, verifies every envelope, and "
    "reports task states per partition.",
    check_specs=[
        dg.AssetCheckSpec(
            "envelopes_verified",
            asset="evidence",
            description="No staged envelope failed its contract.",
        )
    ],
)
def evidence(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    settings = pipeline.settings()
    with open_settings_catalog(settings) as cat:
        report = persister.persist_all(settings, cat)
        counts = cat.counts()  # every tenant
        rejected_total = cat.dead_letter_count(error_class="ContractError")
        states = task_states(settings, cat)
    totals = _totals(states)
    not_done = [s for s in states if any(s[c] for c in NOT_DONE)]
    yield dg.MaterializeResult(
        metadata={
            **report.as_metadata(),
            "dagster/row_count": counts["evidence_text"],
            "results": counts["results"],
            "dead_letters": counts["dead_letters"],
            "task_states": totals,
            "summary": md_doc(
                "Evidence",
                md_metrics(
                    {
                        "persisted now": report.results,
                        "evidence_text rows": counts["evidence_text"],
                        "results": counts["results"],
                        "dead letters": counts["dead_letters"],
                    }
                ),
                md_table(
                    not_done,
                    ["partition", *STATE_COLUMNS],
                    title="Partitions not done",
                    empty="All done.",
                ),
            ),
        }
    )
    yield dg.AssetCheckResult(
        check_name="envelopes_verified",
        passed=rejected_total == 0,
        metadata={"rejected_unresolved": rejected_total},
    )
