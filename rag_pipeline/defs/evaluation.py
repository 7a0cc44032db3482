"""Running ``evals`` against snapshots, for the Dagster side (the checks and assets in
``search/`` and ``evals/`` call these; ``evals`` itself imports no Dagster definitions).

* The smoke set (``smoke_eval_gates`` on ``search_snapshot``): at most 50 queries of the
  extended-JSONL gold file ``$RAG_SMOKE_GOLD``, default the demo gold set
  ``var/demo_gold.jsonl``; ``RAG_SMOKE_GOLD=off`` turns it off. The CURRENT and the PROMOTED
  snapshot are evaluated in the same process one after the other, query by query, so latency is
  compared under the same load; ``$RAG_EVAL_GATES`` may name a YAML/JSON gate file.
* The nightly set (``nightly_eval``): the full gold file ``$RAG_NIGHTLY_GOLD`` (default: the smoke
  gold file) with the engines ``$RAG_NIGHTLY_ENGINES`` (default ``hybrid,bm25,mv``), and the
  golden QA ``$RAG_NIGHTLY_QA`` (answers and refusals through the ``/v1/ask`` path).

Eval results are kept as JSON under ``<data_dir>/evals/`` (never under ``snapshots/``, whose
``*.json`` files are manifests). Metrics become float metadata, so the UI plots their trend.
"""

import json
from pathlib import Path

import dagster as dg

from rag_pipeline.settings import Settings
from rag_pipeline.snapshot.schema import write_atomic

# Where `rag-pipeline demo` writes the demo gold set (relative to the working folder).
DEMO_GOLD = Path("var/demo_gold.jsonl")
SMOKE_MAX_QUERIES = 50
PROMOTED = "PROMOTED"
QUALITY_KEYS = ("ndcg@10", "recall@50", "recall@100", "mrr@10", "precision@5")
FLOAT_KEYS = (
    *QUALITY_KEYS,
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "error_rate",
    "cpu_s_per_1k_queries",
)


def smoke_gold_path(settings: Settings) -> Path | None:
    raw = settings.smoke_gold.strip()
    if raw.lower() in ("off", "none", "0", "false"):
        return None
    return Path(raw) if raw else DEMO_GOLD


def nightly_gold_path(settings: Settings) -> Path | None:
    raw = settings.nightly_gold.strip()
    return Path(raw) if raw else smoke_gold_path(settings)


def pointer_id(settings: Settings, name: str) -> str | None:
    p = settings.snapshots_dir / name
    return p.read_text().strip() if p.is_file() else None


def evals_dir(settings: Settings) -> Path:
    return settings.data_dir / "evals"


def evaluate(settings: Settings, gold, snapshot_id: str, engine: str = "hybrid") -> dict:
    from evals.runner import DocMapper, evaluate_searcher, open_searcher

    searcher = open_searcher(settings.data_dir, snapshot_id=snapshot_id)
    try:
        return evaluate_searcher(searcher, gold, DocMapper(roots=settings.sources), engine=engine)
    finally:
        searcher.close()


def evaluate_pair(
    settings: Settings, gold, baseline_id: str, candidate_id: str
) -> tuple[dict, dict]:
    """Both snapshots, query by query alternately (latency measured under the same load)."""
    from evals.runner import DocMapper, evaluate_interleaved, open_searcher

    searchers = [
        open_searcher(settings.data_dir, snapshot_id=sid) for sid in (baseline_id, candidate_id)
    ]
    try:
        base, cand = evaluate_interleaved(searchers, gold, DocMapper(roots=settings.sources))
    finally:
        for s in searchers:
            s.close()
    return base, cand


def coverage(settings: Settings, gold, snapshot_id: str) -> float:
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


QA_KEYS = (
    "source_recall",
    "phrase_pass_rate",
    "refusal_precision",
    "refusal_recall",
    "refusal_accuracy",
)


def evaluate_golden_qa(settings: Settings, snapshot_id: str) -> dict | None:
    """The golden QA (``$RAG_NIGHTLY_QA``, default the packaged demo one) through the
    ``/v1/ask`` path on ``snapshot_id``; None when turned off."""
    from evals.qa import evaluate_qa, load_qa
    from evals.runner import eval_principal, open_searcher
    from rag_pipeline.answers import generator_from_settings, threshold_from_settings
    from rag_pipeline.demo.corpus import load_golden_qa
    from serving.ask import Asker

    raw = settings.nightly_qa.strip()
    if raw.lower() in ("off", "none", "0", "false"):
        return None
    questions = load_qa(raw) if raw else load_golden_qa()
    asker = Asker(generator_from_settings(settings), threshold_from_settings(settings))
    searcher = open_searcher(settings.data_dir, snapshot_id=snapshot_id)
    try:
        res = evaluate_qa(searcher, questions, asker, eval_principal(searcher))
    finally:
        searcher.close()
    res["gold"] = raw or "packaged demo golden QA"
    return res


def qa_metadata(res: dict) -> dict:
    """Golden QA figures as float metadata (``qa_`` prefix), for the UI's trend plots."""
    return {
        **{f"qa_{k}": dg.MetadataValue.float(float(res["metrics"][k])) for k in QA_KEYS},
        "qa_questions": dg.MetadataValue.int(int(res["n_questions"])),
        "qa_threshold": dg.MetadataValue.float(float(res["threshold"])),
    }


def save_result(settings: Settings, name: str, obj: dict) -> Path:
    path = evals_dir(settings) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=1, default=str))
    return path


def float_metadata(metrics: dict, prefix: str = "") -> dict:
    return {
        f"{prefix}{k}": dg.MetadataValue.float(float(metrics[k]))
        for k in FLOAT_KEYS
        if k in metrics
    }


def eval_report(
    results: list[dict], title: str, comparison: dict | None = None
) -> dg.MarkdownMetadataValue:
    """The evals report (Markdown with an embedded PNG of the metrics) as metadata."""
    from evals.report import markdown_report, plot_metrics, png_data_uri

    comps = [("candidate vs promoted", comparison)] if comparison else []
    return dg.MetadataValue.md(
        markdown_report(
            results, comps, {"metrics": png_data_uri(plot_metrics(results))}, title=title
        )
    )
