"""Pure unit tests of retrieval fusion, query classification and term matching (no I/O)."""

from __future__ import annotations

import json
import math
import re

import pytest

from rag_pipeline.retrieval.explain import (
    STOPWORDS,
    QueryMatcher,
    matched_evidence,
    matched_terms,
    snippet,
    stem,
    tokens,
)
from rag_pipeline.retrieval.fusion import (
    FUSION_WEIGHTS,
    classify_query,
    weighted_rrf,
    weights_for,
)

# --- weights ----------------------------------------------------------------------------------


def test_each_query_type_weighs_the_axes_it_needs():
    every = {"vv", "mv", "fts"}
    w = {qtype: weights_for(qtype, every) for qtype in FUSION_WEIGHTS}
    assert set(w) == {"visual", "keyword", "semantic", "balanced"}
    for weights in w.values():
        assert set(weights) == every and math.isclose(sum(weights.values()), 1.0)
    assert max(w["visual"], key=w["visual"].get) == "vv"
    assert w["semantic"]["mv"] > w["semantic"]["fts"] > w["semantic"]["vv"]
    # keyword: BM25 and MV equal (serving relies on the tie), both above VV, and BM25 counts
    # for more than it does for any other query type
    assert w["keyword"]["fts"] == w["keyword"]["mv"] > w["keyword"]["vv"]
    assert all(w["keyword"]["fts"] >= w[q]["fts"] for q in w)
    assert max(w["balanced"].values()) - min(w["balanced"].values()) < 0.05


def test_weights_renormalised_over_available_axes():
    w = weights_for("keyword", {"mv", "fts"})
    assert set(w) == {"mv", "fts"}
    assert math.isclose(w["mv"], 0.40 / 0.80)
    assert math.isclose(w["fts"], 0.40 / 0.80)
    assert math.isclose(sum(w.values()), 1.0)

    w = weights_for("visual", ["fts", "mv"])
    assert math.isclose(w["fts"], 0.2 / 0.5) and math.isclose(w["mv"], 0.3 / 0.5)

    assert weights_for("semantic", {"fts"}) == {"fts": 1.0}
    full = weights_for("balanced", {"vv", "mv", "fts"})
    assert all(math.isclose(full[a], FUSION_WEIGHTS["balanced"][a]) for a in full)
    # unknown axes are ignored, not weighted
    assert weights_for("keyword", {"fts", "bogus"}) == {"fts": 1.0}


def test_weights_error_without_axes():
    with pytest.raises(ValueError, match="no retrieval axis"):
        weights_for("keyword", set())
    with pytest.raises(ValueError, match="no retrieval axis"):
        weights_for("keyword", {"bogus"})
    with pytest.raises(ValueError, match="unknown query type"):
        weights_for("fancy", {"fts"})


# --- weighted RRF ------------------------------------------------------------------------------


def test_weighted_rrf_hand_computed():
    rankings = {"fts": ["a", "b", "c"], "mv": ["b", "a", "d"]}
    out = weighted_rrf(rankings, {"fts": 0.6, "mv": 0.4}, k=60)
    expected = {
        "a": 0.6 / 61 + 0.4 / 62,  # 0.0162877
        "b": 0.6 / 62 + 0.4 / 61,  # 0.0162348
        "c": 0.6 / 63,  # 0.0095238
        "d": 0.4 / 63,  # 0.0063492
    }
    assert [d for d, _ in out] == ["a", "b", "c", "d"]
    for d, s in out:
        assert math.isclose(s, expected[d], rel_tol=1e-12)


def test_weighted_rrf_small_k_and_ignored_axes():
    out = dict(weighted_rrf({"fts": ["x", "y"], "vv": ["y"]}, {"fts": 1.0}, k=1))
    assert out == {"x": 1.0 / 2, "y": 1.0 / 3}  # vv has no weight: ignored
    assert weighted_rrf({}, {"fts": 1.0}) == []
    # a repeated id within one axis keeps its first rank
    out = dict(weighted_rrf({"fts": ["x", "x", "y"]}, {"fts": 1.0}, k=0))
    assert out == {"x": 1.0, "y": 1.0 / 3}


def test_weighted_rrf_tie_break_is_deterministic():
    # equal scores, equal best rank -> by id
    out = weighted_rrf({"fts": ["b", "a"], "mv": ["a", "b"]}, {"fts": 0.5, "mv": 0.5})
    assert out[0][1] == out[1][1]
    assert [d for d, _ in out] == ["a", "b"]
    # equal scores (k=0: 0.5/1 == 0.5/2 + 0.5/2), different best rank -> best rank wins over id
    out = weighted_rrf({"fts": ["z", "a"], "mv": ["q", "a"]}, {"fts": 0.5, "mv": 0.5}, k=0)
    scores = dict(out)
    assert scores["z"] == scores["a"] == scores["q"] == 0.5
    assert [d for d, _ in out] == ["q", "z", "a"]
    # independent of dict insertion order
    r1 = {"fts": ["a", "b", "c"], "mv": ["c", "b", "a"]}
    r2 = {"mv": ["c", "b", "a"], "fts": ["a", "b", "c"]}
    w = {"fts": 0.5, "mv": 0.5}
    assert weighted_rrf(r1, w) == weighted_rrf(r2, dict(reversed(list(w.items()))))


# --- classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, expected",
    [
        ('"quarterly budget" review', "keyword"),
        ("invoice 2024", "keyword"),
        ("INV-00123", "keyword"),
        ("snake_case_name", "keyword"),
        ("parseConfig", "keyword"),
        ("report.pdf", "keyword"),
        ("quokka", "keyword"),
        ("kubernetes autoscaler", "keyword"),
        ("photo of a dog on the beach", "visual"),
        ("red car", "visual"),
        ("picture showing mountains", "visual"),
        ("a drawing of an owl", "visual"),
        ("how do I reset my password?", "semantic"),
        ("what is the refund policy", "semantic"),
        ("notes from the meeting about the new office lease", "semantic"),
        ("team meeting notes", "balanced"),
        ("dog park", "balanced"),
        ("", "balanced"),
    ],
)
def test_classify_query(query, expected):
    assert classify_query(query) == expected


# --- term matching -----------------------------------------------------------------------------


def test_stemmer_is_consistent():
    assert stem("running") == stem("run")
    assert stem("foxes") == stem("fox")
    assert stem("dated") == stem("dates") == stem("date") == stem("dating")
    assert stem("quickly") == stem("quick")
    assert stem("glasses") == stem("glass")
    assert stem("status") == "status"


def test_matched_terms():
    text = "The quick brown foxes were running and jumped over the lazy dogs."
    assert matched_terms("Quick fox run", text) == ["quick", "fox", "run"]
    assert matched_terms("the dog jumping", text) == ["dog", "jumping"]  # 'the' is a stopword
    assert matched_terms("the of and", text) == []
    assert matched_terms("cat", text) == []
    assert matched_terms("zebra's", "a zebra herd") == ["zebra"]
    assert matched_terms("fox fox FOX", text) == ["fox"]
    assert matched_terms("2024 invoice", "Invoice no. 2024-17") == ["2024", "invoice"]
    assert matched_terms("anything", "") == []


def test_matched_evidence_ordering():
    evidence = [
        {
            "kind": "chunk",
            "field": "body",
            "ordinal": 0,
            "text": "a brown dog",
            "confidence": 1.0,
            "run_id": "r1",
        },
        {
            "kind": "caption",
            "field": "caption",
            "ordinal": 0,
            "text": "brown dog on a beach",
            "confidence": 0.7,
            "run_id": "r2",
        },
        {
            "kind": "tag",
            "field": "tags",
            "ordinal": 0,
            "text": "beach",
            "confidence": 0.9,
            "run_id": "r2",
        },
        {
            "kind": "tag",
            "field": "tags",
            "ordinal": 1,
            "text": "sky",
            "confidence": 0.99,
            "run_id": "r2",
        },
        {
            "kind": "ocr",
            "field": "ocr",
            "ordinal": 0,
            "text": "BEACH CLUB",
            "confidence": 0.4,
            "run_id": "r3",
        },
    ]
    out = matched_evidence(json.dumps(evidence), "brown dog beach")
    assert [(e["kind"], e["matched_terms"]) for e in out] == [
        ("caption", ["brown", "dog", "beach"]),
        ("chunk", ["brown", "dog"]),
        ("tag", ["beach"]),  # same count as ocr, higher confidence
        ("ocr", ["beach"]),
    ]
    assert out[0]["run_id"] == "r2"
    assert matched_evidence(evidence, "brown dog beach", limit=1)[0]["kind"] == "caption"
    assert matched_evidence(None, "x") == [] and matched_evidence("not json", "x") == []


def test_snippet_windows_around_first_match():
    text = ("lorem ipsum " * 40) + "the quokka lives on an island " + ("dolor sit " * 40)
    s = snippet(text, "quokka", width=100)
    assert "quokka" in s and s.startswith("…") and s.endswith("…")
    assert len(s) <= 102
    assert snippet("short text", "quokka") == "short text"
    assert snippet(text, "nomatch", width=50).startswith("lorem")


def test_query_matcher_agrees_with_stemming_every_word():
    # The matcher stems only the words that begin like a query stem; stemming every word must
    # give the same answers, also where lowercasing re-splits a non-ASCII word.
    texts = [
        "The quick brown foxes were running; studies dated 2024-17 (ties, glasses).",
        "İstanbul STRASSE straße Kelvin \u212a ﬁle ǅemal re-run_runs 4PBA 4 pba",
        "nothing here",
        "",
    ]
    for query in [
        "Quick fox run",
        "study dating",
        "istanbul strasse file kelvin k",
        "4 pba",
        "runs re",
        "the of",
        "ǆemal ties glass",
        "fox FOX",
    ]:
        m = QueryMatcher(query)
        terms = list(dict.fromkeys(tokens(query)))
        query_stems = {stem(t) for t in terms}
        for text in texts:
            text_stems = {stem(w) for w in tokens(text)}
            assert m.matched_terms(text) == [t for t in terms if stem(t) in text_stems]
            words = [(w.start(), w.group().lower()) for w in re.finditer(r"[^\W_]+", text)]
            first = next(
                (
                    i
                    for i, w in words
                    if w not in STOPWORDS and (len(w) > 1 or w.isdigit()) and stem(w) in query_stems
                ),
                None,
            )
            assert m.first_match_offset(text) == first
