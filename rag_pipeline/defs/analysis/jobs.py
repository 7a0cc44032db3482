"""The analysis group's jobs: one per partition set, so a profile x shard partition can be
(re)processed alone from the UI or the CLI."""

import dagster as dg

cpu_job = dg.define_asset_job(
    "cpu_job",
    selection=["analysis_runs"],
    description="Text analyzers for one text-profile x shard partition.",
)
gpu_job = dg.define_asset_job(
    "gpu_job",
    selection=["inference_runs"],
    description="Model inference for one model-profile x shard partition (gpu pool).",
)
