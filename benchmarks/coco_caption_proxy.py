"""COCO caption proxy: text-to-image retrieval while no vision model is at hand.

    python benchmarks/coco_caption_proxy.py [--engines hybrid,bm25,mv,lancedb-hybrid]

Each of coco_mini's 239 images is copied to ``var/evals/coco_mini/corpus/<split>/<name>.jpg``
with a sidecar ``<name>.jpg.txt`` holding its caption 0 (imported as the image's description,
as a photo manager's caption would be); captions 1-4 are the queries (956), each with its own
image as the one relevant document. The folder is indexed through the real pipeline (Dagster)
into ``var/evals/coco_mini/data`` (unchanged files are not re-analysed on a rerun) and every
query is run per engine; Recall@1/5/10 and MRR@10 are printed as a Markdown table. The gold set
is also written as extended JSONL (``var/evals/coco_mini/gold.jsonl``), so

    rag-pipeline eval run --dataset var/evals/coco_mini/corpus \
        --gold var/evals/coco_mini/gold.jsonl --workdir var/evals/coco_mini --engine bm25

evaluates the same thing. Data is read from ``$RAG_SHARED_DATA/coco_mini`` (default
``<repo>/../shared/data``), never copied into the repository (``var/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LANCEDB_LOG", "error")

from evals.goldsets import GoldQuery, GoldSet, write_gold_jsonl  # noqa: E402

METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10")
ROOT = REPO / "var" / "evals" / "coco_mini"


def shared_data() -> Path:
    from rag_pipeline.settings import Settings

    path = Settings().shared_data
    return path if path.is_absolute() else REPO / path


def export(src: Path, corpus: Path) -> list[GoldQuery]:
    """Copy images + caption-0 sidecars (only when changed); captions 1-4 as gold queries."""
    queries: list[GoldQuery] = []
    for line in (src / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        rel = Path(row["image"]).relative_to("images").as_posix()  # train2017/0000...jpg
        img, dst = src / row["image"], corpus / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists() or dst.stat().st_size != img.stat().st_size:
            shutil.copyfile(img, dst)
        side = dst.with_name(dst.name + ".txt")
        text = row["captions"][0].strip() + "\n"
        if not side.exists() or side.read_text(encoding="utf-8") != text:
            side.write_text(text, encoding="utf-8")
        for i, cap in enumerate(row["captions"][1:5], start=1):
            queries.append(
                GoldQuery(
                    query_id=f"{row['image_id']}_{i}",
                    query=cap.strip(),
                    query_type="visual",
                    relevant={rel: 1},
                )
            )
    return queries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="hybrid,bm25,mv,lancedb-hybrid")
    ap.add_argument("--limit-queries", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results"), help="result JSON folder")
    args = ap.parse_args(argv)

    src = shared_data() / "coco_mini"
    if not src.is_dir():
        raise SystemExit(f"{src} not found (set RAG_SHARED_DATA)")
    corpus = ROOT / "corpus"
    queries = export(src, corpus)
    write_gold_jsonl(ROOT / "gold.jsonl", queries)
    gold = GoldSet(
        name="coco_mini",
        kind="jsonl",
        queries=queries,
        path=ROOT / "gold.jsonl",
        split="captions1-4",
    ).limit(args.limit_queries)

    from evals import runner

    runner.configure_environment(ROOT, [corpus])
    t0 = time.perf_counter()
    from rag_pipeline.launcher import materialize_configured

    summary = materialize_configured(log=lambda *a: print(*a, file=sys.stderr))
    print(
        f"indexed in {time.perf_counter() - t0:.0f}s: snapshot {summary['snapshot_id']}",
        file=sys.stderr,
    )
    searcher = runner.open_searcher(ROOT / "data")
    mapper = runner.DocMapper(roots=[corpus])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for engine in args.engines.split(","):
        res = runner.evaluate_searcher(
            searcher, gold, mapper, engine=engine, metrics=(*METRICS, "ndcg@10")
        )
        (out / f"{engine}.json").write_text(json.dumps(res, indent=1, default=str))
        m = res["metrics"]
        rows.append(
            [
                engine,
                *(f"{m[k]:.4f}" for k in METRICS),
                f"{m['latency_p50_ms']:.1f}",
                f"{m['latency_p95_ms']:.1f}",
                f"{m['error_rate']:.3f}",
            ]
        )
        print(f"{engine}: " + ", ".join(f"{k}={m[k]:.4f}" for k in METRICS), file=sys.stderr)
    searcher.close()
    from evals.report import md_table

    print(
        f"## COCO caption proxy ({len(gold.queries)} queries: captions 1-4; caption 0 as "
        f"sidecar description; {summary['snapshot_id']})\n"
    )
    print(md_table(["engine", *METRICS, "p50 ms", "p95 ms", "error rate"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
