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
    from rag_pipeline.settings import shard_key
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
        # The backfill policy batches partitions: a run holds one key or a range of them.
        covered: set[str] = set()
        for r in runs:
            if "dagster/partition" in r.tags:
                covered.add(r.tags["dagster/partition"])
                continue
            start = r.tags["dagster/asset_partition_range_start"].split("|")
            end = r.tags["dagster/asset_partition_range_end"].split("|")
            assert start[0] == end[0], "a run's range spans one profile"
            shards = [shard_key(i) for i in range(pipeline_env.shard_count)]
            span = shards[shards.index(start[1]) : shards.index(end[1]) + 1]
            covered |= {f"{start[0]}|{s}" for s in span}
        print({r.run_id[:8]: {k: v for k, v in r.tags.items() if "partition" in k} for r in runs})
        assert set(summary["partitions"]) <= covered
        assert len(runs) < len(summary["partitions"]), "partitions batched into runs"
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert any("dagster-daemon: started" in line for line in lines), lines
    assert summary["published"]
    hits = Searcher.from_settings(pipeline_env).search(
        "otters juggle pebbles", Principal(tenant="default"), k=3
    )
    assert hits.hits and Path(hits.hits[0].path).name == "otters.md"


def test_batch_runs_packs_consecutive_shards_of_a_profile_until_the_task_budget():
    from rag_pipeline.launcher import batch_runs

    work = {
        ("cpu_job", "text-v2|00"): 3,
        ("cpu_job", "text-v2|05"): 1,
        ("cpu_job", "text-v2|02"): 4,
        ("cpu_job", "text-v2|09"): 2,
        ("gpu_job", "minilm|02"): 4,
        ("gpu_job", "minilm|05"): 0,  # staged leftovers only
    }
    # Budget 5: 00 (3) + 02 (4) reach it; 05 + 09 are the rest. Profiles never share a run.
    assert batch_runs(work, 5) == [
        ("cpu_job", ["text-v2|00", "text-v2|02"]),
        ("cpu_job", ["text-v2|05", "text-v2|09"]),
        ("gpu_job", ["minilm|02", "minilm|05"]),
    ]
    # A budget of one task is a run per partition (the old launcher); a large one, a run per
    # profile.
    assert len(batch_runs(work, 1)) == 5 + 1  # minilm|05 (0 tasks) joins no earlier run
    assert [len(keys) for _, keys in batch_runs(work, 10_000)] == [4, 2]


@pytest.mark.timeout(900)  # three materializes
def test_a_change_across_shards_runs_once_per_profile_and_matches_per_partition_runs(
    pipeline_env, monkeypatch
):
    """Edits in several shards: one analysis run per profile (a shard range), the same
    evidence as one run per partition, and every partition materialized."""
    import dagster as dg

    from rag_pipeline.launcher import all_partitions_of
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog
    from rag_pipeline_tests.conftest import run_all

    src = pipeline_env.sources[0]
    words = ["otter", "kiln", "heron", "barley", "quarry", "lantern", "glacier", "cider"]
    for i, w in enumerate(words):
        (src / f"doc{i}.md").write_text(f"# {w.title()}\n\nNotes on the {w}, number {i}.\n")
    first = run_all()
    shards = sorted(first["shards"])
    assert len(shards) >= 3, "eight files land in several shards"

    def evidence() -> list[tuple]:
        with open_settings_catalog(pipeline_env) as cat:
            return sorted(
                (r["uri"].rsplit("/", 1)[-1], r["kind"], r["text"])
                for r in cat.rows(
                    "SELECT v.uri, e.kind, e.text FROM evidence_text e JOIN asset_versions v "
                    "ON v.tenant_id = e.tenant_id AND v.asset_id = e.asset_id "
                    "WHERE v.is_current AND v.tombstoned_at IS NULL"
                )
            )

    for i, w in enumerate(words):
        (src / f"doc{i}.md").write_text(f"# {w.title()}\n\nRevised notes on the {w}: {i}.\n")
    batched = run_all()
    profiles = {pk.split("|")[0] for pk in batched["partitions"]}
    assert len(batched["partitions"]) > len(profiles)
    # discover + one analysis run per profile + publish
    assert len(batched["runs"]) == 1 + len(profiles) + 1
    after_batched = evidence()
    assert any("Revised notes on the otter" in t for _, _, t in after_batched)

    # The same edit again, with a budget of one task: one run per partition, same evidence.
    for i, w in enumerate(words):
        (src / f"doc{i}.md").write_text(f"# {w.title()}\n\nNotes on the {w}, number {i}.\n")
    run_all()
    for i, w in enumerate(words):
        (src / f"doc{i}.md").write_text(f"# {w.title()}\n\nRevised notes on the {w}: {i}.\n")
    monkeypatch.setenv("RAG_TASKS_PER_RUN", "1")
    single = run_all()
    assert len(single["runs"]) >= 1 + len(single["partitions"]) + 1
    assert evidence() == after_batched
    with dg.DagsterInstance.get() as instance:
        done = {
            pk
            for asset in ("analysis_runs", "inference_runs")
            for pk in instance.get_materialized_partitions(dg.AssetKey(asset))
        }
    assert done == {pk for _, pk in all_partitions_of(pipeline_env)}
