"""Evals building blocks: gold-set validation, extended metrics, paired bootstrap, gates,
label rules, weak gold sets, reports. Pure functions: no pipeline runs here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evals.gates import GateConfig, apply_gates, load_gates
from evals.goldsets import (
    GoldQuery,
    gold_jsonl_line,
    load_beir_gold,
    load_gold_jsonl,
    write_gold_jsonl,
)
from evals.label_builder import LabelBuilder
from evals.metrics import EVAL_METRICS, evaluate, latency_summary, percentile
from evals.stats import compare_runs, paired_bootstrap

GOOD = {
    "query_id": "q1",
    "query": "red lighthouse",
    "query_type": "visual",
    "relevant": {"images/lighthouse.jpg": 2, "docs/a.md": 0},
    "scope": {"kind": "image"},
    "must": ["lighthouse"],
    "exclude": ["wasp"],
}


def _write(path, lines):
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return path


def test_extended_jsonl_roundtrip(tmp_path):
    p = _write(
        tmp_path / "g.jsonl",
        ["# a comment", GOOD, "", {**GOOD, "query_id": "q2", "query_type": None}],
    )
    gs = load_gold_jsonl(p)
    assert [q.query_id for q in gs.queries] == ["q1", "q2"]
    assert gs.queries[0].scope.kind == "image" and gs.queries[0].must == ["lighthouse"]
    assert gs.qrels["q1"] == {"images/lighthouse.jpg": 2, "docs/a.md": 0}
    out = write_gold_jsonl(tmp_path / "o.jsonl", gs.queries)
    assert load_gold_jsonl(out).queries == gs.queries
    bare = GoldQuery(query_id="q3", query="x", relevant={"a": 1})  # unset fields are left out
    assert gold_jsonl_line(bare) == '{"query_id":"q3","query":"x","relevant":{"a":1}}'


def test_demo_gold_is_an_evals_gold_set(tmp_path):
    """The demo gold set is written and read with the evals' schema: same queries both ways."""
    from rag_pipeline.demo.corpus import GOLD_FILENAME, generate_demo_corpus, load_gold

    demo = load_gold()
    assert all(type(q) is GoldQuery for q in demo)
    assert [q.query_id for q in demo] == [f"q{i:02d}" for i in range(1, 19)]
    corpus = generate_demo_corpus(tmp_path / "corpus", tmp_path / GOLD_FILENAME)
    assert load_gold_jsonl(corpus.gold_path).queries == demo
    again = write_gold_jsonl(tmp_path / "again.jsonl", demo)
    assert again.read_bytes() == corpus.gold_path.read_bytes()


def test_one_query_type_vocabulary():
    """Gold query types are serving's: the ones classify_query returns and fusion weighs."""
    from rag_pipeline.contracts import QUERY_TYPES
    from rag_pipeline.retrieval.fusion import FUSION_WEIGHTS, classify_query

    assert QUERY_TYPES == ("visual", "keyword", "semantic", "balanced")
    assert set(FUSION_WEIGHTS) == set(QUERY_TYPES)
    samples = ("Hohmann", "photo of a dog", "how do I feed a sourdough starter?", "dog park")
    assert {classify_query(q) for q in samples} == set(QUERY_TYPES)
    for t in QUERY_TYPES:
        assert GoldQuery.model_validate({**GOOD, "query_type": t}).query_type == t
    # the older spelling of "balanced" still loads (gold files written before the rename)
    assert GoldQuery.model_validate({**GOOD, "query_type": "mixed"}).query_type == "balanced"


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({**GOOD, "relevant": {"a": 3}}, "grade of 'a' must be 0, 1 or 2"),
        ({**GOOD, "relevant": {"a": 0}}, "at least one document with grade 1 or 2"),
        ({**GOOD, "query_type": "fuzzy"}, "query_type"),
        ({**GOOD, "query": ""}, "query"),
        ({**GOOD, "scope": {"kind": "video"}}, "scope.kind"),
        ({**GOOD, "surprise": 1}, "surprise"),
        (GOOD, "duplicate query_id 'q1' (first at line 1)"),
    ],
)
def test_extended_jsonl_errors_name_file_and_line(tmp_path, bad, reason):
    p = _write(tmp_path / "g.jsonl", [GOOD, bad])
    with pytest.raises(ValueError) as exc:
        load_gold_jsonl(p)
    assert str(exc.value).startswith(f"{p}:2: ")
    assert reason in str(exc.value)


def test_beir_gold_any_split(tmp_path):
    root = tmp_path / "mini"
    (root / "qrels").mkdir(parents=True)
    _write(
        root / "corpus.jsonl",
        [{"_id": "d1", "title": "T", "text": "x"}, {"_id": "d2", "text": "y"}],
    )
    _write(root / "queries.jsonl", [{"_id": "1", "text": "a"}, {"_id": "2", "text": "b"}])
    (root / "qrels" / "never-seen.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\td1\t1\n2\td2\t0\n"
    )
    gs = load_beir_gold(root, "never-seen")
    assert gs.kind == "beir" and gs.split == "never-seen"
    assert [q.query_id for q in gs.queries] == ["1"]  # q2 has nothing relevant
    (root / "qrels" / "bad.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 3 tab-separated"):
        load_beir_gold(root, "bad")


def test_extended_metrics():
    qrels = {"q": {f"d{i}": 1 for i in range(4)}}
    run = {"q": [f"x{i}" for i in range(49)] + ["d0", "d1"] + ["d2"] * 2}
    res = evaluate(run, qrels, EVAL_METRICS)
    assert res["recall@50"] == 0.25 and res["recall@100"] == 0.75
    xs = [3.0, 1.0, 2.0, 10.0, 7.5]
    for p in (0, 50, 95, 99, 100):
        assert percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)))
    s = latency_summary(xs)
    assert s["latency_p50_ms"] == 3.0 and s["latency_mean_ms"] == pytest.approx(4.7)
    assert math.isnan(percentile([], 50))


def _result(vals, lat, errors=()):
    per = [
        {
            "query_id": f"q{i}",
            "metrics": {"ndcg@10": v, "recall@50": v},
            "latency_ms": latency,
            "cpu_s": 0.01,
            "error": "x" if i in errors else None,
        }
        for i, (v, latency) in enumerate(zip(vals, lat, strict=True))
    ]
    from evals.runner import summarize

    return {
        "metrics": summarize(per, ["ndcg@10", "recall@50"]),
        "per_query": per,
        "n_queries": len(per),
        "provenance": {"engine": "hybrid"},
    }


def test_paired_bootstrap_is_seeded_and_paired():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + 0.05
    r1, r2 = paired_bootstrap(a, b), paired_bootstrap(a, b)
    assert r1 == r2  # fixed seed
    # a constant paired improvement has a zero-width CI (unpaired it would not)
    assert r1["diff"] == pytest.approx(0.05) and r1["lo"] == pytest.approx(0.05)
    assert r1["p_b_better"] == 1.0
    noisy = paired_bootstrap(a, a + rng.normal(0, 0.1, 200))
    assert noisy["lo"] < noisy["diff"] < noisy["hi"]
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_compare_and_gates_defaults():
    base = _result([0.8] * 40, [10.0] * 40)
    same = _result([0.8] * 40, [10.5] * 40)
    v = apply_gates(base["metrics"], same["metrics"])
    assert v.passed and v.verdict == "PASS"
    worse = _result([0.77] * 40, [10.0] * 40)  # -3 pp nDCG and recall@50
    v = apply_gates(base["metrics"], worse["metrics"])
    assert v.verdict == "BLOCK"
    assert any(r.startswith("ndcg@10") for r in v.reasons)
    assert any(r.startswith("recall@50") for r in v.reasons)
    edge = _result([0.78] * 40, [10.0] * 40)  # -2.0 pp: blocks nDCG (> 1) but not recall@50
    assert [
        c.metric for c in apply_gates(base["metrics"], edge["metrics"]).checks if not c.passed
    ] == ["ndcg@10"]
    slow = _result([0.8] * 40, [13.0] * 40)  # +30% p95, +3 ms: under the 5 ms slack
    assert apply_gates(base["metrics"], slow["metrics"]).passed
    slower = _result([0.8] * 40, [20.0] * 40)  # +100%, +10 ms
    v = apply_gates(base["metrics"], slower["metrics"])
    assert v.reasons == [c.reason for c in v.checks if c.metric == "latency_p95_ms"]
    errs = _result([0.8] * 40, [10.0] * 40, errors=(3,))  # +2.5 pp error rate
    assert apply_gates(base["metrics"], errs["metrics"]).reasons[0].startswith("error_rate")
    cmp = compare_runs(base, worse)
    assert cmp["diffs"]["ndcg@10"]["diff"] == pytest.approx(-0.03)
    assert cmp["n_common_queries"] == 40


def test_gate_boundaries_and_config_file(tmp_path):
    base = {"ndcg@10": 0.50, "recall@50": 0.90}
    assert apply_gates(base, {"ndcg@10": 0.4905, "recall@50": 0.885}).passed  # -0.95 / -1.5 pp
    assert not apply_gates(base, {"ndcg@10": 0.489, "recall@50": 0.9}).passed  # -1.1 pp
    f = tmp_path / "gates.yaml"
    f.write_text("rules:\n  - {metric: ndcg@10, kind: drop_pp, threshold: 5.0}\nuse_ci: false\n")
    cfg = load_gates(f)
    assert len(cfg.rules) == 1 and apply_gates(base, {"ndcg@10": 0.46}, cfg).passed
    j = tmp_path / "gates.json"
    j.write_text(json.dumps(GateConfig().model_dump()))
    assert load_gates(j) == GateConfig()
    # a metric missing on one side is skipped, not a failure
    assert apply_gates({}, {"ndcg@10": 0.1}).passed
    # use_ci: a drop whose CI includes 0 does not block
    cmp = {"diffs": {"ndcg@10": {"hi": 0.01}}}
    assert apply_gates(
        base, {"ndcg@10": 0.45, "recall@50": 0.9}, GateConfig(use_ci=True), cmp
    ).passed


def test_label_builder_rules(tmp_path):
    j = tmp_path / "judgements.csv"
    j.write_text(
        "query_id,query,doc,grade,thumbs\n"
        "q1,red lighthouse,a.jpg,2,\n"
        "q1,red lighthouse,b.jpg,,up\n"
        "q1,red lighthouse,c.jpg,,down\n"
        "q1,red lighthouse,d.jpg,0,\n"
    )
    clicks = tmp_path / "clicks.jsonl"
    _write(
        clicks,
        [{"query": "Red  Lighthouse", "doc": "c.jpg", "position": 1}] * 3
        + [{"query": "red lighthouse", "doc": "d.jpg", "position": 2}] * 4
        + [{"query": "red lighthouse", "doc": "e.jpg", "position": 2}] * 2
        + [{"query": "red lighthouse", "doc": "f.jpg", "position": 9}]
        + [{"query": "sourdough", "doc": "s.md", "position": 1}] * 2,
    )
    lb = LabelBuilder().add_judgements(j).add_clicks(clicks)
    q = lb.qrels()
    assert q["q1"] == {"a.jpg": 2, "b.jpg": 1, "c.jpg": 0, "d.jpg": 0, "e.jpg": 1}
    click_q = next(k for k in q if k.startswith("click-"))
    assert q[click_q] == {"s.md": 1}
    lb.write(tmp_path / "gold.jsonl", tmp_path / "qrels" / "test.tsv")
    gs = load_gold_jsonl(tmp_path / "gold.jsonl")
    assert {g.query for g in gs.queries} == {"red lighthouse", "sourdough"}
    assert (tmp_path / "qrels" / "test.tsv").read_text().startswith("query-id\tcorpus-id\tscore")
    bad = tmp_path / "bad.jsonl"
    _write(bad, [{"query_id": "q", "doc": "x", "thumbs": "meh"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: thumbs 'meh'"):
        LabelBuilder().add_judgements(bad)


def test_weak_goldset_is_deterministic():
    from evals.dataset_builder import build_weak_goldset

    rows = [
        {
            "asset_id": f"a{i}",
            "uri": f"/src/docs/d{i}.md",
            "source": "/src",
            "kind": "document",
            "chunk_index": 0,
            "title": f"Title number {i}",
            "caption": "",
            "tags": "",
            "ocr": "",
        }
        for i in range(20)
    ]
    rows += [
        {
            "asset_id": "img",
            "uri": "/src/images/x.jpg",
            "source": "/src",
            "kind": "image",
            "chunk_index": -1,
            "title": "",
            "caption": "a heron in the reeds\nsecond",
            "tags": "",
            "ocr": "",
        },
        {
            "asset_id": "dup",
            "uri": "/src/docs/copy.md",
            "source": "/src",
            "kind": "document",
            "chunk_index": 0,
            "title": "Title number 3",
            "caption": "",
            "tags": "",
            "ocr": "",
        },
    ]
    a = build_weak_goldset(rows, n=10, seed=1)
    assert a == build_weak_goldset(rows, n=10, seed=1)
    assert a != build_weak_goldset(rows, n=10, seed=2)
    assert len(a) == 10 and all(g == 2 for q in a for g in q.relevant.values())
    full = build_weak_goldset(rows, n=100, seed=1)
    heron = next(q for q in full if q.query == "a heron in the reeds")
    assert heron.relevant == {"images/x.jpg": 2} and heron.query_type == "visual"
    t3 = next(q for q in full if q.query == "Title number 3")
    assert t3.relevant == {"docs/copy.md": 2, "docs/d3.md": 2}


def test_report_writes_markdown_and_pngs(tmp_path):
    from evals.report import write_report

    a = _result([0.8, 0.6, 0.7], [10.0, 12.0, 11.0])
    b = _result([0.9, 0.6, 0.5], [9.0, 14.0, 12.0])
    for r, q in ((a, "keyword"), (b, "keyword")):
        for row in r["per_query"]:
            row["query_type"] = q
    b["provenance"]["engine"] = "bm25"
    path = write_report([a, b], tmp_path / "rep")
    md = path.read_text()
    assert "## By engine / axis" in md and "nDCG@10 by query type" in md
    assert "95% CI" in md and "Gate verdict" in md
    for png in ("metrics.png", "latency.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"
