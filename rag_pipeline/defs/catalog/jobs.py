"""The catalog group's job: discovery, started by hand, by the CLI or by the file sensor."""

import dagster as dg

discover_job = dg.define_asset_job(
    "discover_job",
    selection=["assets", "asset_versions"],
    description="Scan the sources, record asset versions, plan every profile x shard partition.",
)
