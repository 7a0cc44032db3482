"""Task states per partition (profile x shard), as the seed names them.

queued (in the partition's plan) -> reported (staged by a worker) -> persisted (committed to the
catalog); failure -> failed (retryable: planned again) or dead_letter (permanent: waits for a
re-drive). A running task is a queued one whose partition has a Dagster run in progress.
"""

from __future__ import annotations

from rag_pipeline.analysis.profiles import load_profiles
from rag_pipeline.settings import Settings, shard_key
from rag_pipeline.storage import plans, staging
from rag_pipeline.storage.catalog.catalog import Catalog


def task_states(
    settings: Settings,
    cat: Catalog,
    shards: list[str] | None = None,
    profiles: list[str] | None = None,
) -> list[dict]:
    names = profiles or load_profiles(settings).names
    shards = shards or [shard_key(i) for i in range(settings.shard_count)]
    counts: dict[tuple[str, str, str], int] = {}  # (profile, shard, state) -> tasks
    # Only the partitions asked for: a run reporting its shards must not aggregate the corpus.
    for r in cat.rows(
        "SELECT r.profile, a.shard, r.status, r.retryable, count(*) AS n FROM results r "
        "JOIN assets a ON a.tenant_id = r.tenant_id AND a.asset_id = r.asset_id "
        "WHERE a.shard IN (SELECT unnest(?)) AND r.profile IN (SELECT unnest(?)) "
        "GROUP BY ALL",
        [[int(s) for s in shards], list(names)],
    ):  # every tenant (one partition serves them all)
        state = (
            "persisted" if r["status"] == "ok" else "failed" if r["retryable"] else "dead_letter"
        )
        key = (r["profile"], shard_key(r["shard"]), state)
        counts[key] = counts.get(key, 0) + int(r["n"])
    out = []
    for shard in shards:
        staged: dict[str, set[str]] = {}
        for path in staging.list_batches(settings.staging_dir, shard):
            try:
                run, keys = staging.read_batch_keys(path)
            except FileNotFoundError:  # persisted while we looked
                continue
            staged.setdefault(run.profile, set()).update(keys)
        for profile in names:
            planned = {t.dedupe_key for t in plans.read_plan(settings, profile, shard)}
            reported = staged.get(profile, set())
            out.append(
                {
                    "partition": plans.partition_key(profile, shard),
                    "profile": profile,
                    "shard": shard,
                    "queued": len(planned - reported),
                    "reported": len(reported),
                    "persisted": counts.get((profile, shard, "persisted"), 0),
                    "failed": counts.get((profile, shard, "failed"), 0),
                    "dead_letter": counts.get((profile, shard, "dead_letter"), 0),
                }
            )
    return out
