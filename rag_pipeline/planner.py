"""Planner: turn the catalog's current state into TaskSpecs, one plan file per shard.

Partition workers never open the catalog (DuckDB admits one process), so the planner, which
holds the writer lock anyway during discovery, writes what each shard has to do as a Parquet
file. A task whose dedupe key already has a persisted result is not planned again; one that
failed permanently waits for a re-drive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rag_pipeline.analyzers.media_types import is_document, is_image
from rag_pipeline.catalog.catalog import Catalog
from rag_pipeline.contracts import TaskSpec
from rag_pipeline.profiles import Profile, current_profiles
from rag_pipeline.settings import Settings, shard_key

PLAN_SCHEMA = pa.schema([
    ("dedupe_key", pa.string()), ("asset_id", pa.string()), ("task_type", pa.string()),
    ("task", pa.string()),
])


@dataclass
class PlanReport:
    tasks_per_shard: dict[str, int] = field(default_factory=dict)
    already_done: int = 0
    skipped_failed: int = 0

    @property
    def total(self) -> int:
        return sum(self.tasks_per_shard.values())


def plan_path(settings: Settings, key: str) -> Path:
    return settings.plans_dir / f"shard={key}.parquet"


def _task(profile: Profile, v: dict, partition_key: str, tenant: str,
          inputs_hash: str = "") -> TaskSpec:
    return TaskSpec(task_type=profile.task_type, tenant_id=tenant, asset_id=v["asset_id"],
                    version_id=v["version_id"], uri=v["uri"], media_type=v["media_type"],
                    size=v["size"], partition_key=partition_key, model=profile.model,
                    config=profile.config, inputs_hash=inputs_hash)


def plan(settings: Settings, cat: Catalog) -> PlanReport:
    tenant = settings.tenant_id
    profiles = current_profiles(settings)
    # One readable current version per asset: the most recently seen path.
    versions = cat.rows(
        """
        SELECT asset_id, version_id, uri, media_type, size, sidecar_hash, shard FROM (
          SELECT v.*, a.shard, row_number() OVER (PARTITION BY v.asset_id
                 ORDER BY v.last_seen_at DESC, v.uri) AS rn
          FROM asset_versions v JOIN assets a USING (tenant_id, asset_id)
          WHERE v.tenant_id = ? AND v.is_current) WHERE rn = 1
        """, [tenant])
    results = {r["dedupe_key"]: r for r in cat.rows(
        "SELECT dedupe_key, status, retryable FROM results WHERE tenant_id = ?", [tenant])}

    report = PlanReport()
    per_shard: dict[str, list[TaskSpec]] = {shard_key(s): [] for s in range(settings.shard_count)}

    def state(key: str) -> str:
        r = results.get(key)
        if r is None:
            return "pending"
        if r["status"] == "ok":
            return "done"
        return "pending" if r["retryable"] else "failed"

    for v in versions:
        key = shard_key(v["shard"])
        if is_document(v["media_type"]):
            text_profile = profiles["doc_text"]
            text_task = _task(text_profile, v, key, tenant)
        elif is_image(v["media_type"]):
            text_profile = profiles["image_meta"]
            # The sidecar is an input too: a new description means new evidence.
            text_task = _task(text_profile, v, key, tenant, inputs_hash=v["sidecar_hash"])
        else:
            continue  # the worker never sees it; discovery recorded the type
        text_state = state(text_task.dedupe_key)
        mv_task = _task(profiles["mv_embed"], v, key, tenant, inputs_hash=text_task.dedupe_key)
        for task, st in ((text_task, text_state), (mv_task, state(mv_task.dedupe_key))):
            if task is mv_task and text_state == "failed":
                report.skipped_failed += 1  # nothing to embed
                continue
            if st == "pending":
                per_shard[key].append(task)
            elif st == "done":
                report.already_done += 1
            else:
                report.skipped_failed += 1

    unsupported = cat.rows(
        "SELECT DISTINCT uri, content_hash, media_type FROM asset_versions WHERE tenant_id = ? "
        "AND is_current", [tenant])
    for u in unsupported:
        if not (is_document(u["media_type"]) or is_image(u["media_type"])):
            cat.record_dead_letter(tenant_id=tenant, uri=u["uri"], content_hash=u["content_hash"],
                                   stage="discover", error_class="UnsupportedMediaType",
                                   message=f"{u['uri']}: no analyzer reads {u['media_type']}")

    for key, tasks in per_shard.items():
        write_plan(settings, key, tasks)
        report.tasks_per_shard[key] = len(tasks)
    return report


def write_plan(settings: Settings, key: str, tasks: list[TaskSpec]) -> None:
    settings.plans_dir.mkdir(parents=True, exist_ok=True)
    tbl = pa.table({
        "dedupe_key": [t.dedupe_key for t in tasks],
        "asset_id": [t.asset_id for t in tasks],
        "task_type": [t.task_type for t in tasks],
        "task": [t.model_dump_json() for t in tasks],
    }, schema=PLAN_SCHEMA)
    path = plan_path(settings, key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(tbl, tmp)
    os.replace(tmp, path)  # a worker reads the old plan or the new one, never half


def prune_plan(settings: Settings, cat: Catalog, key: str) -> int:
    """Drop tasks that now have a final result (called by the persister, under the lock), so
    re-running an up-to-date shard does nothing instead of recomputing and discarding."""
    tasks = read_plan(settings, key)
    if not tasks:
        return 0
    final = {r["dedupe_key"] for r in cat.rows(
        "SELECT dedupe_key FROM results WHERE dedupe_key IN (SELECT unnest(?)) AND "
        "(status = 'ok' OR NOT retryable)", [[t.dedupe_key for t in tasks]])}
    keep = [t for t in tasks if t.dedupe_key not in final]
    if len(keep) != len(tasks):
        write_plan(settings, key, keep)
    return len(tasks) - len(keep)


def read_plan(settings: Settings, key: str) -> list[TaskSpec]:
    path = plan_path(settings, key)
    if not path.exists():
        return []
    tbl = pq.read_table(path)
    return [TaskSpec.model_validate_json(s) for s in tbl.column("task").to_pylist()]
