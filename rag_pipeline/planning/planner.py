"""Planner: turn the catalog's current state into TaskSpecs, one plan file per shard.

Partition workers never open the catalog (DuckDB admits one process), so the planner, which
holds the writer lock anyway during discovery, writes what each shard has to do as a Parquet
file. A task whose dedupe key already has a persisted result is not planned again; one that
failed permanently waits for a re-drive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_pipeline.analysis.profiles import (
    IMAGE_ONLY,
    Profile,
    Profiles,
    TaskProfile,
    load_profiles,
)
from rag_pipeline.contracts import TaskSpec, stable_hash, task_key
from rag_pipeline.media_types import is_document, is_image
from rag_pipeline.settings import Settings, shard_key
from rag_pipeline.storage.catalog.catalog import Catalog
from rag_pipeline.storage.plans import partition_key, write_plan


@dataclass
class PlanReport:
    # "profile|shard" -> number of pending tasks
    tasks_per_partition: dict[str, int] = field(default_factory=dict)
    already_done: int = 0
    skipped_failed: int = 0
    # profile -> why it planned nothing (its model directory is missing, ...)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.tasks_per_partition.values())

    def partitions_with_work(self) -> list[str]:
        return sorted(k for k, n in self.tasks_per_partition.items() if n)


def _task(
    tp: TaskProfile, profile: str, v: dict, key: str, tenant: str, inputs_hash: str = ""
) -> TaskSpec:
    return TaskSpec(
        task_type=tp.task_type,
        tenant_id=tenant,
        asset_id=v["asset_id"],
        version_id=v["version_id"],
        uri=v["uri"],
        media_type=v["media_type"],
        size=v["size"],
        partition_key=partition_key(profile, key),
        model=tp.model,
        config=tp.config,
        inputs_hash=inputs_hash,
        profile=profile,
    )


def text_task_profile(text_profile: Profile, v: dict) -> tuple[TaskProfile, str] | None:
    """The text task profile of ``text_profile`` for one current version and its extra input
    hash (None: no analyzer reads it)."""
    if is_document(v["media_type"]):
        return text_profile.tasks["doc_text"], ""
    if is_image(v["media_type"]):
        # The sidecar is an input too: a new description means new evidence.
        return text_profile.tasks["image_meta"], v["sidecar_hash"]
    return None


class _Keys:
    """A task's dedupe key without building the task: the planner checks every current
    version against the results, and building and hashing a TaskSpec per version and profile
    made planning follow the corpus at several microseconds a task. ``task_key`` is what
    ``TaskSpec.dedupe_key`` computes; the config hash is made once per task profile."""

    def __init__(self) -> None:
        self._config_hash: dict[int, str] = {}

    def __call__(self, tp: TaskProfile, tenant: str, asset_id: str, inputs_hash: str = "") -> str:
        h = self._config_hash.get(id(tp))
        if h is None:
            h = self._config_hash[id(tp)] = stable_hash(tp.config)
        return task_key(tenant, asset_id, tp.model.key, tp.task_type, h, inputs_hash)


def current_versions(cat: Catalog) -> list[dict]:
    """One readable current version per asset (tenant + content): the most recently seen
    path. The same bytes in two tenants are two assets, analysed once each."""
    return cat.rows(
        """
        SELECT tenant_id, asset_id, version_id, uri, media_type, size, sidecar_hash, shard FROM (
          SELECT v.*, a.shard, row_number() OVER (PARTITION BY v.tenant_id, v.asset_id
                 ORDER BY v.last_seen_at DESC, v.uri) AS rn
          FROM asset_versions v JOIN assets a USING (tenant_id, asset_id)
          WHERE v.is_current) WHERE rn = 1
        ORDER BY tenant_id, asset_id
        """
    )


def plan(settings: Settings, cat: Catalog, profiles: Profiles | None = None) -> PlanReport:
    """Plan every profile of the models file over every shard, for every tenant (a dedupe key
    holds the tenant, so tenants never share a result)."""
    profiles = profiles or load_profiles(settings)
    versions = current_versions(cat)
    results = {
        r["dedupe_key"]: r for r in cat.rows("SELECT dedupe_key, status, retryable FROM results")
    }

    report = PlanReport()
    shards = [shard_key(s) for s in range(settings.shard_count)]
    per: dict[tuple[str, str], list[TaskSpec]] = {
        (p, k): [] for p in profiles.names for k in shards
    }

    def state(key: str) -> str:
        r = results.get(key)
        if r is None:
            return "pending"
        if r["status"] == "ok":
            return "done"
        return "pending" if r["retryable"] else "failed"

    def add(
        tp: TaskProfile, v: dict, st: str, profile: str, key: str, inputs_hash: str = ""
    ) -> None:
        if st == "pending":  # only pending work becomes a task
            per[(profile, key)].append(
                _task(tp, profile, v, key, v["tenant_id"], inputs_hash=inputs_hash)
            )
        elif st == "done":
            report.already_done += 1
        else:
            report.skipped_failed += 1

    key_of = _Keys()
    for prof in profiles.by_name.values():
        if prof.unavailable:
            report.unavailable[prof.name] = prof.unavailable
    for v in versions:
        key = shard_key(v["shard"])
        tenant, asset_id = v["tenant_id"], v["asset_id"]
        for prof in profiles.by_name.values():
            if prof.analyzer in IMAGE_ONLY:
                # Image analyzers read only the bytes (no text dependency); an unavailable
                # model plans nothing rather than failing every task.
                if is_image(v["media_type"]) and not prof.unavailable:
                    tp = prof.tasks[prof.analyzer]
                    add(tp, v, state(key_of(tp, tenant, asset_id)), prof.name, key)
                continue
            text_prof = prof if prof.analyzer == "text" else profiles.text_profile_for(prof)
            text = text_task_profile(text_prof, v)
            if text is None:
                continue  # discovery recorded the type; the planner letters it below
            text_tp, text_inputs = text
            text_key = key_of(text_tp, tenant, asset_id, text_inputs)
            text_state = state(text_key)
            if prof.analyzer == "text":
                add(text_tp, v, text_state, prof.name, key, text_inputs)
                continue
            if text_state == "failed":
                report.skipped_failed += 1  # nothing to embed until the text is re-driven
                continue
            mv_tp = prof.tasks["mv_embed"]
            add(
                mv_tp, v, state(key_of(mv_tp, tenant, asset_id, text_key)), prof.name, key, text_key
            )

    for u in cat.rows(
        "SELECT DISTINCT tenant_id, uri, content_hash, media_type "
        "FROM asset_versions WHERE is_current"
    ):
        if not (is_document(u["media_type"]) or is_image(u["media_type"])):
            cat.record_dead_letter(
                tenant_id=u["tenant_id"],
                uri=u["uri"],
                content_hash=u["content_hash"],
                stage="discover",
                error_class="UnsupportedMediaType",
                message=f"{u['uri']}: no analyzer reads {u['media_type']}",
            )

    # Profiles removed from the models file get no more work (their evidence stays).
    for folder in settings.plans_dir.glob("profile=*"):
        if folder.name.split("=", 1)[1] not in profiles.by_name:
            for f in folder.glob("*.parquet"):
                f.unlink(missing_ok=True)
    for (profile, key), tasks in per.items():
        write_plan(settings, profile, key, tasks)
        report.tasks_per_partition[partition_key(profile, key)] = len(tasks)
    return report
