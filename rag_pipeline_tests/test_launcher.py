"""rag-pipeline materialize the Dagster way: the partitions with work as one asset backfill that
dagster-daemon runs (grouped in the UI), and idle partitions recorded as materialized."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DOCS = {
    "otters.md": "# River otters\n\nRiver otters juggle pebbles and hunt crayfish at dusk.\n",
    "kilns.txt": "Anagama kilns fire stoneware for days with wood ash glazes.\n",
}


def _write(src: Path) -> None:
    for name, text in DOCS.items():
        (src / name).write_text(text)


def _materialized(instance, asset: str) -> set[str]:
    import dagster as dg

    return set(instance.get_materialized_partitions(dg.AssetKey(asset)))


@pytest.mark.timeout(900)  # two materializes
def test_idle_partitions_are_materialized_with_work_none(pipeline_env):
    import dagster as dg

    from rag_pipeline.launcher import all_partitions_of
    from rag_pipeline_tests.conftest import run_all

    _write(pipeline_env.sources[0])
    summary = run_all()
    every = all_partitions_of(pipeline_env)
    worked = set(summary["partitions"])
    assert worked and len(worked) < len(every), "two files leave most shards empty"
    assert summary["idle_partitions_reported"] == len(every) - len(worked)
    with dg.DagsterInstance.get() as instance:
        done = _materialized(instance, "analysis_runs") | _materialized(instance, "inference_runs")
        assert done == {pk for _, pk in every}, "100% of partitions materialized"
        idle = next(pk for _, pk in every if pk not in worked)
        job = next(j for j, pk in every if pk == idle)
        key = dg.AssetKey("analysis_runs" if job == "cpu_job" else "inference_runs")
        event = instance.get_latest_materialization_event(key)
        assert event is not None
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[idle]), limit=1
        ).records
        meta = records[0].asset_materialization.metadata
        assert meta["work"].value == "none"
    # A second materialize reports nothing new: each idle partition is recorded once.
    assert run_all()["idle_partitions_reported"] == 0


@pytest.mark.timeout(1200)  # a daemon, its code server and a process per partition run
def test_materialize_runs_the_partitions_as_one_backfill_through_a_daemon(pipeline_env):
    import dagster as dg

    from rag_pipeline.definitions import defs
    from rag_pipeline.launcher import _daemon_running, materialize_all
    from serving import Searcher
    from serving.principal import Principal

    _write(pipeline_env.sources[0])
    lines: list[str] = []
    with dg.DagsterInstance.get() as instance:
        assert not _daemon_running(instance)
        summary = materialize_all(defs, instance=instance, log=lines.append, launch="backfill")
        backfill_id = summary["backfill_id"]
        backfill = instance.get_backfill(backfill_id)
        assert backfill is not None and backfill.status.value == "COMPLETED_SUCCESS"
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(summary["partitions"])
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert any("dagster-daemon: started" in line for line in lines), lines
    assert summary["published"]
    hits = Searcher.from_settings(pipeline_env).search(
        "otters juggle pebbles", Principal(tenant="default"), k=3
    )
    assert hits.hits and Path(hits.hits[0].path).name == "otters.md"
