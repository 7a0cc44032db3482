"""Evaluation gates between publishing a snapshot and serving it.

* ``smoke_eval_gates``: a BLOCKING check on ``search_snapshot``. It runs the smoke set (at most
  50 queries of the extended-JSONL gold file ``$RAG_SMOKE_GOLD``, default the demo gold set
  ``var/demo_gold.jsonl``) against the CURRENT snapshot and against the PROMOTED one, in the same
  process one after the other (so latency is compared under the same load), and applies the
  gates (``evals.gates``; ``$RAG_EVAL_GATES`` may name a YAML/JSON gate file). It passes without
  evaluating when: the gold file is missing or ``RAG_SMOKE_GOLD=off`` ("no smoke set"); the
  smoke set does not cover this corpus (fewer than half its queries have a judged document in
  the snapshot: a gold set for another corpus cannot judge this one); nothing is promoted yet
  (the CURRENT snapshot's results are recorded as the baseline) or CURRENT is PROMOTED.
* ``promoted_snapshot``: writes ``snapshots/PROMOTED`` (atomically) = the CURRENT snapshot. It is
  downstream of ``search_snapshot``, so when the blocking check fails in the same run Dagster
  skips it and the worse snapshot is never promoted. Its metadata carries the smoke report
  (Markdown with an embedded PNG).
* ``nightly_eval`` (job ``nightly_eval_job``, schedule ``nightly_eval_schedule``, cron
  ``$RAG_NIGHTLY_CRON`` default ``0 2 * * *``): the PROMOTED snapshot (CURRENT if none) on the
  full gold set ``$RAG_NIGHTLY_GOLD`` (default: the smoke gold file) with the engines
  ``$RAG_NIGHTLY_ENGINES`` (default ``hybrid,bm25,mv``); metrics are float metadata, so the UI
  plots their trend.

Eval results are kept as JSON under ``<data_dir>/evals/`` (never under ``snapshots/``, whose
``*.json`` files are manifests).
"""


import json
import os
from pathlib import Path

import dagster as dg

from rag_pipeline.defs.ingest.assets import OWNERS
from rag_pipeline.defs.resources import PipelineSettings
from rag_pipeline.settings import Settings
from rag_pipeline.snapshot.schema import write_atomic

REPO = Path(__file__).resolve().parents[3]
SMOKE_MAX_QUERIES = 50
PROMOTED = "PROMOTED"
QUALITY_KEYS = ("ndcg@10", "recall@50", "recall@100", "mrr@10", "precision@5")
FLOAT_KEYS = (*QUALITY_KEYS, "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "error_rate",
              "cpu_s_per_1k_queries")


def smoke_gold_path() -> Path | None:
    raw = os.environ.get("RAG_SMOKE_GOLD", "").strip()
    if raw.lower() in ("off", "none", "0", "false"):
        return None
    return Path(raw) if raw else REPO / "var" / "demo_gold.jsonl"


def nightly_gold_path() -> Path | None:
    raw = os.environ.get("RAG_NIGHTLY_GOLD", "").strip()
    return Path(raw) if raw else smoke_gold_path()


def nightly_cron() -> str:
    return os.environ.get("RAG_NIGHTLY_CRON", "").strip() or "0 2 * * *"


def pointer_id(settings: Settings, name: str) -> str | None:
    p = settings.snapshots_dir / name
    return p.read_text().strip() if p.is_file() else None


def evals_dir(settings: Settings) -> Path:
    return settings.data_dir / "evals"


def _evaluate(settings: Settings, gold, snapshot_id: str, engine: str = "hybrid") -> dict:
    from evals.runner import DocMapper, evaluate_searcher, open_searcher

    searcher = open_searcher(settings.data_dir, snapshot_id=snapshot_id)
    try:
        return evaluate_searcher(searcher, gold, DocMapper(roots=settings.sources),
                                 engine=engine)
    finally:
        searcher.close()


def _evaluate_pair(settings: Settings, gold, baseline_id: str, candidate_id: str
                   ) -> tuple[dict, dict]:
    """Both snapshots, query by query alternately (latency measured under the same load)."""
    from evals.runner import DocMapper, evaluate_interleaved, open_searcher

    searchers = [open_searcher(settings.data_dir, snapshot_id=sid)
                 for sid in (baseline_id, candidate_id)]
    try:
        base, cand = evaluate_interleaved(searchers, gold, DocMapper(roots=settings.sources))
    finally:
        for s in searchers:
            s.close()
    return base, cand


def _coverage(settings: Settings, gold, snapshot_id: str) -> float:
    """Share of gold queries with at least one judged-relevant document in the snapshot."""
    from evals.runner import DocMapper, open_searcher, unit_uris

    searcher = open_searcher(settings.data_dir, snapshot_id=snapshot_id)
    try:
        mapper = DocMapper(roots=settings.sources)
        keys = set(mapper.keys([u for uris in unit_uris(searcher).values() for u in uris]))
    finally:
        searcher.close()
    hit = sum(1 for q in gold.queries if any(d in keys for d, g in q.relevant.items() if g > 0))
    return hit / len(gold.queries) if gold.queries else 0.0


def _save(settings: Settings, name: str, obj: dict) -> Path:
    path = evals_dir(settings) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=1, default=str))
    return path


def _floats(metrics: dict, prefix: str = "") -> dict:
    return {f"{prefix}{k}": dg.MetadataValue.float(float(metrics[k]))
            for k in FLOAT_KEYS if k in metrics}


def _report_md(results: list[dict], title: str, comparison: dict | None = None) -> str:
    from evals.report import markdown_report, plot_metrics, png_data_uri

    comps = [("candidate vs promoted", comparison)] if comparison else []
    return markdown_report(results, comps, {"metrics": png_data_uri(plot_metrics(results))},
                           title=title)


@dg.asset_check(
    asset="search_snapshot", name="smoke_eval_gates", blocking=True,
    description="Smoke-set retrieval eval of the CURRENT snapshot gated against the PROMOTED "
                "one (nDCG@10 -1 pp, Recall@50 -2 pp, p95 latency +20%, error rate +0.5 pp). "
                "Blocking: a failing candidate is not promoted.")
def smoke_eval_gates(context: dg.AssetCheckExecutionContext,
                     pipeline: PipelineSettings) -> dg.AssetCheckResult:
    from evals.gates import apply_gates, load_gates
    from evals.goldsets import load_gold_jsonl
    from evals.stats import compare_runs

    settings = pipeline.settings()
    gold_path = smoke_gold_path()
    if gold_path is None or not gold_path.is_file():
        return dg.AssetCheckResult(passed=True, metadata={
            "status": "no smoke set", "gold": str(gold_path)})
    gold = load_gold_jsonl(gold_path).limit(SMOKE_MAX_QUERIES)
    current = pointer_id(settings, "CURRENT")
    if current is None:
        return dg.AssetCheckResult(passed=True, metadata={"status": "no snapshot published"})
    coverage = _coverage(settings, gold, current)
    if coverage < 0.5:
        return dg.AssetCheckResult(passed=True, metadata={
            "status": "smoke set does not cover this corpus", "gold": str(gold_path),
            "coverage": dg.MetadataValue.float(coverage)})
    promoted = pointer_id(settings, PROMOTED)
    meta = {"gold": str(gold_path), "queries": len(gold.queries), "candidate": current,
            "promoted": promoted or "", "coverage": dg.MetadataValue.float(coverage)}
    base = None
    if promoted is not None and promoted != current:
        try:
            base, cand = _evaluate_pair(settings, gold, promoted, current)
        except Exception as exc:  # noqa: BLE001 - promoted table gone: nothing to gate on
            meta["status"] = (f"promoted snapshot unreadable ({type(exc).__name__}: {exc}): "
                              "the candidate becomes the baseline")
    if base is None:
        cand = _evaluate(settings, gold, current)
        _save(settings, f"{current}-smoke.json", cand)
        meta.setdefault("status", "baseline recorded (nothing promoted yet)" if promoted is None
                        else "candidate is the promoted snapshot")
        meta |= {"verdict": "PASS", **_floats(cand["metrics"]),
                 "report": dg.MetadataValue.md(_report_md([cand], f"Smoke eval: {current}"))}
        return dg.AssetCheckResult(passed=True, metadata=meta)
    _save(settings, f"{promoted}-smoke.json", base)
    _save(settings, f"{current}-smoke.json", cand)
    meta |= _floats(cand["metrics"])
    cmp = compare_runs(base, cand)
    gate_file = os.environ.get("RAG_EVAL_GATES") or None
    verdict = apply_gates(base["metrics"], cand["metrics"], load_gates(gate_file), cmp)
    cmp["gates"] = verdict.model_dump()
    _save(settings, f"{current}-vs-{promoted}-smoke-compare.json", cmp)
    meta |= {"status": "gated against the promoted snapshot", "verdict": verdict.verdict,
             "reasons": "; ".join(verdict.reasons) or "none",
             **_floats(base["metrics"], "promoted_"),
             "report": dg.MetadataValue.md(_report_md([base, cand],
                                                      f"Smoke eval: {current} vs {promoted}",
                                                      cmp))}
    context.log.info(f"smoke eval gates: {verdict.verdict} {verdict.reasons}")
    return dg.AssetCheckResult(passed=verdict.passed, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=meta)


@dg.asset(
    name="promoted_snapshot", deps=["search_snapshot"], kinds={"lancedb"}, owners=OWNERS,
    group_name="search", pool="catalog_writer",
    description="The snapshot serving follows: snapshots/PROMOTED, swapped atomically to the "
                "CURRENT snapshot once the blocking smoke_eval_gates check passed (Dagster skips "
                "this asset when it fails).")
def promoted_snapshot(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    settings = pipeline.settings()
    current = pointer_id(settings, "CURRENT")
    if current is None:
        raise dg.Failure("no CURRENT snapshot to promote")
    previous = pointer_id(settings, PROMOTED)
    write_atomic(settings.snapshots_dir / PROMOTED, current)
    history = evals_dir(settings) / "promotions.jsonl"
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"promoted": current, "previous": previous,
                            "dagster_run_id": context.run.run_id}) + "\n")
    meta: dict = {"snapshot_id": current, "previous": previous or "",
                  "changed": previous != current}
    smoke = evals_dir(settings) / f"{current}-smoke.json"
    if smoke.is_file():
        res = json.loads(smoke.read_text())
        meta |= _floats(res["metrics"])
        meta["report"] = dg.MetadataValue.md(_report_md([res], f"Promoted snapshot {current}"))
    else:
        meta["report"] = dg.MetadataValue.md(f"### Promoted `{current}`\n\nNo smoke eval "
                                             "results (no smoke set for this corpus).")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    name="nightly_eval", deps=["promoted_snapshot"], owners=OWNERS, group_name="evals",
    kinds={"python"},
    description="Nightly: the PROMOTED snapshot (CURRENT if none) on the full gold set, per "
                "engine; nDCG@10, Recall@50/100, MRR@10, P@5, latency percentiles, error rate "
                "and CPU cost as float metadata (the UI plots their trend).")
def nightly_eval(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    from evals.goldsets import load_gold_jsonl
    from evals.report import engine_table, plot_metrics, png_data_uri, query_type_table

    settings = pipeline.settings()
    gold_path = nightly_gold_path()
    snap = pointer_id(settings, PROMOTED) or pointer_id(settings, "CURRENT")
    if gold_path is None or not gold_path.is_file() or snap is None:
        return dg.MaterializeResult(metadata={
            "status": "nothing to evaluate", "gold": str(gold_path), "snapshot": snap or ""})
    gold = load_gold_jsonl(gold_path)
    engines = [e.strip() for e in os.environ.get("RAG_NIGHTLY_ENGINES", "hybrid,bm25,mv")
               .split(",") if e.strip()]
    results = []
    for engine in engines:
        res = _evaluate(settings, gold, snap, engine)
        res["provenance"]["label"] = engine
        results.append(res)
        _save(settings, f"nightly/{snap}-{engine}.json", res)
    main = results[0]
    meta = {"snapshot_id": snap, "gold": str(gold_path), "queries": len(gold.queries),
            "engines": ", ".join(engines), **_floats(main["metrics"])}
    for res in results[1:]:
        meta |= _floats({k: res["metrics"][k] for k in QUALITY_KEYS},
                        f"{res['provenance']['engine']}_")
    meta["report"] = dg.MetadataValue.md(
        f"### Nightly eval of `{snap}`\n\n{engine_table(results)}\n\n"
        f"{query_type_table(results)}\n\n![metrics]({png_data_uri(plot_metrics(results))})")
    return dg.MaterializeResult(metadata=meta)


nightly_eval_job = dg.define_asset_job(
    "nightly_eval_job", selection=["nightly_eval"],
    description="Evaluate the promoted snapshot on the full gold set.")

nightly_eval_schedule = dg.ScheduleDefinition(
    name="nightly_eval_schedule", job=nightly_eval_job, cron_schedule=nightly_cron(),
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly eval of the promoted snapshot (cron from RAG_NIGHTLY_CRON).")
