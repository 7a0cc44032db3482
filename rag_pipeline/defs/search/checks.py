"""``smoke_eval_gates``: the BLOCKING check on ``search_snapshot`` between publishing a snapshot
and serving it.

It evaluates the CURRENT snapshot against the PROMOTED one and applies the gates
(``evals.gates``). ``promoted_snapshot`` is downstream of ``search_snapshot``, so when this check
fails in the same run Dagster skips it and the worse snapshot is never promoted.

It always measures (``evals.gate_sets``): the user's gold set when it covers the corpus, else
labels from user feedback, else a known-item set built from the promoted snapshot (fixed seed);
the verdict's metadata names the set (``gate_set``) and why better ones were passed over. Only
``RAG_SMOKE_GOLD=off`` switches it off. With nothing promoted yet (or CURRENT is PROMOTED) the
candidate's results are recorded as the baseline. Latency is compared in one process, the two
snapshots' queries interleaved; below ``MIN_P95_QUERIES`` queries a p95 is two or three
samples, so the latency rule gates on p50 instead (``latency_gate`` says which).
"""

from typing import Any

import dagster as dg

from rag_pipeline.defs import evaluation as ev
from rag_pipeline.defs.resources import PipelineSettings

# Fewer queries than this make a p95 of two or three samples: the latency rule uses p50.
MIN_P95_QUERIES = 100


@dg.asset_check(
    asset="search_snapshot",
    name="smoke_eval_gates",
    blocking=True,
    description="Retrieval eval of the CURRENT snapshot gated against the PROMOTED one "
    "(nDCG@10 -1 pp, Recall@50 -2 pp, latency +20%, error rate +0.5 pp) on the user's gold "
    "set, else feedback labels, else a known-item set (metadata: gate_set). "
    "Blocking: a failing candidate is not promoted.",
)
def smoke_eval_gates(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    from evals.gate_sets import choose_gate_set
    from evals.gates import apply_gates, load_gates
    from evals.stats import compare_runs

    settings = pipeline.settings()
    gold_path = ev.smoke_gold_path(settings)
    if gold_path is None:
        return dg.AssetCheckResult(
            passed=True,
            metadata={"status": "switched off (RAG_SMOKE_GOLD=off)", "gate_set": "off"},
        )
    current = ev.pointer_id(settings, "CURRENT")
    if current is None:
        return dg.AssetCheckResult(passed=True, metadata={"status": "no snapshot published"})
    promoted_id = ev.pointer_id(settings, ev.PROMOTED)
    chosen = choose_gate_set(
        settings,
        gold_path,
        lambda g: ev.coverage(settings, g, current),
        ev.PROMOTED if promoted_id else "CURRENT",
        ev.evals_dir(settings),
        max_queries=ev.SMOKE_MAX_QUERIES,
    )
    gold = chosen.gold
    context.log.info(f"smoke eval gates: {chosen.kind} set from {chosen.source}")
    if not gold.queries:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "status": "nothing to evaluate: no query could be built",
                **chosen.metadata(),
            },
        )
    coverage = chosen.coverage
    promoted = ev.pointer_id(settings, ev.PROMOTED)
    # Heterogeneous values, all valid metadata (Dagster's own value union is private).
    meta: dict[str, Any] = {
        **chosen.metadata(),
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
    gates = load_gates(gate_file)
    latency_gate = "p95"
    if len(gold.queries) < MIN_P95_QUERIES:  # too few samples for a p95: compare medians
        latency_gate = f"p50 (p95 needs {MIN_P95_QUERIES}+ queries)"
        gates.rules = [
            r.model_copy(update={"metric": "latency_p50_ms"}) if r.metric == "latency_p95_ms" else r
            for r in gates.rules
        ]
    meta["latency_gate"] = latency_gate
    verdict = apply_gates(base["metrics"], cand["metrics"], gates, cmp)
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
