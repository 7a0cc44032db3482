"""Plan files: what each profile x shard partition has to do, as one Parquet file of TaskSpecs.

Partition workers never open the catalog (DuckDB admits one process), so the planner writes
their work here and the workers read it; the persister prunes what became final.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rag_pipeline.contracts import TaskSpec
from rag_pipeline.settings import Settings
from rag_pipeline.storage.catalog.catalog import Catalog

PLAN_SCHEMA = pa.schema(
    [
        ("dedupe_key", pa.string()),
        ("asset_id", pa.string()),
        ("task_type", pa.string()),
        ("task", pa.string()),
    ]
)


def partition_key(profile: str, shard: str) -> str:
    """The Dagster multi-partition key (dimensions in name order: profile, shard)."""
    return f"{profile}|{shard}"


def plan_path(settings: Settings, profile: str, key: str) -> Path:
    return settings.plans_dir / f"profile={profile}" / f"shard={key}.parquet"


def write_plan(settings: Settings, profile: str, key: str, tasks: list[TaskSpec]) -> None:
    tbl = pa.table(
        {
            "dedupe_key": [t.dedupe_key for t in tasks],
            "asset_id": [t.asset_id for t in tasks],
            "task_type": [t.task_type for t in tasks],
            "task": [t.model_dump_json() for t in tasks],
        },
        schema=PLAN_SCHEMA,
    )
    path = plan_path(settings, profile, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(tbl, tmp)
    os.replace(tmp, path)  # a worker reads the old plan or the new one, never half


def prune_plan(settings: Settings, cat: Catalog, key: str) -> int:
    """Drop tasks of shard ``key`` (every profile) that now have a final result. Called by the
    persister under the lock, so re-running an up-to-date partition does nothing instead of
    recomputing and discarding."""
    pruned = 0
    for folder in sorted(settings.plans_dir.glob("profile=*")):
        profile = folder.name.split("=", 1)[1]
        tasks = read_plan(settings, profile, key)
        if not tasks:
            continue
        final = {
            r["dedupe_key"]
            for r in cat.rows(
                "SELECT dedupe_key FROM results WHERE dedupe_key IN (SELECT unnest(?)) AND "
                "(status = 'ok' OR NOT retryable)",
                [[t.dedupe_key for t in tasks]],
            )
        }
        keep = [t for t in tasks if t.dedupe_key not in final]
        if len(keep) != len(tasks):
            write_plan(settings, profile, key, keep)
            pruned += len(tasks) - len(keep)
    return pruned


def plan_size(settings: Settings, profile: str, key: str) -> int:
    """How many tasks a partition's plan holds, from the file's footer (no task is parsed)."""
    path = plan_path(settings, profile, key)
    return pq.read_metadata(path).num_rows if path.exists() else 0


def read_plan(settings: Settings, profile: str, key: str) -> list[TaskSpec]:
    path = plan_path(settings, profile, key)
    if not path.exists():
        return []
    tbl = pq.read_table(path)
    return [TaskSpec.model_validate_json(s) for s in tbl.column("task").to_pylist()]
