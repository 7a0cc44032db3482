"""Ingest throughput: the whole pipeline (through Dagster) versus the bare MiniLM encoding.

    python benchmarks/ingest_scifact.py [--limit N] [--exact-texts]

1. Wipes ``var/bench/scifact_ingest`` and exports the corpus there as Markdown files (untimed).
2. Loads the MV model once and warms it up (untimed).
3. *Raw*: ``TextEncoder.encode`` over "title\\ntext" per document, with the pipeline's batch
   size (``Settings.mv_batch_size``), in this process.
4. *Pipeline*: ``materialize_all`` (discover_job, a cpu_job / gpu_job run per profile x shard
   partition with work, publish_job), timed
   from its start until the snapshot is published, in this same process (same cached model).

Prints docs/s of both and their ratio, the number of texts each embedded and the model
tokens they amount to (after truncation to the model's window: what the encoder computes
on), and the pipeline's per-stage seconds read from the Dagster instance's materialization
metadata. ``--exact-texts`` also times the raw encoder on exactly the texts the pipeline
embedded (its chunks with their title header) to separate orchestration overhead from the
difference in texts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import eprint, md_table  # noqa: E402


def pipeline_texts(index: common.BenchIndex) -> list[str]:
    """The texts the pipeline embeds for the exported files (same analyzer, same header)."""
    from rag_pipeline.analysis.analyzers.doc_text import analyze_document
    from rag_pipeline.analysis.profiles import load_profiles
    from rag_pipeline.analysis.worker import embed_text_for
    from rag_pipeline.media_types import MARKDOWN

    profiles = load_profiles(index.settings)
    cfg = profiles.text_profile_for(mv_profile(index.settings)).tasks["doc_text"].config
    texts: list[str] = []
    for stem in sorted(index.mapping):
        path = index.corpus_dir / f"{stem}.md"
        ev = analyze_document(
            path.read_bytes(),
            MARKDOWN,
            path.name,
            chunk_tokens=int(cfg["chunk_tokens"]),
            chunk_overlap=int(cfg["chunk_overlap"]),
        )
        texts += [t for _, t in embed_text_for("doc_text", ev)]
    return texts


def mv_profile(settings):
    """The MV profile the snapshot policy serves (its model is what the pipeline runs)."""
    from rag_pipeline.analysis.profiles import load_profiles

    profiles = load_profiles(settings)
    return profiles[profiles.policy["mv"]]


def model_tokens(encoder, texts: list[str]) -> int:
    """Tokens the model computes on: wordpieces incl. special tokens, truncated to its window."""
    tok = encoder._model.tokenizer  # benchmark-only peek at the sentence-transformers model
    total = 0
    for i in range(0, len(texts), 1024):
        enc = tok(texts[i : i + 1024], truncation=True, max_length=encoder.max_seq_length)
        total += sum(len(ids) for ids in enc["input_ids"])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_dataset_args(parser)
    parser.add_argument(
        "--exact-texts",
        action="store_true",
        help="also time the raw encoder on the pipeline's exact texts",
    )
    args = parser.parse_args(argv)

    ds = common.load_dataset(args.dataset, args.split, args.limit)
    name = common.bench_name(f"{args.dataset}_ingest", args.limit)
    index = common.prepare_corpus(ds, name, fresh=True)
    settings = index.settings
    n_docs = len(ds.corpus)
    eprint(f"[{name}] {n_docs} docs exported to {index.corpus_dir}")

    # Warm-up: load the model (cached per process; the pipeline's workers reuse it) and run it.
    from rag_pipeline.analysis.analyzers.text_embedding import TextEncoder

    t0 = time.perf_counter()
    encoder = TextEncoder.load(mv_profile(settings).model_dir)
    load_s = time.perf_counter() - t0
    raw_texts = [ds.doc_text(d) for d in ds.corpus]
    encoder.encode(raw_texts[:32], batch_size=settings.mv_batch_size)
    import dagster  # noqa: F401  (import costs stay out of both timings)

    import rag_pipeline.definitions  # noqa: F401

    eprint(
        f"model loaded in {load_s:.1f}s; batch size {settings.mv_batch_size}; "
        f"max_seq_length {encoder.max_seq_length}"
    )

    # Raw encoding first.
    eprint(f"raw encode: {len(raw_texts)} texts ...")
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    vecs = encoder.encode(raw_texts, batch_size=settings.mv_batch_size)
    raw_s, raw_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert vecs.shape[0] == len(raw_texts)
    eprint(f"raw encode: {raw_s:.1f}s")

    # The pipeline, through Dagster.
    eprint("pipeline: materialize_all ...")
    c0 = time.process_time()
    index = common.build_index(ds, name)
    pipe_cpu = time.process_time() - c0
    pipe_s = float(index.seconds or 0.0)
    if not index.summary or not index.summary.get("published"):
        eprint("WARNING: no snapshot was published")
    if index.counts.get("failed"):
        eprint(f"WARNING: {index.counts['failed']} analysis task(s) failed")

    texts = pipeline_texts(index)
    n_vectors = int(index.counts.get("vectors", 0))
    if n_vectors != len(texts):
        eprint(f"note: the pipeline stored {n_vectors} vectors, re-derived texts: {len(texts)}")
    raw_tokens, pipe_tokens = model_tokens(encoder, raw_texts), model_tokens(encoder, texts)

    exact_s = exact_cpu = None
    if args.exact_texts:
        eprint(f"raw encode of the pipeline's exact texts: {len(texts)} texts ...")
        t0, c0 = time.perf_counter(), time.process_time()
        encoder.encode(texts, batch_size=settings.mv_batch_size)
        exact_s, exact_cpu = time.perf_counter() - t0, time.process_time() - c0
    load_after = os.getloadavg()[0]

    pipe_rate, raw_rate = n_docs / pipe_s, n_docs / raw_s
    print(
        f"## Ingest throughput: {args.dataset} ({n_docs} docs"
        f"{f', first {args.limit}' if args.limit else ''})\n"
    )
    print(
        f"Machine: {common.machine_info()}. Shards: {settings.shard_count}; MV batch size "
        f"{settings.mv_batch_size}; chunk_tokens {settings.chunk_tokens}.\n"
    )
    print(
        md_table(
            [
                "docs",
                "texts embedded (pipeline / raw)",
                "model tokens (pipeline / raw)",
                "pipeline s",
                "pipeline docs/s",
                "raw encode s",
                "raw docs/s",
                "pipeline/raw",
                "CPU s (pipeline / raw)",
            ],
            [
                [
                    n_docs,
                    f"{n_vectors} / {len(raw_texts)}",
                    f"{pipe_tokens:,} / {raw_tokens:,}",
                    f"{pipe_s:.1f}",
                    f"{pipe_rate:.1f}",
                    f"{raw_s:.1f}",
                    f"{raw_rate:.1f}",
                    f"{pipe_rate / raw_rate:.2f}",
                    f"{pipe_cpu:.1f} / {raw_cpu:.1f}",
                ]
            ],
        )
    )
    print(
        f"\nCPU-time ratio raw/pipeline = {raw_cpu / pipe_cpu:.2f} (process CPU seconds: less "
        f"sensitive to other load than wall time). 1-minute load average: "
        f"{load_before:.2f} before the raw encode, {load_after:.2f} at the end."
    )
    if exact_s is not None:
        exact_rate = n_docs / exact_s
        print(
            f"\nRaw encode of the pipeline's exact {len(texts)} texts (after the pipeline): "
            f"{exact_s:.1f}s, {exact_cpu:.1f} CPU s ({exact_rate:.1f} docs/s); "
            f"pipeline/raw-exact = {pipe_rate / exact_rate:.2f}"
        )

    st = index.stage_seconds
    ct = index.counts
    n_text, n_mv = ct.get("analysis_runs.runs", 0), ct.get("inference_runs.runs", 0)
    stage_rows = [
        ["discover (assets, asset_versions)", st.get("discover", 0.0)],
        [
            f"analysis_runs ({n_text} runs): text analyzers",
            st.get("analysis_runs.text_analyzers", 0.0),
        ],
        [
            "analysis_runs: stage + persist",
            st.get("analysis_runs.stage", 0.0) + st.get("analysis_runs.persist", 0.0),
        ],
        [
            f"inference_runs ({n_mv} runs): text for MV (re-analysis)",
            st.get("inference_runs.text_analyzers", 0.0),
        ],
        ["inference_runs: MV embed", st.get("inference_runs.mv_embed", 0.0)],
        [
            "inference_runs: stage + persist",
            st.get("inference_runs.stage", 0.0) + st.get("inference_runs.persist", 0.0),
        ],
        ["evidence (leftovers, task states)", st.get("evidence", 0.0)],
        ["search_snapshot", st.get("search_snapshot", 0.0)],
    ]
    accounted = (
        st.get("discover", 0.0)
        + st.get("evidence", 0.0)
        + st.get("search_snapshot", 0.0)
        + sum(
            st.get(f"{a}.{k}", 0.0)
            for a in ("analysis_runs", "inference_runs")
            for k in ("total", "persist")
        )
    )
    stage_rows.append(["Dagster runs and everything else", pipe_s - accounted])
    stage_rows.append(["total (materialize_all)", pipe_s])
    runs = len(index.summary["runs"]) if index.summary else 0
    print(
        f"\nPipeline stages ({runs} Dagster runs: discover, {n_text} text + {n_mv} MV "
        f"partition runs, publish; seconds from materialization metadata):\n"
    )
    print(
        md_table(
            ["stage", "seconds", "share"],
            [[r[0], f"{r[1]:.1f}", f"{100 * r[1] / pipe_s:.0f}%"] for r in stage_rows],
        )
    )
    target = "meets" if pipe_rate / raw_rate >= 0.9 else "misses"
    print(f"\npipeline/raw = {pipe_rate / raw_rate:.2f} ({target} the >= 0.9 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
