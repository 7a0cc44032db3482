"""The pipeline at scale: N synthetic short documents (and a small share of images) through the
real pipeline, with a random text model of MiniLM's shape (384 dimensions, so vector storage and
search cost what MiniLM's would; its weights are random, so no quality is measured here).

Prints, side by side:
  full publish         materialize from scratch: wall time, peak RSS of this process and its
                       children (the partition runs)
  incremental publish  materialize again after 0.1% of the files changed: one run per partition,
                       then shards packed into runs (RAG_TASKS_PER_RUN), each after its own edit
  no-op materialize    materialize with nothing changed
  discovery            scan() of the unchanged tree
  search p50/p95/p99   hybrid, BM25 (fts), MV (Searcher.search), LanceDB's built-in hybrid, and
                       the numpy exact floor (one matrix product over every MV vector, the query
                       already embedded)
  storage              catalog (DuckDB) and vector store + snapshots (LanceDB) size, total and
                       per 100k units

Usage: python benchmarks/scale.py [--docs 20000] [--image-share 0.005] [--queries 200]
       [--launch in_process|backfill] [--shards 16] [--root var/bench/scale-<docs>]
100k: --docs 100000 --shards 64; 1M: --docs 1000000 --shards 256 --launch backfill (a machine
with cores to spare, a few hours; the corpus alone is ~1M files and ~0.5 GB).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import common  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

WORDS = [
    *[
        "otter",
        "kiln",
        "varroa",
        "lighthouse",
        "stoneware",
        "crayfish",
        "pebble",
        "glaze",
        "harbor",
        "dusk",
        "beehive",
    ],
    *[
        "colony",
        "winter",
        "cluster",
        "honey",
        "ferry",
        "granite",
        "tide",
        "marsh",
        "heron",
        "salt",
        "mill",
        "grain",
        "barley",
    ],
    *[
        "copper",
        "anvil",
        "forge",
        "river",
        "delta",
        "orchard",
        "cider",
        "frost",
        "lantern",
        "market",
        "sign",
        "rockfall",
    ],
    *[
        "trail",
        "summit",
        "glacier",
        "moss",
        "lichen",
        "fern",
        "spruce",
        "cedar",
        "basalt",
        "quarry",
        "canal",
        "lock",
        "barge",
    ],
    *["loom", "wool", "dye", "indigo", "madder"],
]


def make_corpus(root: Path, n_docs: int, image_share: float, seed: int = 0) -> list[Path]:
    """n_docs files, 1,000 per folder: short Markdown/text documents and a few PNG images with
    a description sidecar. Returns the document paths (the incremental step edits some)."""
    from PIL import Image

    rng = random.Random(seed)
    docs: list[Path] = []
    for i in range(n_docs):
        folder = root / f"f{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        topic = rng.sample(WORDS, 3)
        if rng.random() < image_share:
            path = folder / f"img{i:07d}.png"
            colour = tuple(rng.randrange(256) for _ in range(3))
            Image.new("RGB", (64, 48), colour).save(path)
            (folder / f"img{i:07d}.png.txt").write_text(f"A photo of the {' '.join(topic)}.\n")
            continue
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120)))
        path = folder / f"doc{i:07d}.{'md' if i % 2 else 'txt'}"
        title = f"# {topic[0].title()} and {topic[1]}\n\n" if i % 2 else ""
        path.write_text(f"{title}{' '.join(topic)}: {body}.\n")
        docs.append(path)
    return docs


def random_text_model(out: Path, layers: int) -> Path:
    """A sentence-transformers model of MiniLM's width (hidden 384, ``layers`` layers, MiniLM's
    vocabulary), random weights, built from a config (nothing downloaded)."""
    if (out / "modules.json").exists():
        return out
    from rag_pipeline.testing.random_models import build_random_sentence_model

    return build_random_sentence_model(
        out, hidden=384, layers=layers, heads=12, intermediate=1536, max_position=512
    )


MODELS_YAML = """version: 1
profiles:
  - name: text-v1
    analyzer: text
  - name: random-384
    analyzer: mv_embed
    description: random weights, all-MiniLM-L6-v2's shape (benchmarks/scale.py)
    model: {{backend: sentence-transformers, model_dir: {model_dir}, model_id: random-384}}
    config: {{text_profile: text-v1}}
policy:
  text: text-v1
  mv: random-384
"""


def peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--image-share", type=float, default=0.005)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--launch", choices=["in_process", "backfill"], default="in_process")
    ap.add_argument("--root", type=Path, default=None)
    # 2 layers by default: the model's time would otherwise hide the pipeline's own costs
    # (MiniLM has 6; vector width, storage and search cost the same either way).
    ap.add_argument("--layers", type=int, default=2, help="layers of the random text model")
    args = ap.parse_args()
    root = (args.root or common.BENCH_ROOT / f"scale-{args.docs}").absolute()
    shutil.rmtree(root, ignore_errors=True)
    corpus = root / "corpus"
    t0 = time.perf_counter()
    docs = make_corpus(corpus, args.docs, args.image_share)
    common.eprint(f"corpus: {args.docs} files in {time.perf_counter() - t0:.0f} s")
    model_dir = random_text_model(common.BENCH_ROOT / f"random-384-l{args.layers}", args.layers)
    (root / "models.yaml").write_text(MODELS_YAML.format(model_dir=model_dir))
    os.environ["RAG_SHARDS"] = str(args.shards)
    os.environ["RAG_MODELS_FILE"] = str(root / "models.yaml")
    common.configure_environment(root, corpus)

    import dagster as dg
    import numpy as np

    from rag_pipeline.definitions import defs
    from rag_pipeline.discovery.scanner import scan
    from rag_pipeline.launcher import materialize_all
    from rag_pipeline.settings import Settings
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = Settings.from_env()
    rows: list[list] = []

    def materialize(label: str) -> dict:
        with dg.DagsterInstance.get() as instance:
            t = time.perf_counter()
            summary = materialize_all(
                defs, instance=instance, log=common.eprint, launch=args.launch
            )
            secs = time.perf_counter() - t
        own, kids = peak_rss_mb()
        rows.append(
            [
                label,
                f"{secs:.1f} s",
                f"{len(summary['partitions'])} partitions, {len(summary['runs'])} runs",
                f"peak RSS {own:.0f} MB (largest child process {kids:.0f} MB)",
            ]
        )
        return summary

    materialize("full publish")
    rng = random.Random(1)
    # The same 0.1% change twice: one run per partition (a task budget of 1, what the launcher
    # did before it packed shards into runs), then packed (the default budget).
    for label, budget in (("one run per partition", "1"), ("packed runs", None)):
        changed = rng.sample(docs, max(1, len(docs) // 1000))
        for p in changed:
            p.write_text(p.read_text() + f" edited {rng.random()}\n")
        if budget:
            os.environ["RAG_TASKS_PER_RUN"] = budget
        materialize(f"incremental publish ({len(changed)} files changed, {label})")
        os.environ.pop("RAG_TASKS_PER_RUN", None)
    materialize("no-op materialize")
    with open_settings_catalog(settings) as cat:
        t = time.perf_counter()
        rep = scan(settings, cat)
        rows.append(
            [
                "discovery (unchanged)",
                f"{time.perf_counter() - t:.1f} s",
                f"{rep.unchanged} files",
                "",
            ]
        )

    from evals.baselines.lancedb_hybrid import lancedb_hybrid
    from evals.runner import eval_principal
    from serving.cache import no_vector_cache
    from serving.searcher import Searcher

    searcher = Searcher.from_settings(settings, query_cache=no_vector_cache())
    who = eval_principal(searcher)
    n_units = int(searcher.table.count_rows())
    mv = searcher.table.search().select(["vector_mv"]).limit(n_units).to_arrow()
    matrix = np.asarray(mv.column("vector_mv").to_pylist(), dtype=np.float32)
    qrng = random.Random(2)
    queries = [" ".join(qrng.sample(WORDS, qrng.randint(1, 4))) for _ in range(args.queries)]
    qvecs = [np.asarray(searcher.encoder.encode_query(q), dtype=np.float32) for q in queries]
    k = 10
    methods = {
        "hybrid": lambda i: searcher.search(queries[i], who, k=k),
        "BM25 (fts)": lambda i: searcher.search(queries[i], who, k=k, axes=["fts"]),
        "MV": lambda i: searcher.search(queries[i], who, k=k, axes=["mv"]),
        "LanceDB built-in hybrid": lambda i: lancedb_hybrid(searcher, queries[i], who, k=k),
        "numpy exact floor (MV)": lambda i: np.argpartition(-(matrix @ qvecs[i]), k)[:k],
    }
    for i in range(min(10, len(queries))):  # warm-up
        for fn in methods.values():
            fn(i)
    search_rows = []
    mv_stage: list[float] = []  # the MV axis' own search (no query encoding): vs the floor
    for name, fn in methods.items():
        ms = []
        for i in range(len(queries)):
            t = time.perf_counter()
            out = fn(i)
            ms.append((time.perf_counter() - t) * 1000)
            if name == "MV":
                mv_stage.append(float(out.timings_ms.get("mv", 0.0)))
        st = common.latency_stats(ms)
        search_rows.append([name, f"{st['p50']:.1f}", f"{st['p95']:.1f}", f"{st['p99']:.1f}"])
    st = common.latency_stats(mv_stage)
    search_rows.append(
        ["MV axis search alone (timings_ms.mv)", *(f"{st[p]:.1f}" for p in ("p50", "p95", "p99"))]
    )

    cat_mb = settings.catalog_path.stat().st_size / 2**20
    lance_mb = dir_mb(settings.lance_dir) + dir_mb(settings.snapshots_dir)
    per = 100_000 / max(n_units, 1)
    load = os.getloadavg()
    print(
        f"## Scale: {args.docs} files ({args.image_share:.1%} images), {args.shards} shards, "
        f"launch={args.launch}, {n_units} units"
    )
    print(common.machine_info() + f"; load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}\n")
    print(common.md_table(["step", "time", "work", "memory"], rows, "llll"))
    print()
    print(common.md_table(["search (k=10)", "p50 ms", "p95 ms", "p99 ms"], search_rows))
    print()
    print(
        common.md_table(
            ["store", "MB", "MB per 100k units"],
            [
                ["catalog (DuckDB)", f"{cat_mb:.0f}", f"{cat_mb * per:.0f}"],
                ["vectors + snapshots (LanceDB)", f"{lance_mb:.0f}", f"{lance_mb * per:.0f}"],
            ],
        )
    )


if __name__ == "__main__":
    main()
