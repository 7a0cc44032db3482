"""The evals group: ``nightly_eval``, the PROMOTED snapshot (CURRENT if none) on the full gold
set, per engine (see ``rag_pipeline.defs.evaluation`` for the gold files and engines)."""

import dagster as dg

from rag_pipeline.defs import evaluation as ev
from rag_pipeline.defs.metadata import md_doc
from rag_pipeline.defs.owners import OWNERS
from rag_pipeline.defs.resources import PipelineSettings


@dg.asset(
    name="nightly_eval",
    deps=["promoted_snapshot"],
    owners=OWNERS,
    group_name="evals",
    kinds={"python"},
    description="Nightly: the PROMOTED snapshot (CURRENT if none) on the full gold set, per "
    "engine; nDCG@10, Recall@50/100, MRR@10, P@5, latency percentiles, error rate "
    "and CPU cost as float metadata (the UI plots their trend); and the golden QA "
    "(qa_*: source recall, phrase checks, refusal precision/recall/accuracy).",
)
def nightly_eval(context: dg.AssetExecutionContext, pipeline: PipelineSettings):
    from evals.goldsets import load_gold_jsonl
    from evals.report import engine_table, plot_metrics, png_data_uri, query_type_table

    settings = pipeline.settings()
    gold_path = ev.nightly_gold_path(settings)
    snap = ev.pointer_id(settings, ev.PROMOTED) or ev.pointer_id(settings, "CURRENT")
    if gold_path is None or not gold_path.is_file() or snap is None:
        return dg.MaterializeResult(
            metadata={
                "status": "nothing to evaluate",
                "gold": str(gold_path),
                "snapshot": snap or "",
            }
        )
    gold = load_gold_jsonl(gold_path)
    engines = [e.strip() for e in settings.nightly_engines.split(",") if e.strip()]
    results = []
    for engine in engines:
        res = ev.evaluate(settings, gold, snap, engine)
        res["provenance"]["label"] = engine
        results.append(res)
        ev.save_result(settings, f"nightly/{snap}-{engine}.json", res)
    main = results[0]
    meta = {
        "snapshot_id": snap,
        "gold": str(gold_path),
        "queries": len(gold.queries),
        "engines": ", ".join(engines),
        **ev.float_metadata(main["metrics"]),
    }
    for res in results[1:]:
        meta |= ev.float_metadata(
            {k: res["metrics"][k] for k in ev.QUALITY_KEYS}, f"{res['provenance']['engine']}_"
        )
    qa = ev.evaluate_golden_qa(settings, snap)
    if qa is not None:
        ev.save_result(settings, f"nightly/{snap}-golden_qa.json", qa)
        meta |= ev.qa_metadata(qa)
    meta["report"] = md_doc(
        f"Nightly eval of `{snap}`",
        engine_table(results),
        query_type_table(results),
        f"![metrics]({png_data_uri(plot_metrics(results))})",
    )
    return dg.MaterializeResult(metadata=meta)
