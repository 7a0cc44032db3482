"""Materialize the whole graph through Dagster, from the CLI or a script.

discover_job (one run), then the profile x shard partitions that have work, then publish_job.
The partitions go to Dagster as one asset backfill (``launch="backfill"``, what
``rag-pipeline materialize`` does): the daemon submits runs of up to ``RAG_PARTITIONS_PER_RUN``
partitions (the assets' backfill policy) to the run queue, which runs them concurrently up to
the instance's limits, grouped under the backfill in the UI. That needs a ``dagster-daemon``:
the one already running for DAGSTER_HOME, else one started here for the duration.
``launch="in_process"`` runs the partitions' jobs in this process, one after another,
consecutive shards of a profile packed into one run up to ``RAG_TASKS_PER_RUN`` planned tasks (a
run's fixed cost is paid per run, not per shard): what tests and ``--in-process`` use (no
daemon, no code server, no subprocess per run, and a failure surfaces as an exception with its
traceback). Partitions without work get a runless ``work: none`` materialization either way, so
the UI shows every partition materialized. Every run is recorded in the DAGSTER_HOME instance.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

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


def planned_tasks(settings: Settings) -> dict[tuple[str, str], int]:
    """{(job name, partition key): planned tasks} for the partitions with work (a shard with
    staged results waiting counts for its cpu profiles, with its planned tasks, maybe 0)."""
    out: dict[tuple[str, str], int] = {}
    profiles = load_profiles(settings)
    for i in range(settings.shard_count):
        shard = shard_key(i)
        leftovers = bool(staging.list_batches(settings.staging_dir, shard))
        for prof in profiles.by_name.values():
            n = plans.plan_size(settings, prof.name, shard)
            if n or (leftovers and prof.pool == "cpu"):
                job = "cpu_job" if prof.pool == "cpu" else "gpu_job"
                out[(job, plans.partition_key(prof.name, shard))] = n
    return out


def batch_runs(work: dict[tuple[str, str], int], tasks_per_run: int) -> list[tuple[str, list[str]]]:
    """Pack the partitions with work into runs: (job, partition keys) with consecutive shards of
    one profile, cut once a run holds ``tasks_per_run`` planned tasks. A run covers the range
    from its first to its last key, shards without work between included (they record
    ``n_tasks: 0``), since Dagster runs a contiguous partition range."""
    runs: list[tuple[str, list[str]]] = []
    by_profile: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for (job, pk), n in work.items():
        by_profile.setdefault((job, pk.split("|")[0]), []).append((pk, n))
    for (job, _), keys in sorted(by_profile.items()):
        batch: list[str] = []
        held = 0
        for pk, n in sorted(keys):
            batch.append(pk)
            held += n
            if held >= tasks_per_run:
                runs.append((job, batch))
                batch, held = [], 0
        if batch:
            runs.append((job, batch))
    return runs


ANALYSIS_ASSETS = {
    "cpu_job": dg.AssetKey("analysis_runs"),
    "gpu_job": dg.AssetKey("inference_runs"),
}


def all_partitions_of(settings: Settings) -> list[tuple[str, str]]:
    """(job name, partition key) of every profile x shard."""
    profiles = load_profiles(settings)
    return [
        ("cpu_job" if p.pool == "cpu" else "gpu_job", plans.partition_key(p.name, s))
        for p in profiles.by_name.values()
        for s in (shard_key(i) for i in range(settings.shard_count))
    ]


def report_idle_partitions(
    instance: dg.DagsterInstance, settings: Settings, work: list[tuple[str, str]]
) -> int:
    """A partition with nothing to do is up to date: record a runless materialization saying so
    (``work: none``), once, so the UI counts it as materialized rather than missing (an empty
    shard is done, not absent). Returns how many were reported."""
    busy = set(work)
    reported = 0
    by_asset: dict[dg.AssetKey, set[str]] = {}
    for job, pk in all_partitions_of(settings):
        if (job, pk) in busy:
            continue
        key = ANALYSIS_ASSETS[job]
        if key not in by_asset:
            by_asset[key] = set(instance.get_materialized_partitions(key))
        if pk in by_asset[key]:
            continue
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=key,
                partition=pk,
                description="Nothing planned: this partition is up to date.",
                metadata={"work": "none", "n_tasks": 0},
            )
        )
        reported += 1
    return reported


def _daemon_running(instance: dg.DagsterInstance) -> bool:
    from dagster._daemon.controller import get_daemon_statuses

    needed = ["BACKFILL", "QUEUED_RUN_COORDINATOR"]
    try:
        statuses = get_daemon_statuses(instance, needed, ignore_errors=True)
    except Exception:  # no heartbeat table yet
        return False
    return all(s.healthy for s in statuses.values())


@contextmanager
def dagster_daemon(instance: dg.DagsterInstance, log=print, wait_s: float = 300.0):
    """A running dagster-daemon for the duration: the one already heartbeating into this
    instance, else one started here as a child (its own process group, so it and the code
    server and runs it started are stopped together) and stopped on exit."""
    if _daemon_running(instance):
        yield None
        return
    # The daemon loads the same definitions (code location) as `dagster dev` and the UI.
    cmd = [sys.executable, "-m", "dagster._daemon", "run", "-m", "rag_pipeline.definitions"]
    log_path = Path(os.environ["DAGSTER_HOME"]) / "daemon.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    log(f"dagster-daemon: started (pid {proc.pid}, log {log_path})")
    previous = None
    if threading.current_thread() is threading.main_thread():
        # A SIGTERM (a CI timeout, `kill`) must stop the daemon too, not orphan it.
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        deadline = time.monotonic() + wait_s
        while not _daemon_running(instance):
            if proc.poll() is not None:
                raise RuntimeError(f"dagster-daemon exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster-daemon did not start in {wait_s:g} s; see {log_path}")
            time.sleep(1.0)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        # The code server and any run still going (an interrupted materialize) go with it;
        # run monitoring marks such runs failed when a daemon next runs.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def initialize_pools(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[str]:
    """Give the analysis assets' pools (``gpu``) their default limit in the instance's storage
    before any run of them is queued. The run queue enforces a pool's limit only for pools its
    pass found in storage, and adds a new pool there itself during the pass: on the first pass
    that sees it, every queued run of an unseen pool would be let through at once
    (``test_gpu_pool.py``)."""
    have = set(instance.event_log_storage.get_concurrency_keys())
    pools = sorted(
        {p for key in ANALYSIS_ASSETS.values() if (p := defs.resolve_assets_def(key).op.pool)}
    )
    for pool in pools:
        if pool not in have:
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    return pools


def launch_backfill(
    defs: dg.Definitions, instance: dg.DagsterInstance, work: list[tuple[str, str]], tags: dict
) -> str:
    """One asset backfill over the analysis partitions with work: the daemon submits runs of up
    to ``RAG_PARTITIONS_PER_RUN`` partitions (the assets' backfill policy) to the run queue,
    which runs them concurrently up to the instance's limits (``max_concurrent_runs``; the
    ``gpu`` pool lets one inference run at a time through)."""
    initialize_pools(defs, instance)
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    asset_graph = defs.resolve_asset_graph()
    subset = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(ANALYSIS_ASSETS[job], pk) for job, pk in work}, asset_graph
    )
    backfill_id = make_new_backfill_id()
    instance.add_backfill(
        PartitionBackfill.from_asset_graph_subset(
            backfill_id=backfill_id,
            backfill_timestamp=time.time(),
            tags=tags,
            dynamic_partitions_store=instance,
            asset_graph_subset=subset,
            title=f"rag materialize: {len(work)} partitions",
            description="Analysis partitions whose inputs changed (rag-pipeline materialize).",
            run_config=None,
        )
    )
    return backfill_id


_DONE = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "COMPLETED", "FAILED", "CANCELED"}


def wait_for_backfill(
    instance: dg.DagsterInstance,
    backfill_id: str,
    log=print,
    poll_s: float = 2.0,
    daemon: subprocess.Popen | None = None,
) -> list[str]:
    """Block until the backfill is done; the run ids it launched. Raises when one failed."""
    seen_done = 0
    while True:
        if daemon is not None and daemon.poll() is not None:
            raise RuntimeError(
                f"dagster-daemon exited with {daemon.returncode} before backfill {backfill_id} "
                "finished; `rag-pipeline materialize` again resumes it"
            )
        backfill = instance.get_backfill(backfill_id)
        if backfill is None:
            raise RuntimeError(f"backfill {backfill_id} vanished")
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        done = [r for r in runs if r.is_finished]
        if len(done) != seen_done:
            seen_done = len(done)
            log(f"backfill {backfill_id}: {seen_done}/{len(runs)} runs finished")
        if backfill.status.value in _DONE and all(r.is_finished for r in runs):
            failed = [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
            if failed or backfill.status.value not in ("COMPLETED_SUCCESS", "COMPLETED"):
                names = ", ".join(
                    f"{r.tags.get('dagster/partition', r.run_id[:8])}" for r in failed
                )
                raise RuntimeError(
                    f"backfill {backfill_id} ended {backfill.status.value}"
                    + (f"; failed partitions: {names}" if names else "")
                    + "; see the Dagster UI for their logs"
                )
            return [r.run_id for r in runs]
        time.sleep(poll_s)


def _partition_args(keys: list[str], tags: dict[str, str]) -> dict[str, Any]:
    """execute_in_process arguments for a run over one partition key, or over the range from
    the first key to the last."""
    if len(keys) == 1:
        return {"partition_key": keys[0], "tags": tags}
    return {
        "tags": {
            **tags,
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
    }


def materialize_all(
    defs: dg.Definitions,
    instance: dg.DagsterInstance | None = None,
    shards: list[str] | None = None,
    all_partitions: bool = False,
    log=print,
    log_level: str = "WARNING",
    launch: Literal["in_process", "backfill"] = "in_process",
    full_snapshot: bool = False,
) -> dict:
    """discover_job, then cpu_job / gpu_job for each partition with work (one backfill, or in
    this process one by one), then publish_job (``full_snapshot``: rewrite the whole snapshot
    table, not only the change)."""
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
    sizes = planned_tasks(settings)
    if all_partitions:  # every partition, sized by its plan so that runs are still cut by work
        sizes = {**dict.fromkeys(all_partitions_of(settings), 0), **sizes}
    if shards is not None:
        sizes = {(j, pk): n for (j, pk), n in sizes.items() if pk.split("|")[1] in shards}
    work = list(sizes)
    log(
        f"discover: run {res.run_id[:8]}; partitions with work: "
        f"{', '.join(pk for _, pk in work) or 'none'}"
    )
    summary["idle_partitions_reported"] = report_idle_partitions(instance, settings, work)
    summary["launch"] = launch
    if launch == "backfill" and work:
        with dagster_daemon(instance, log=log) as daemon:
            backfill_id = launch_backfill(
                defs, instance, work, {"rag/launcher": "backfill", "rag/host": socket.gethostname()}
            )
            log(f"backfill {backfill_id}: {len(work)} partitions submitted")
            summary["backfill_id"] = backfill_id
            summary["runs"] += wait_for_backfill(instance, backfill_id, log=log, daemon=daemon)
    else:
        for job_name, keys in batch_runs(sizes, settings.tasks_per_run):
            r = defs.resolve_job_def(job_name).execute_in_process(
                instance=instance, run_config=quiet, **_partition_args(keys, tags)
            )
            summary["runs"].append(r.run_id)
            log(
                f"{keys[0]}..{keys[-1]}: run {r.run_id[:8]} ok"
                if len(keys) > 1
                else f"{keys[0]}: run {r.run_id[:8]} ok"
            )
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
