"""Jobs: one per stage, so a partition can be (re)processed alone from the UI or the CLI."""

import dagster as dg

# cpu_job / gpu_job are partitioned like the assets they select (cpu_ / gpu_partitions).
discover_job = dg.define_asset_job(
    "discover_job", selection=["assets", "asset_versions"],
    description="Scan the sources, record asset versions, plan every profile x shard partition.")
cpu_job = dg.define_asset_job(
    "cpu_job", selection=["analysis_runs"],
    description="Text analyzers for one text-profile x shard partition.")
gpu_job = dg.define_asset_job(
    "gpu_job", selection=["inference_runs"],
    description="Model inference for one model-profile x shard partition (gpu pool).")
publish_job = dg.define_asset_job(
    "publish_job", selection=["evidence", "search_snapshot", "promoted_snapshot"],
    description="Persist leftovers, build and publish the search snapshot, and promote it if "
                "its blocking smoke-eval check passes the gates.")
