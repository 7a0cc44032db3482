"""Evals in Dagster: the blocking smoke-eval check on ``search_snapshot``, the
``promoted_snapshot`` asset (the PROMOTED pointer serving follows) and the nightly eval.

Add to ``Definitions``::

    from rag_pipeline.defs import evals as eval_defs
    assets=[..., *eval_defs.assets], asset_checks=[..., *eval_defs.asset_checks],
    jobs=[..., *eval_defs.jobs], schedules=eval_defs.schedules
"""

from rag_pipeline.defs.evals.promotion import (
    nightly_eval,
    nightly_eval_job,
    nightly_eval_schedule,
    promoted_snapshot,
    smoke_eval_gates,
)

assets = [promoted_snapshot, nightly_eval]
asset_checks = [smoke_eval_gates]
jobs = [nightly_eval_job]
schedules = [nightly_eval_schedule]

__all__ = ["asset_checks", "assets", "jobs", "schedules", "nightly_eval", "nightly_eval_job",
           "nightly_eval_schedule", "promoted_snapshot", "smoke_eval_gates"]
