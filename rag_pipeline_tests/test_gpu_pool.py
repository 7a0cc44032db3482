"""The ``gpu`` pool bounds inference when partitions run as a backfill: the instance's
concurrency config (the packaged dagster.yaml) gives every pool one slot at run granularity, a
backfill's inference run (an asset run of ``inference_runs`` for one partition, as the asset
backfill daemon creates it) claims the ``gpu`` pool, and Dagster's run-queue counter dequeues
one of them at a time while text partitions (no gpu pool) are not held back by it.

The queue's pass reads the pools with a limit from storage before it adds a new pool there: on
the first pass that sees ``gpu`` every queued inference run went through at once, so the
launcher initializes the pools before it queues the backfill (``launcher.initialize_pools``)."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.op_concurrency_limits_counter import GlobalOpConcurrencyLimitsCounter

from rag_pipeline.settings import shard_key

pytestmark = pytest.mark.slow  # a Dagster instance and the pipeline's definitions


def _queued_run(instance, job, asset: str, partition: str, backfill: str):
    """A run of one asset partition, built the way a backfill's runs are (before the daemon
    submits them to the queue): the implicit asset job subset to the asset, its execution plan
    giving the run's pools."""
    return instance.create_run_for_job(
        job_def=job.get_subset(asset_selection={dg.AssetKey(asset)}),
        asset_selection=frozenset({dg.AssetKey(asset)}),
        tags={"dagster/partition": partition, "dagster/backfill": backfill},
    )


def test_backfill_inference_runs_take_turns_on_the_gpu_pool(pipeline_env):
    from rag_pipeline.definitions import defs
    from rag_pipeline.defs.partitions import sync_profiles
    from rag_pipeline.launcher import initialize_pools

    settings = pipeline_env
    with dg.DagsterInstance.get() as instance:
        cfg = instance.get_concurrency_config()
        assert cfg.pool_config.default_pool_limit == 1
        assert str(cfg.pool_config.pool_granularity.value) == "run"
        sync_profiles(instance, settings)
        gpu = instance.get_dynamic_partitions("gpu_profiles")
        cpu = instance.get_dynamic_partitions("cpu_profiles")
        assert gpu and cpu
        job = defs.resolve_implicit_global_asset_job_def()
        shards = [shard_key(i) for i in range(settings.shard_count)]
        inference = [
            _queued_run(instance, job, "inference_runs", f"{gpu[0]}|{s}", "b1") for s in shards
        ]
        text = [_queued_run(instance, job, "analysis_runs", f"{cpu[0]}|{s}", "b1") for s in shards]
        for run in inference:
            assert run.run_op_concurrency is not None
            assert set(run.run_op_concurrency.all_pools or ()) == {"gpu"}
        for run in text:
            assert "gpu" not in set(
                (run.run_op_concurrency and run.run_op_concurrency.all_pools) or ()
            )

        def dequeue(queued: list, in_progress: list) -> list:
            """One pass of the run queue's pool check over ``queued``, in order, as the
            queue daemon makes it (pools and limits read first, then the counter built)."""
            storage = instance.event_log_storage
            keys, limits = storage.get_concurrency_keys(), storage.get_pool_limits()
            counter = GlobalOpConcurrencyLimitsCounter(
                instance,
                queued,
                in_progress,
                concurrency_keys=keys,
                pool_limits=limits,
                pool_granularity=cfg.pool_config.pool_granularity,
            )
            out = []
            for run in queued:
                if not counter.is_blocked(run):
                    counter.update_counters_with_launched_item(run)
                    out.append(run)
            return out

        # What launch_backfill does before queueing; then the queue's first pass over the runs,
        # interleaved as a backfill submits them: every text run goes, one inference run.
        assert initialize_pools(defs, instance) == ["gpu"]
        queued = [r for pair in zip(inference, text, strict=True) for r in pair]
        first = dequeue(queued, [])
        assert [r.run_id for r in first if r in inference] == [inference[0].run_id]
        assert all(r in first for r in text)
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1

        # While that inference run is in progress, the others stay queued; once it ends, the
        # next one goes.
        instance.handle_run_event(
            inference[0].run_id,
            dg.DagsterEvent(
                event_type_value="PIPELINE_START", job_name=inference[0].job_name, message=""
            ),
        )
        records = instance.get_run_records(dg.RunsFilter(run_ids=[inference[0].run_id]))
        assert dequeue(inference[1:], records) == []
        instance.report_run_failed(instance.get_run_by_id(inference[0].run_id))
        records = instance.get_run_records(dg.RunsFilter(run_ids=[inference[0].run_id]))
        assert [r.run_id for r in dequeue(inference[1:], records)] == [inference[1].run_id]
