"""Jobs: one per stage, so a shard can be (re)processed alone from the UI or the CLI."""

import dagster as dg

from rag_pipeline.defs.partitions import shard_partitions

discover_job = dg.define_asset_job("discover_job", selection=["assets", "asset_versions"])
shard_job = dg.define_asset_job("shard_job", selection=["analysis_runs", "evidence"],
                                partitions_def=shard_partitions)
snapshot_job = dg.define_asset_job("snapshot_job", selection=["search_snapshot"])
