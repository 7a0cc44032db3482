"""Materialize the whole graph through Dagster, from the CLI or a script.

discover_job (one run), then shard_job once per shard that has work (a run per partition, as a
backfill would launch them), then snapshot_job. Every run is recorded in the DAGSTER_HOME
instance, so the UI shows them beside runs launched from it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from rag_pipeline import planner, staging
from rag_pipeline.settings import Settings, shard_key


def ensure_dagster_home(default: Path = Path("var/dagster_home")) -> Path:
    """DAGSTER_HOME, created on first use with the project's dagster.yaml (embedded SQLite)."""
    home = Path(os.environ.get("DAGSTER_HOME") or default).absolute()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    target = home / "dagster.yaml"
    if not target.exists():
        project_yaml = Path(__file__).resolve().parents[2] / "dagster.yaml"
        if project_yaml.exists():
            shutil.copyfile(project_yaml, target)
        else:
            target.write_text("telemetry:\n  enabled: false\n")
    return home


def shards_with_work(settings: Settings) -> list[str]:
    keys = []
    for i in range(settings.shard_count):
        key = shard_key(i)
        if planner.read_plan(settings, key) or staging.list_batches(settings.staging_dir, key):
            keys.append(key)
    return keys


def materialize_all(defs: dg.Definitions, instance: dg.DagsterInstance | None = None,
                    shards: list[str] | None = None, all_shards: bool = False,
                    log=print, log_level: str = "WARNING") -> dict:
    instance = instance or dg.DagsterInstance.get()
    # Step events go to the instance (and the UI); the console gets warnings and our summary.
    quiet = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    settings = Settings.from_env()
    summary: dict = {"runs": []}
    res = defs.resolve_job_def("discover_job").execute_in_process(
        instance=instance, run_config=quiet)
    summary["runs"].append(res.run_id)
    if shards is None:
        shards = ([shard_key(i) for i in range(settings.shard_count)] if all_shards
                  else shards_with_work(settings))
    log(f"discover: run {res.run_id[:8]}; shards with work: {', '.join(shards) or 'none'}")
    shard_job = defs.resolve_job_def("shard_job")
    for key in shards:
        r = shard_job.execute_in_process(partition_key=key, instance=instance, run_config=quiet)
        summary["runs"].append(r.run_id)
        log(f"shard {key}: run {r.run_id[:8]} ok")
    r = defs.resolve_job_def("snapshot_job").execute_in_process(instance=instance,
                                                                run_config=quiet)
    summary["runs"].append(r.run_id)
    mats = r.asset_materializations_for_node("search_snapshot")
    meta = mats[-1].metadata if mats else {}
    summary["snapshot_id"] = meta["snapshot_id"].value if "snapshot_id" in meta else None
    summary["published"] = meta["published"].value if "published" in meta else None
    summary["shards"] = shards
    log(f"snapshot: {summary['snapshot_id']} "
        f"({'published' if summary['published'] else 'unchanged'})")
    return summary
