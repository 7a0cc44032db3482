"""Content-hash shards: an asset lands in shard sha256[:8] mod N, so a shard can be
materialized, backfilled or reprocessed alone and the same file always lands in the same one."""

import dagster as dg

from rag_pipeline.settings import Settings, shard_key

SHARD_COUNT = Settings.from_env().shard_count
shard_partitions = dg.StaticPartitionsDefinition([shard_key(i) for i in range(SHARD_COUNT)])
