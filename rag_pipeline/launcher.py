"""Materialize the whole graph through Dagster, from the CLI or a script.

discover_job (one run), then cpu_job / gpu_job once per profile x shard partition that has work
(a run per partition, as a backfill would launch them), then publish_job. Every run is recorded
in the DAGSTER_HOME instance, so the UI shows them beside runs launched from it.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from rag_pipeline.analysis.profiles import load_profiles
from rag_pipeline.defs.partitions import sync_profiles
from rag_pipeline.settings import Settings, packaged_file, shard_key
from rag_pipeline.storage import plans, staging


def ensure_dagster_home(default: Path = Path("var/dagster_home")) -> Path:
    """DAGSTER_HOME, created on first use with the packaged dagster.yaml (embedded SQLite)."""
    home = Path(os.environ.get("DAGSTER_HOME") or default).absolute()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(packaged_file("dagster.yaml"), target)
    return home


LAUNCHER_TAGS = {
    "rag/launcher": "cli",
    "rag/host": socket.gethostname(),
    "rag/pid": str(os.getpid()),
}
_LIVE = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail runs this launcher started in a process that has since died (SIGKILL, OOM, a lost
    terminal) and free their concurrency-pool slots. The daemon's run monitoring does this for
    launched runs; in-process runs have no monitor, and a slot held by a dead run would make the
    next run of its pool wait forever."""
    reaped = []
    for rec in instance.get_run_records(
        dg.RunsFilter(statuses=_LIVE, tags={"rag/launcher": "cli"})
    ):
        run = rec.dagster_run
        if run.tags.get("rag/host") != socket.gethostname():
            continue
        pid = int(run.tags.get("rag/pid", "0") or 0)
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(run, message=f"process {pid} died; reaped")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append(run.run_id)
    return reaped


def partitions_with_work(settings: Settings) -> list[tuple[str, str]]:
    """(job name, partition key) for every profile x shard whose plan has tasks or whose shard
    has staged results waiting."""
    out = []
    profiles = load_profiles(settings)
    for i in range(settings.shard_count):
        shard = shard_key(i)
        leftovers = bool(staging.list_batches(settings.staging_dir, shard))
        for prof in profiles.by_name.values():
            if plans.read_plan(settings, prof.name, shard) or (leftovers and prof.pool == "cpu"):
                out.append(
                    (
                        "cpu_job" if prof.pool == "cpu" else "gpu_job",
                        plans.partition_key(prof.name, shard),
                    )
                )
    return out


def materialize_all(
    defs: dg.Definitions,
    instance: dg.DagsterInstance | None = None,
    shards: list[str] | None = None,
    all_partitions: bool = False,
    log=print,
    log_level: str = "WARNING",
    full_snapshot: bool = False,
) -> dict:
    """discover_job, then cpu_job / gpu_job for each partition with work, then publish_job
    (``full_snapshot``: rewrite the whole snapshot table, not only the change)."""
    instance = instance or dg.DagsterInstance.get()
    # Step events go to the instance (and the UI); the console gets warnings and our summary.
    quiet = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    settings = Settings.from_env()
    summary: dict = {
        "runs": [],
        "registered_profiles": sync_profiles(instance, settings),
        "reaped_runs": reap_dead_runs(instance),
    }
    if summary["reaped_runs"]:
        log(f"reaped {len(summary['reaped_runs'])} runs whose process had died")
    tags = dict(LAUNCHER_TAGS, **{"rag/pid": str(os.getpid())})
    res = defs.resolve_job_def("discover_job").execute_in_process(
        instance=instance, run_config=quiet, tags=tags
    )
    summary["runs"].append(res.run_id)
    if all_partitions:
        profiles = load_profiles(settings)
        work = [
            ("cpu_job" if p.pool == "cpu" else "gpu_job", plans.partition_key(p.name, s))
            for p in profiles.by_name.values()
            for s in (shard_key(i) for i in range(settings.shard_count))
        ]
    else:
        work = partitions_with_work(settings)
    if shards is not None:
        work = [(j, pk) for j, pk in work if pk.split("|")[1] in shards]
    log(
        f"discover: run {res.run_id[:8]}; partitions with work: "
        f"{', '.join(pk for _, pk in work) or 'none'}"
    )
    for job_name, pk in work:
        r = defs.resolve_job_def(job_name).execute_in_process(
            partition_key=pk, instance=instance, run_config=quiet, tags=tags
        )
        summary["runs"].append(r.run_id)
        log(f"{pk}: run {r.run_id[:8]} ok")
    publish_config: dict[str, Any] = dict(quiet)
    if full_snapshot:
        publish_config["ops"] = {"search_snapshot": {"config": {"full": True}}}
    r = defs.resolve_job_def("publish_job").execute_in_process(
        instance=instance, run_config=publish_config, tags=tags, raise_on_error=False
    )
    summary["runs"].append(r.run_id)
    failed_checks = [
        e.event_specific_data
        for e in r.all_events
        if isinstance(e.event_specific_data, dg.AssetCheckEvaluation)
        and not e.event_specific_data.passed
    ]
    if not r.success and not failed_checks:
        raise RuntimeError(f"publish run {r.run_id} failed; see the Dagster UI for its logs")
    summary["promoted"] = bool(r.asset_materializations_for_node("promoted_snapshot"))
    if failed_checks and not summary["promoted"]:
        log(
            "not promoted: the snapshot failed its blocking check "
            f"({', '.join(c.check_name for c in failed_checks)}); serving "
            "keeps the promoted snapshot"
        )
    mats = r.asset_materializations_for_node("search_snapshot")
    meta = mats[-1].metadata if mats else {}
    summary["snapshot_id"] = meta["snapshot_id"].value if "snapshot_id" in meta else None
    summary["published"] = meta["published"].value if "published" in meta else None
    summary["partitions"] = [pk for _, pk in work]
    summary["shards"] = sorted({pk.split("|")[1] for _, pk in work})
    log(
        f"snapshot: {summary['snapshot_id']} "
        f"({'published' if summary['published'] else 'unchanged'}"
        f"{', promoted' if summary['promoted'] else ''})"
    )
    return summary


def materialize_configured(log: Callable[..., None] = print) -> dict:
    """The whole graph on DAGSTER_HOME with the settings already in the environment (what
    ``rag-pipeline eval run`` hands to evals to index a dataset)."""
    from rag_pipeline.definitions import defs

    with dg.DagsterInstance.get() as instance:
        return materialize_all(defs, instance=instance, log=log)
