"""The analysis group: plans + file bytes -> ``analysis_runs`` / ``inference_runs`` (one
profile x shard partition each) -> ``evidence``.

Analysis partitions compute without the catalog, then persist their staged results under the
catalog writer lock in one short transaction. ``inference_runs`` (model inference) sits in the
``gpu`` pool and carries placement tags; ``analysis_runs`` (CPU analyzers) runs apart from it.
"""

import dagster as dg

from rag_pipeline.analysis import worker
from rag_pipeline.analysis.failures import RETRY_RULES, batch_size_for_retry, classify
from rag_pipeline.defs.metadata import md_doc, md_metrics, md_table
from rag_pipeline.defs.owners import OWNERS
from rag_pipeline.defs.partitions import cpu_partitions, gpu_partitions
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.planning.task_states import task_states
from rag_pipeline.storage import persister
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


def _run_partition(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    """Analyse one profile x shard partition, persist it, report it; retry by failure class."""
    settings = pipeline.settings()
    keys = context.partition_key.keys_by_dimension
    profile, shard = keys["profile"], keys["shard"]
    if context.retry_number:
        settings = settings.model_copy(
            update={
                "mv_batch_size": batch_size_for_retry(settings.mv_batch_size, context.retry_number)
            }
        )
    try:
        result = worker.run_partition(settings, profile, shard, dagster_run_id=context.run.run_id)
        with open_settings_catalog(settings) as cat:
            persisted = persister.persist_shard(settings, cat, shard)
            states = task_states(settings, cat, shards=[shard], profiles=[profile])
    except Exception as exc:
        failure = classify(exc)
        rule = RETRY_RULES[failure]
        status = "model_mismatch" if failure == "model_mismatch" else "failed"
        if context.retry_number < rule.max_retries:
            context.log.warning(
                f"{failure}: {exc}; retry {context.retry_number + 1}/"
                f"{rule.max_retries} in {rule.delay(context.retry_number):.0f}s"
            )
            raise dg.RetryRequested(
                max_retries=rule.max_retries, seconds_to_wait=rule.delay(context.retry_number)
            ) from exc
        raise dg.Failure(
            description=f"{failure}: {exc}",
            metadata={
                "status": status,
                "failure_class": failure,
                "partition": context.partition_key,
            },
            allow_retries=False,
        ) from exc
    state = states[0] if states else {}
    return dg.MaterializeResult(
        metadata={
            "profile": profile,
            "shard": shard,
            "n_tasks": result.n_tasks,
            "n_ok": result.n_ok,
            "n_failed": result.n_failed,
            "evidence_text": result.n_evidence_text,
            "vectors": result.n_vectors,
            "truncated_documents": result.n_truncated,
            **(result.limits.as_metadata() if result.limits else {}),
            "truncated_chunks": result.truncated_chunks,
            "persisted_results": persisted.results,
            "duplicates_skipped": persisted.duplicates_skipped,
            "rejected_envelopes": persisted.rejected,
            **{f"seconds_{k}": round(v, 3) for k, v in result.seconds.items()},
            "seconds_persist": round(persisted.seconds, 3),
            "errors_by_class": result.errors_by_class or {"none": 0},
            "task_states": {k: v for k, v in state.items() if isinstance(v, int)},
            "summary": md_doc(
                "Analysis runs",
                md_table(
                    [
                        {
                            "run": f"`{r.run_id}`",
                            "analyzer": r.analyzer,
                            "model": f"{r.model.model_id}@{r.model.revision}",
                            "ok": r.n_ok,
                            "failed": r.n_failed,
                        }
                        for r in result.runs
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
    kinds={"python"},
    owners=OWNERS,
    group_name="analysis",
    description="CPU analyzers of one profile over one shard: document text + chunks, image "
    "metadata (EXIF/XMP/IPTC, sidecars) and stored thumbnails (text profiles), OCR "
    "with word confidences (ocr profiles). Stages results, then persists them to "
    "evidence_text under the catalog writer lock.",
)
def analysis_runs(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    return _run_partition(context, pipeline)


@dg.asset(
    name="inference_runs",
    deps=["asset_versions"],
    partitions_def=gpu_partitions,
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
    return _run_partition(context, pipeline)


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
    totals: dict[str, int] = {}
    for st in states:
        for k, v in st.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
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
