"""``smoke_eval_gates``: the BLOCKING check on ``search_snapshot`` between publishing a snapshot
and serving it.

It evaluates the CURRENT snapshot on the smoke set against the PROMOTED one and applies the gates
(``evals.gates``). ``promoted_snapshot`` is downstream of ``search_snapshot``, so when this check
fails in the same run Dagster skips it and the worse snapshot is never promoted. It passes
without gating when: there is no smoke set; the smoke set does not cover this corpus (fewer than
half its queries have a judged document in the snapshot: a gold set for another corpus cannot
judge this one); nothing is promoted yet (the CURRENT snapshot's results are recorded as the
baseline) or CURRENT is PROMOTED.
"""

from typing import Any

import dagster as dg

from rag_pipeline.defs import evaluation as ev
from rag_pipeline.defs.resources import PipelineSettings


@dg.asset_check(
    asset="search_snapshot",
    name="smoke_eval_gates",
    blocking=True,
    description="Smoke-set retrieval eval of the CURRENT snapshot gated against the PROMOTED "
    "one (nDCG@10 -1 pp, Recall@50 -2 pp, p95 latency +20%, error rate +0.5 pp). "
    "Blocking: a failing candidate is not promoted.",
)
def smoke_eval_gates(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    from evals.gates import apply_gates, load_gates
    from evals.goldsets import load_gold_jsonl
    from evals.stats import compare_runs

    settings = pipeline.settings()
    gold_path = ev.smoke_gold_path(settings)
    if gold_path is None or not gold_path.is_file():
        return dg.AssetCheckResult(
            passed=True, metadata={"status": "no smoke set", "gold": str(gold_path)}
        )
    gold = load_gold_jsonl(gold_path).limit(ev.SMOKE_MAX_QUERIES)
    current = ev.pointer_id(settings, "CURRENT")
    if current is None:
        return dg.AssetCheckResult(passed=True, metadata={"status": "no snapshot published"})
    coverage = ev.coverage(settings, gold, current)
    if coverage < 0.5:
        return dg.AssetCheckResult(
            passed=True,
            metadata={
                "status": "smoke set does not cover this corpus",
                "gold": str(gold_path),
                "coverage": dg.MetadataValue.float(coverage),
            },
        )
    promoted = ev.pointer_id(settings, ev.PROMOTED)
    # Heterogeneous values, all valid metadata (Dagster's own value union is private).
    meta: dict[str, Any] = {
        "gold": str(gold_path),
        "queries": len(gold.queries),
        "candidate": current,
        "promoted": promoted or "",
        "coverage": dg.MetadataValue.float(coverage),
    }
    base = None
    if promoted is not None and promoted != current:
        try:
            base, cand = ev.evaluate_pair(settings, gold, promoted, current)
        except Exception as exc:  # promoted table gone: nothing to gate on
            meta["status"] = (
                f"promoted snapshot unreadable ({type(exc).__name__}: {exc}): "
                "the candidate becomes the baseline"
            )
    if base is None:
        cand = ev.evaluate(settings, gold, current)
        ev.save_result(settings, f"{current}-smoke.json", cand)
        meta.setdefault(
            "status",
            "baseline recorded (nothing promoted yet)"
            if promoted is None
            else "candidate is the promoted snapshot",
        )
        meta |= {
            "verdict": "PASS",
            **ev.float_metadata(cand["metrics"]),
            "report": ev.eval_report([cand], f"Smoke eval: {current}"),
        }
        return dg.AssetCheckResult(passed=True, metadata=meta)
    ev.save_result(settings, f"{promoted}-smoke.json", base)
    ev.save_result(settings, f"{current}-smoke.json", cand)
    meta |= ev.float_metadata(cand["metrics"])
    cmp = compare_runs(base, cand)
    gate_file = str(settings.eval_gates) if settings.eval_gates else None
    verdict = apply_gates(base["metrics"], cand["metrics"], load_gates(gate_file), cmp)
    cmp["gates"] = verdict.model_dump()
    ev.save_result(settings, f"{current}-vs-{promoted}-smoke-compare.json", cmp)
    meta |= {
        "status": "gated against the promoted snapshot",
        "verdict": verdict.verdict,
        "reasons": "; ".join(verdict.reasons) or "none",
        **ev.float_metadata(base["metrics"], "promoted_"),
        "report": ev.eval_report([base, cand], f"Smoke eval: {current} vs {promoted}", cmp),
    }
    context.log.info(f"smoke eval gates: {verdict.verdict} {verdict.reasons}")
    return dg.AssetCheckResult(
        passed=verdict.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=meta
    )
