"""Which query set the blocking smoke gate evaluates: it always measures something.

In order of preference:

1. **gold**: the user's gold set (``RAG_SMOKE_GOLD``, default the demo's ``var/demo_gold.jsonl``)
   when it covers the corpus (at least half its queries have a judged document in the
   snapshot);
2. **feedback**: labels built from the users' feedback in the serving database
   (``POST /v1/feedback`` joined with the query log; ``RAG_SERVING_DB_URL``, default
   ``serving.db`` in the data dir), read with SQL (evals import no serving code) and turned into
   a gold set by ``LabelBuilder``, when there are at least ``MIN_FEEDBACK_QUERIES`` judged
   queries that cover the corpus;
3. **known-item**: a set built by ``dataset_builder`` (titles and captions as queries, each
   finding its own file) from the previously promoted snapshot (else the candidate itself, on
   the first promotion), with a fixed seed recorded with the result.

Only ``RAG_SMOKE_GOLD=off`` switches the gate off; every other case evaluates. The choice, and
why the better sets were passed over, travel with the verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from evals.goldsets import GoldSet, load_gold_jsonl
from rag_pipeline.settings import Settings

GateSetKind = Literal["gold", "feedback", "known-item"]
MIN_COVERAGE = 0.5
MIN_FEEDBACK_QUERIES = 5
KNOWN_ITEM_SEED = 0
KNOWN_ITEM_QUERIES = 50


@dataclass
class GateSet:
    kind: GateSetKind
    gold: GoldSet
    source: str  # the file, the database, or the snapshot the set came from
    coverage: float
    seed: int | None = None
    passed_over: list[str] = field(default_factory=list)  # why better sets were not used

    def metadata(self) -> dict[str, Any]:
        return {
            "gate_set": self.kind,
            "gate_set_source": self.source,
            "gate_set_queries": len(self.gold.queries),
            "gate_set_seed": "" if self.seed is None else self.seed,
            "gate_set_passed_over": "; ".join(self.passed_over) or "none",
        }


def feedback_rows(settings: Settings) -> list[dict[str, Any]]:
    """Search feedback with its query and the judged file's path, from the serving database
    (the same rows as ``serving.querylog.QueryLog.feedback_rows``, read with plain SQL)."""
    import sqlalchemy as sa

    url = settings.serving_db_url or f"sqlite:///{settings.serving_db_path}"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return []
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
            if not {"feedback", "query_log"} <= names:
                return []
            md = sa.MetaData()
            fb = sa.Table("feedback", md, autoload_with=conn)
            ql = sa.Table("query_log", md, autoload_with=conn)
            rows = conn.execute(
                sa.select(
                    fb.c.unit_id, fb.c.judgement, ql.c.query, ql.c.query_type, ql.c.op, ql.c.hits
                ).join(ql, ql.c.query_id == fb.c.query_id)
            ).all()
    finally:
        engine.dispose()
    out = []
    for r in rows:
        hits = r.hits if isinstance(r.hits, list) else []
        hit = next((h for h in hits if isinstance(h, dict) and h.get("unit_id") == r.unit_id), {})
        out.append(
            {
                "query": r.query,
                "query_type": r.query_type,
                "op": r.op,
                "unit_id": r.unit_id,
                "path": hit.get("path"),
                "judgement": r.judgement,
            }
        )
    return out


def feedback_goldset(settings: Settings) -> GoldSet:
    from evals.label_builder import LabelBuilder

    lb = LabelBuilder().add_feedback(feedback_rows(settings))
    return GoldSet(name="feedback", kind="jsonl", queries=lb.gold_queries())


def choose_gate_set(
    settings: Settings,
    gold_path: Path,
    coverage_of: Callable[[GoldSet], float],
    known_item_from: str,
    work_dir: Path,
    max_queries: int = KNOWN_ITEM_QUERIES,
) -> GateSet:
    """The set the gate evaluates (see the module). ``coverage_of``: a gold set's coverage of
    the candidate snapshot; ``known_item_from``: the pointer the known-item set is built from
    (PROMOTED, else CURRENT); ``work_dir``: where a built set is written."""
    passed_over: list[str] = []
    if gold_path.is_file():
        gold = load_gold_jsonl(gold_path).limit(max_queries)
        cov = coverage_of(gold)
        if cov >= MIN_COVERAGE:
            return GateSet("gold", gold, str(gold_path), cov, passed_over=passed_over)
        passed_over.append(f"gold set {gold_path} covers {cov:.0%} of its queries (< 50%)")
    else:
        passed_over.append(f"no gold set at {gold_path}")
    try:
        fb = feedback_goldset(settings).limit(max_queries)
    except Exception as exc:  # an unreachable database must not stop the gate measuring
        passed_over.append(f"feedback unreadable ({type(exc).__name__})")
    else:
        n = len(fb.queries)
        cov = coverage_of(fb) if n else 0.0
        if n >= MIN_FEEDBACK_QUERIES and cov >= MIN_COVERAGE:
            return GateSet("feedback", fb, "serving feedback", cov, passed_over=passed_over)
        passed_over.append(
            f"feedback labels: {n} queries, coverage {cov:.0%} "
            f"(needs {MIN_FEEDBACK_QUERIES}+ and 50%)"
        )
    from evals.dataset_builder import build_from_snapshot

    out = work_dir / f"known-item-seed{KNOWN_ITEM_SEED}.jsonl"
    snapshot_id, queries = build_from_snapshot(
        settings.data_dir, out, n=max_queries, seed=KNOWN_ITEM_SEED, pointer=known_item_from
    )
    gold = GoldSet(name="known-item", kind="jsonl", queries=queries, path=out)
    return GateSet(
        "known-item",
        gold,
        f"snapshot {snapshot_id} ({known_item_from})",
        coverage_of(gold) if queries else 0.0,
        seed=KNOWN_ITEM_SEED,
        passed_over=passed_over,
    )
