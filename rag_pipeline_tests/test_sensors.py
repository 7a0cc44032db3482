"""Sensors: new, changed and deleted files request runs for exactly the shards they touch;
profiles become partitions; a transient failure is retried."""

from __future__ import annotations

import hashlib

import dagster as dg
import pytest

from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.settings import Settings, shard_key, shard_of
from rag_pipeline_tests.conftest import run_all


def _shard(path, settings: Settings) -> str:
    return shard_key(shard_of(hashlib.sha256(path.read_bytes()).hexdigest(), settings.shard_count))


@pytest.mark.slow
def test_source_sensor_requests_only_touched_shards(demo_env):
    settings, corpus = demo_env
    run_all()
    from rag_pipeline.definitions import defs
    from rag_pipeline.defs.analysis.sensors import analysis_done_sensor
    from rag_pipeline.defs.catalog.sensors import discover_done_sensor, source_files_sensor
    from rag_pipeline.defs.run_tags import TOUCHED

    resources = {"pipeline": PipelineSettings()}
    with dg.DagsterInstance.get() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        assert isinstance(source_files_sensor(ctx), dg.SkipReason), "nothing changed yet"

        root = corpus.corpus_dir
        docs = sorted(p for p in (root / "docs").rglob("*.md"))
        changed, deleted = docs[0], docs[1]
        old_changed_shard, deleted_shard = _shard(changed, settings), _shard(deleted, settings)
        changed.write_text(changed.read_text() + "\nA new closing remark about lanterns.\n")
        deleted.unlink()
        new = root / "docs" / "brand_new_note.md"
        new.write_text("# Moth traps\n\nLight traps for moth surveys at night.\n")
        expected = {
            old_changed_shard,
            _shard(changed, settings),
            deleted_shard,
            _shard(new, settings),
        }

        request = source_files_sensor(
            dg.build_sensor_context(instance=instance, resources=resources)
        )
        assert isinstance(request, dg.RunRequest)
        assert set(request.tags[TOUCHED].split(",")) == expected
        assert len(expected) < settings.shard_count, "the test must leave some shards out"

        # The discovery the sensor asked for, then the runs the chain asks for.
        result = defs.resolve_job_def("discover_job").execute_in_process(
            instance=instance, tags=request.tags
        )
        success = result.get_run_success_event()
        run_ctx = dg.build_run_status_sensor_context(
            sensor_name="discover_done_sensor",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=success,
            resources=resources,
        )
        requests = discover_done_sensor(run_ctx)
        keys = {r.partition_key for r in requests}
        # Work exists only where content arrived: the new file's and the changed file's new
        # shard, for every profile. Deletions need no analysis, just a new snapshot.
        assert keys == {
            f"{p}|{s}"
            for p in ("text-v2", "minilm-l6-fit")
            for s in {_shard(changed, settings), _shard(new, settings)}
        }
        assert {r.partition_key.split("|")[1] for r in requests} <= expected
        assert {r.job_name for r in requests} == {"cpu_job", "gpu_job"}

        runs = []
        for r in requests:
            res = defs.resolve_job_def(r.job_name).execute_in_process(
                partition_key=r.partition_key, instance=instance, tags=r.tags
            )
            runs.append(res)
        last = runs[-1]
        last_success = last.get_run_success_event()
        publish = analysis_done_sensor(
            dg.build_run_status_sensor_context(
                sensor_name="analysis_done_sensor",
                dagster_instance=instance,
                dagster_run=last.dagster_run,
                dagster_event=last_success,
            )
        )
        assert isinstance(publish, dg.RunRequest)

        # After the new discovery, the sensor sees nothing new.
        assert isinstance(
            source_files_sensor(dg.build_sensor_context(instance=instance, resources=resources)),
            dg.SkipReason,
        )


def test_profiles_sensor_registers_new_profiles(pipeline_env):
    from rag_pipeline.defs.analysis.sensors import profiles_sensor

    with dg.DagsterInstance.get() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"pipeline": PipelineSettings()})
        result = profiles_sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        added = {
            (r.partitions_def_name, k)
            for r in result.dynamic_partitions_requests
            for k in r.partition_keys
        }
        assert added == {
            ("cpu_profiles", "text-v2"),
            ("cpu_profiles", "ocr-tesseract"),
            ("gpu_profiles", "minilm-l6-fit"),
        }
        for r in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(r.partitions_def_name, list(r.partition_keys))
        assert isinstance(profiles_sensor(ctx), dg.SkipReason)


@pytest.mark.slow
def test_transient_io_failure_is_retried(demo_env, monkeypatch):
    settings, _ = demo_env
    from rag_pipeline.analysis import worker
    from rag_pipeline.definitions import defs
    from rag_pipeline.defs.partitions import sync_profiles

    real = worker.run_partition
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # the share hiccups once
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "Input/output error")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "run_partition", flaky)
    with dg.DagsterInstance.get() as instance:
        sync_profiles(instance, settings)
        defs.resolve_job_def("discover_job").execute_in_process(instance=instance)
        result = defs.resolve_job_def("cpu_job").execute_in_process(
            partition_key="text-v2|00", instance=instance
        )
    assert result.success and calls["n"] == 2
    kinds = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" in kinds and "STEP_FAILURE" not in kinds


def test_failure_classes_and_retry_rules():
    from rag_pipeline.analysis.failures import (
        RETRY_RULES,
        batch_size_for_retry,
        classify,
    )
    from rag_pipeline.errors import ModelError, ModelMismatch

    assert classify(OSError("stale NFS handle")) == "transient_io"
    assert classify(MemoryError()) == "resource_exhausted"
    assert classify(RuntimeError("CUDA out of memory. Tried to allocate")) == "resource_exhausted"
    assert classify(ModelError("nan logits")) == "model_error"
    assert classify(ModelMismatch("model_mismatch: ...")) == "model_mismatch"
    assert classify(KeyError("bug")) == "unexpected"
    assert RETRY_RULES["transient_io"].delay(2) == 4 * RETRY_RULES["transient_io"].delay(0)
    assert [batch_size_for_retry(64, n) for n in range(4)] == [64, 32, 16, 8]
