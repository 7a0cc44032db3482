"""The blocking smoke gate always measures: the user's gold set when it covers the corpus, else
feedback labels from the serving database, else a known-item set from the promoted snapshot.
Each branch against the real demo snapshot, serving database and dataset builder."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def _chooser(settings, tmp_path):
    from evals.gate_sets import choose_gate_set
    from rag_pipeline.defs import evaluation as ev

    current = ev.pointer_id(settings, "CURRENT")

    def choose(gold_path):
        return choose_gate_set(
            settings,
            gold_path,
            lambda g: ev.coverage(settings, g, current),
            ev.PROMOTED,
            tmp_path,
            max_queries=ev.SMOKE_MAX_QUERIES,
        )

    return choose


def _foreign_gold(tmp_path):
    """A gold set for another corpus: it covers none of this one."""
    path = tmp_path / "other.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"query_id": f"o{i}", "query": f"query {i}", "relevant": {f"x/{i}.md": 2}})
            for i in range(6)
        )
        + "\n"
    )
    return path


def _log_feedback(settings, searcher, queries):
    """Searches logged and judged through serving's own query log (a separate database)."""
    from serving.keys import KeyStore
    from serving.principal import Principal
    from serving.querylog import QueryLog

    store = KeyStore.from_settings(settings)
    qlog = QueryLog(store.engine)
    who = Principal(tenant="default", groups={"all"})
    try:
        for i, q in enumerate(queries):
            hits = searcher.search(q, who, k=3).hits
            qid = f"q_{i:032d}"
            qlog.record(
                {
                    "query_id": qid,
                    "tenant": "default",
                    "op": "search",
                    "query": q,
                    "query_type": "keyword",
                    "hits": [
                        {"unit_id": h.unit_id, "path": h.path, "source": h.source, "rank": r}
                        for r, h in enumerate(hits, 1)
                    ],
                    "timings_ms": {"total": 1.0},
                }
            )
            qlog.add_feedback(
                tenant="default",
                key_id=None,
                query_id=qid,
                unit_id=hits[0].unit_id,
                judgement="relevant",
            )
    finally:
        qlog.close()
        store.close()


def test_gate_prefers_the_gold_set_that_covers_the_corpus(demo_index, tmp_path):
    settings, corpus = demo_index.settings, demo_index.corpus
    chosen = _chooser(settings, tmp_path)(corpus.gold_path)
    assert chosen.kind == "gold" and chosen.coverage >= 0.5
    assert chosen.metadata()["gate_set"] == "gold" and chosen.seed is None
    assert len(chosen.gold.queries) == len(corpus.gold_path.read_text().splitlines())


def test_gate_falls_back_to_feedback_labels_then_known_items(demo_index, tmp_path, monkeypatch):
    from evals.gate_sets import KNOWN_ITEM_SEED, MIN_FEEDBACK_QUERIES
    from rag_pipeline.settings import Settings
    from serving import Searcher

    settings = demo_index.settings
    foreign = _foreign_gold(tmp_path)
    # No feedback yet (a database of its own): the known-item set, seed recorded.
    monkeypatch.setenv("RAG_SERVING_DB_URL", f"sqlite:///{tmp_path / 'serving.db'}")
    settings = Settings.from_env()
    choose = _chooser(settings, tmp_path)
    chosen = choose(foreign)
    assert chosen.kind == "known-item" and chosen.seed == KNOWN_ITEM_SEED
    assert chosen.gold.queries and chosen.coverage == 1.0
    assert "PROMOTED" in chosen.source
    assert "covers 0%" in chosen.metadata()["gate_set_passed_over"]
    again = choose(tmp_path / "missing.jsonl")  # no gold file at all: the same set, same seed
    assert [q.query for q in again.gold.queries] == [q.query for q in chosen.gold.queries]
    assert "no gold set" in again.metadata()["gate_set_passed_over"]

    # Judged searches in the serving database: the feedback labels win over known items.
    searcher = Searcher.from_settings(settings)
    queries = [
        json.loads(line)["query"] for line in demo_index.corpus.gold_path.read_text().splitlines()
    ][: MIN_FEEDBACK_QUERIES + 1]
    _log_feedback(settings, searcher, queries)
    chosen = choose(foreign)
    assert chosen.kind == "feedback", chosen.passed_over
    assert len(chosen.gold.queries) == len(queries) and chosen.coverage == 1.0
