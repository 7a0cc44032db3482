"""Partitions: profile (dynamic, from models.yaml) x content-hash shard (static).

An asset lands in shard sha256[:8] mod N, so a shard can be materialized, backfilled or
reprocessed alone and a file keeps its shard when it moves. CPU profiles (text analyzers) and
GPU profiles (model inference) are separate dynamic sets, so each analysis asset only has the
partitions it can run.
"""

import dagster as dg

from rag_pipeline.analysis.profiles import load_profiles
from rag_pipeline.settings import Settings, shard_key

_SETTINGS = Settings.from_env()
SHARD_COUNT = _SETTINGS.shard_count
# A backfill batches up to this many partitions into one run: a run's fixed cost (run record,
# event log, process start) is paid once per batch; a retry redoes one batch.
ANALYSIS_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(_SETTINGS.partitions_per_run)
shard_partitions = dg.StaticPartitionsDefinition([shard_key(i) for i in range(SHARD_COUNT)])
cpu_profiles = dg.DynamicPartitionsDefinition(name="cpu_profiles")
gpu_profiles = dg.DynamicPartitionsDefinition(name="gpu_profiles")
cpu_partitions = dg.MultiPartitionsDefinition({"profile": cpu_profiles, "shard": shard_partitions})
gpu_partitions = dg.MultiPartitionsDefinition({"profile": gpu_profiles, "shard": shard_partitions})

PROFILE_SETS = {"cpu": cpu_profiles, "gpu": gpu_profiles}


def profile_partition_requests(instance: dg.DagsterInstance, settings: Settings) -> list:
    """Add requests for profiles in the models file that the instance does not know yet."""
    profiles = load_profiles(settings)
    requests = []
    for pool, pdef in PROFILE_SETS.items():
        if pdef.name is None:  # both are declared with a name above
            raise ValueError(f"the {pool} profile partitions have no name")
        known = set(instance.get_dynamic_partitions(pdef.name))
        wanted = [p.name for p in profiles.by_name.values() if p.pool == pool]
        missing = [n for n in wanted if n not in known]
        if missing:
            requests.append(pdef.build_add_request(missing))
    return requests


def sync_profiles(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """Register every profile of the models file as a dynamic partition (idempotent)."""
    added = []
    for req in profile_partition_requests(instance, settings):
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        added += list(req.partition_keys)
    return added
