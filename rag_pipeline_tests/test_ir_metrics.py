"""IR metrics (evals.metrics): hand-computed cases, and agreement with ranx on a random run."""

from __future__ import annotations

import math
import random

import pytest

from evals.metrics import (
    evaluate,
    evaluate_per_query,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from rag_pipeline_tests.conftest import require_import

# --- hand-computed cases -----------------------------------------------------------------------


def test_binary_single_query():
    qrels = {"a": 1, "c": 1}
    ranked = ["b", "a", "d", "c"]
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, qrels, 2) == pytest.approx((1 / math.log2(3)) / idcg)
    assert recall_at_k(ranked, qrels, 2) == 0.5
    assert recall_at_k(ranked, qrels, 100) == 1.0
    assert mrr_at_k(ranked, qrels, 10) == 0.5
    assert mrr_at_k(ranked, qrels, 1) == 0.0
    assert precision_at_k(ranked, qrels, 2) == 0.5
    assert precision_at_k(ranked, qrels, 5) == pytest.approx(2 / 5)  # divides by k, not by 4


def test_graded_gains_and_ideal_from_qrels():
    qrels = {"a": 2, "b": 1, "c": 0}
    # a grade-0 judgement is not relevant, and the ideal ranking comes from the qrels (not
    # from what the run returned).
    ranked = ["c", "b", "x"]
    dcg = (2**1 - 1) / math.log2(3)
    idcg = (2**2 - 1) / 1 + (2**1 - 1) / math.log2(3)
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "b"], qrels, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["b", "a"], qrels, 10) < 1.0
    assert recall_at_k(ranked, qrels, 10) == 0.5
    assert mrr_at_k(ranked, qrels, 10) == 0.5
    # ideal cut at k: one relevant document at rank 1 is perfect at k=1
    assert ndcg_at_k(["a"], qrels, 1) == pytest.approx(1.0)


def test_duplicates_count_once_at_first_rank():
    qrels = {"a": 1}
    assert precision_at_k(["a", "a", "a"], qrels, 3) == pytest.approx(1 / 3)
    # "b" twice is one document: "a" is the second distinct document
    assert ndcg_at_k(["b", "b", "a"], qrels, 2) == pytest.approx(1 / math.log2(3))
    assert mrr_at_k(["b", "b", "a"], qrels, 2) == 0.5


def test_edge_cases():
    assert ndcg_at_k([], {"a": 1}, 10) == 0.0
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0  # no relevant document: 0, no division by 0
    assert recall_at_k(["a"], {}, 10) == 0.0
    with pytest.raises(ValueError, match="positive integer"):
        ndcg_at_k(["a"], {"a": 1}, 0)


def test_evaluate_means_over_queries_with_relevant_docs():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q3: nothing relevant, excluded
    run = {"q1": ["a"], "q3": ["c"], "q9": ["a"]}  # q2 missing: scores 0; q9 has no qrels
    res = evaluate(run, qrels, ["ndcg@10", "recall@100", "mrr@10", "precision@1"])
    assert res == {"ndcg@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5, "precision@1": 0.5}
    per_query = evaluate_per_query(run, qrels, ["mrr@10"])
    assert per_query == {"mrr@10": {"q1": 1.0, "q2": 0.0}}
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(run, qrels, ["map@10"])


# --- cross-check against ranx ------------------------------------------------------------------


def _random_case(seed: int = 7, n_queries: int = 40, n_docs: int = 300):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, list[str]] = {}
    for q in range(n_queries):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        grades = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        if not any(g > 0 for g in grades.values()):
            grades[judged[0]] = 1
        qrels[qid] = grades
        # a run that finds some of the judged docs among random others, in random order
        ranked = rng.sample(docs, rng.randint(20, 150))
        for d in judged:
            if rng.random() < 0.6 and d not in ranked:
                ranked.insert(rng.randrange(len(ranked) + 1), d)
        run[qid] = ranked
    return run, qrels


def test_agrees_with_ranx():
    ranx = require_import("ranx", "ranx (the `test` extra)")
    import warnings

    run, qrels = _random_case()
    # ranx ranks by score: strictly decreasing scores reproduce our order exactly.
    ranx_run = ranx.Run(
        {q: {d: float(len(ids) - i) for i, d in enumerate(ids)} for q, ids in run.items()}
    )
    ranx_qrels = ranx.Qrels(qrels)
    pairs = {
        "ndcg@10": "ndcg_burges@10",
        "recall@100": "recall@100",
        "mrr@10": "mrr@10",
        "precision@5": "precision@5",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba type-safety chatter
        theirs = ranx.evaluate(ranx_qrels, ranx_run, list(pairs.values()), return_mean=False)
    ours = evaluate_per_query(run, qrels, list(pairs))
    qids = list(ranx_qrels.get_query_ids())
    for mine, their_name in pairs.items():
        for qid, value in zip(qids, theirs[their_name], strict=True):
            assert ours[mine][qid] == pytest.approx(float(value), abs=1e-6), (mine, qid)
        mean = evaluate(run, qrels, [mine])[mine]
        assert mean == pytest.approx(float(theirs[their_name].mean()), abs=1e-6), mine
