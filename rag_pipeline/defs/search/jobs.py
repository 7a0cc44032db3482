"""The search group's job: persist leftovers, build the snapshot, promote it if it passes."""

import dagster as dg

publish_job = dg.define_asset_job(
    "publish_job",
    selection=["evidence", "search_snapshot", "promoted_snapshot"],
    description="Persist leftovers, build and publish the search snapshot, and promote it if "
    "its blocking smoke-eval check passes the gates.",
)
