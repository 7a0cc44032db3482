"""`rag-pipeline eval` end to end on a small BEIR folder with a split never seen before: index
through the real pipeline (Dagster), evaluate per engine, compare with gates, report, and a
weak gold set built from the published snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_pipeline.cli import main as rag_pipeline_main
from rag_pipeline.settings import packaged_file

REPO = Path(__file__).resolve().parents[1]


def eval_main(argv: list[str]) -> int:
    """``rag-pipeline eval ...``: the full entry, which indexes through the pipeline."""
    return rag_pipeline_main(["eval", *argv])


DOCS = {
    "d1": (
        "Varroa mites in honey bee colonies",
        "Oxalic acid treatment in winter reduces varroa mite loads in broodless colonies.",
    ),
    "d2": (
        "Sourdough starter maintenance",
        "Feed the starter flour and water daily; a mature levain doubles within six hours.",
    ),
    "d3": (
        "Hohmann transfer orbits",
        "A Hohmann transfer uses two engine burns to move a "
        "spacecraft between circular orbits with minimal delta-v.",
    ),
    "d4": ("Knitting socks", "The Kitchener stitch grafts the toe of a sock invisibly."),
    "d5": (
        "Solar panels on roofs",
        "Photovoltaic modules convert sunlight into electricity; inverters feed it to the grid.",
    ),
    "d6": ("Tide pools", "Sea stars and anemones live in rocky tide pools at low tide."),
}
QUERIES = {
    "1": "treating varroa with oxalic acid",
    "2": "how to keep a sourdough levain alive",
    "3": "minimal delta-v orbit change",
    "4": "grafting a sock toe",
    "5": "rooftop photovoltaics",
    "6": "creatures of rocky shores",
}


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n" for k, (t, x) in DOCS.items())
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items())
    )
    (root / "qrels" / "holdout-2.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{i}\td{i}\t1\n" for i in range(1, 7))
    )
    return root


@pytest.mark.slow
def test_eval_run_compare_report_on_any_beir_folder(pipeline_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_MODELS_FILE", str(packaged_file("models.yaml")))
    ds = _beir(tmp_path / "tinybeir")
    work = tmp_path / "work"
    outs = {}
    for engine in ("hybrid", "bm25", "mv", "vv", "lancedb-hybrid"):
        out = tmp_path / f"{engine}.json"
        args = [
            "run",
            "--dataset",
            str(ds),
            "--split",
            "holdout-2",
            "--engine",
            engine,
            "--out",
            str(out),
            "--workdir",
            str(work),
        ]
        if engine != "hybrid":
            args.append("--no-index")  # the first run indexed; later ones reuse it
        assert eval_main(args) == 0
        outs[engine] = json.loads(out.read_text())
    res = outs["hybrid"]
    assert res["n_queries"] == 6
    assert set(res["metrics"]) >= {
        "ndcg@10",
        "recall@50",
        "recall@100",
        "mrr@10",
        "precision@5",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "error_rate",
        "cpu_s_per_1k_queries",
    }
    assert res["metrics"]["ndcg@10"] > 0.6 and res["metrics"]["error_rate"] == 0.0
    q = res["per_query"][0]
    assert q["ranked"][0].startswith("d") and q["latency_ms"] > 0 and "ndcg@10" in q["metrics"]
    prov = res["provenance"]
    assert prov["engine"] == "hybrid" and prov["split"] == "holdout-2"
    assert prov["snapshot_id"] and prov["models"]["mv"]["model_id"]
    assert prov["fusion_weights"]["keyword"]["fts"] > 0 and prov["rrf_k"] == 60
    assert prov["git_commit"] is None or len(prov["git_commit"]) == 40
    assert outs["vv"]["metrics"]["error_rate"] == 1.0  # no visual axis served: every query errs
    assert "AxisUnavailable" in outs["vv"]["per_query"][0]["error"]
    assert outs["lancedb-hybrid"]["metrics"]["recall@100"] == 1.0

    # compare: identical -> PASS (exit 0); the vv run (all errors) -> BLOCK (exit 1)
    capsys.readouterr()
    cmp_out = tmp_path / "cmp.json"
    assert (
        eval_main(
            [
                "compare",
                str(tmp_path / "hybrid.json"),
                str(tmp_path / "hybrid.json"),
                "--out",
                str(cmp_out),
            ]
        )
        == 0
    )
    assert "verdict: PASS" in capsys.readouterr().out
    assert json.loads(cmp_out.read_text())["diffs"]["ndcg@10"]["diff"] == 0.0
    assert eval_main(["compare", str(tmp_path / "hybrid.json"), str(tmp_path / "vv.json")]) == 1
    text = capsys.readouterr().out
    assert "verdict: BLOCK" in text and "error_rate" in text and "95% CI" in text

    # report
    assert (
        eval_main(
            [
                "report",
                *(str(tmp_path / f"{e}.json") for e in ("hybrid", "bm25", "mv", "lancedb-hybrid")),
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| hybrid@" in md and "| bm25@" in md and "metrics.png" in md
    assert (tmp_path / "report" / "metrics.png").stat().st_size > 1000

    # a weak gold set from the published snapshot's titles, then evaluated on the same index
    gold = tmp_path / "weak.jsonl"
    assert (
        eval_main(
            [
                "build-gold",
                "--data-dir",
                str(work / "data"),
                "--out",
                str(gold),
                "-n",
                "4",
                "--strategy",
                "title",
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in gold.read_text().splitlines()]
    assert len(lines) == 4 and all(list(x["relevant"].values()) == [2] for x in lines)
    assert (
        eval_main(
            [
                "run",
                "--dataset",
                str(work / "corpus"),
                "--gold",
                str(gold),
                "--workdir",
                str(work),
                "--no-index",
                "--out",
                str(tmp_path / "weak_res.json"),
            ]
        )
        == 0
    )
    weak = json.loads((tmp_path / "weak_res.json").read_text())
    assert weak["metrics"]["mrr@10"] == 1.0  # a file's own title finds it first


def test_eval_run_errors_are_clear(tmp_path, capsys):
    assert eval_main(["run", "--dataset", str(tmp_path)]) == 2
    assert "is not a BEIR folder" in capsys.readouterr().err
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"query_id": "q", "query": "x", "relevant": {"a": 5}}\n')
    assert eval_main(["run", "--dataset", str(tmp_path), "--gold", str(bad)]) == 2
    assert f"{bad}:1: relevant" in capsys.readouterr().err
