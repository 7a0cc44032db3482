"""Golden QA: questions answered through the same path as ``POST /v1/ask``
(``serving.ask.Asker``), scored on the answers.

* ``source_recall``: per answerable question, the share of its expected sources the answer
  cites (a refused answerable question scores 0), averaged;
* ``phrase_pass_rate``: answerable questions whose answer is not refused, contains every
  ``must_contain`` phrase and no ``must_not_contain`` phrase;
* refusals, a refusal counting as the positive class: ``refusal_precision`` (refused questions
  that are unanswerable), ``refusal_recall`` (unanswerable questions refused) and
  ``refusal_accuracy`` (questions answered or refused as they should be).

``calibrate`` picks the refusal threshold from the per-question evidence scores.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag_pipeline.goldset_schema import QAQuestion, parse_qa_jsonl

QA_METRICS = (
    "source_recall",
    "phrase_pass_rate",
    "refusal_precision",
    "refusal_recall",
    "refusal_accuracy",
)


def load_qa(path: str | Path) -> list[QAQuestion]:
    path = Path(path)
    questions = parse_qa_jsonl(path.read_text(encoding="utf-8"), str(path))
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def _phrases_ok(q: QAQuestion, answer: str) -> bool:
    low = answer.lower()
    return all(p.lower() in low for p in q.must_contain) and not any(
        p.lower() in low for p in q.must_not_contain
    )


def score_one(q: QAQuestion, resp: Any) -> dict[str, Any]:
    cited = list(dict.fromkeys(c.path for c in resp.citations))
    expected = set(q.expected_sources)
    row: dict[str, Any] = {
        "qa_id": q.qa_id,
        "question": q.question,
        "answerable": q.answerable,
        "refused": resp.refused,
        "mode": resp.mode,
        "fallback": resp.fallback,
        "evidence_score": resp.evidence_score,
        "answer": resp.answer,
        "cited_sources": cited,
        "latency_ms": resp.latency_ms,
        # Refusals are judged on every question; phrases also on unanswerable ones (an
        # injection's phrase must not appear in a refusal either).
        "phrases_ok": _phrases_ok(q, resp.answer) and (resp.refused != q.answerable),
    }
    if q.answerable:
        row["source_recall"] = 0.0 if resp.refused else len(expected & set(cited)) / len(expected)
    return row


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    answerable = [r for r in rows if r["answerable"]]
    refused = [r for r in rows if r["refused"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    tp = sum(1 for r in refused if not r["answerable"])

    def ratio(a: float, b: int) -> float:
        return round(a / b, 4) if b else 0.0

    return {
        "source_recall": ratio(sum(r["source_recall"] for r in answerable), len(answerable)),
        "phrase_pass_rate": ratio(sum(r["phrases_ok"] for r in answerable), len(answerable)),
        "refusal_precision": ratio(tp, len(refused)) if refused else 1.0,
        "refusal_recall": ratio(tp, len(unanswerable)) if unanswerable else 1.0,
        "refusal_accuracy": ratio(sum(r["refused"] != r["answerable"] for r in rows), len(rows)),
    }


def calibrate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The threshold (between two observed evidence scores) that answers or refuses the most
    questions correctly; ties go to the middle of the widest gap."""
    scores = sorted({float(r["evidence_score"]) for r in rows})
    cuts = [(a + b) / 2 for a, b in itertools.pairwise(scores)] or scores

    def correct(t: float) -> int:
        return sum((r["evidence_score"] < t) != r["answerable"] for r in rows)

    best = max(correct(t) for t in cuts)
    ties = [t for t in cuts if correct(t) == best]
    # The middle of the tied run of cuts: the margin both ways is widest.
    chosen = (ties[0] + ties[-1]) / 2
    answerable = [r["evidence_score"] for r in rows if r["answerable"]]
    unanswerable = [r["evidence_score"] for r in rows if not r["answerable"]]
    return {
        "threshold": round(chosen, 4),
        "correct": best,
        "n": len(rows),
        "answerable_min": min(answerable, default=None),
        "unanswerable_max": max(unanswerable, default=None),
    }


def evaluate_qa(
    searcher: Any,
    questions: Sequence[QAQuestion],
    asker: Any,
    principal: Any,
    *,
    mode: str = "auto",
) -> dict[str, Any]:
    """Ask every question as ``principal`` through ``asker`` (``serving.ask.Asker``)."""
    from serving.models import AskRequest, SearchFilters

    t0 = time.perf_counter()
    rows = []
    for q in questions:
        filters = None
        if q.scope is not None:
            f = {"kind": q.scope.kind, "folder_prefix": q.scope.folder}
            f = {k: v for k, v in f.items() if v}
            filters = SearchFilters(**f) if f else None
        resp = asker.ask(
            searcher, AskRequest(question=q.question, filters=filters, mode=mode), principal
        )
        rows.append(score_one(q, resp))
    lat = sorted(r["latency_ms"] for r in rows)
    return {
        "metrics": summarize(rows),
        "n_questions": len(rows),
        "n_unanswerable": sum(1 for r in rows if not r["answerable"]),
        "threshold": asker.threshold,
        "calibration": calibrate(rows),
        "latency_p50_ms": lat[len(lat) // 2] if lat else 0.0,
        "snapshot_id": searcher.manifest.snapshot_id,
        "wall_s": round(time.perf_counter() - t0, 3),
        "per_question": rows,
    }
