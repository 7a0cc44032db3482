"""Peak memory and time of publishing a snapshot, at several corpus sizes, before and after.

For each size N a synthetic catalog of N short documents (one chunk each: a title and a chunk of
evidence, a doc_text result and an MV result with a random 384-d vector in the vector store) is
written straight into DuckDB and LanceDB under ``var/bench/publish_memory/<N>`` (no model runs:
publishing reads persisted evidence only). Then, each in a fresh process (peak RSS is
``getrusage(RUSAGE_SELF).ru_maxrss`` of that process):

* ``full``         the first publish (every unit written; streamed batch by batch),
* ``incremental``  after re-analysing ``--change`` of the documents (new results and evidence),
* ``legacy``       the pre-incremental builder (``git show <rev>:rag_pipeline/snapshot/build.py``,
                   one dict per unit, whole table rebuilt) on the same catalog, when ``--legacy``.

    python benchmarks/publish_memory.py --sizes 20000 100000 --legacy 83b20a7

Prints one table: size, step, seconds (publish only, imports excluded), peak RSS and RSS after
the imports (MiB), rows written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ROOT = REPO / "var" / "bench" / "publish_memory"
DIM = 384
WORDS = [
    "protein",
    "cell",
    "gene",
    "signal",
    "tissue",
    "vector",
    "immune",
    "model",
    "receptor",
    "pathway",
    "dose",
    "trial",
    "patient",
    "effect",
    "factor",
    "growth",
    "level",
    "response",
    "virus",
    "binding",
    "expression",
    "mouse",
    "human",
    "clinical",
]


def _env(n: int) -> dict[str, str]:
    base = ROOT / str(n)
    (base / "src").mkdir(parents=True, exist_ok=True)
    return {
        "RAG_DATA_DIR": str(base / "data"),
        "RAG_SOURCES": str(base / "src"),
        "RAG_SMOKE_GOLD": "off",
        "LANCEDB_LOG": "error",
    }


def _keys(settings) -> dict[str, str]:
    from rag_pipeline.analysis.profiles import load_profiles
    from rag_pipeline.contracts import stable_hash

    profiles = load_profiles(settings)
    text = profiles[profiles.policy["text"]].tasks["doc_text"]
    mv = profiles[profiles.policy["mv"]].tasks["mv_embed"]
    return {
        "doc_key": text.model.key,
        "doc_cfg": stable_hash(text.config),
        "mv_key": mv.model.key,
        "mv_cfg": stable_hash(mv.config),
    }


def _sql(cat, sql: str, params: dict) -> None:
    """DuckDB wants exactly the parameters a statement names."""
    cat.con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})


def _results(cat, keys: dict[str, str], lo: int, hi: int, gen: int) -> None:
    """Results, evidence and vectors of documents lo..hi-1 (generation ``gen``: a re-analysis
    writes new result keys, so their units change)."""
    import numpy as np

    from rag_pipeline.settings import Settings
    from rag_pipeline.storage.vector_store import VectorStore

    p = {"lo": lo, "hi": hi, "gen": gen, **keys}
    rng = "FROM range($lo, $hi) t(i)"
    _sql(
        cat,
        "INSERT INTO results SELECT 'doc-' || $gen || '-' || i, 'default', lpad(i::VARCHAR, 64, "
        "'0'), 'doc_text', 'text-v1', $doc_key, $doc_cfg, NULL, 'run-doc-' || $gen, 'ok', NULL, "
        f"false, 'x', 2, 0, now() + to_seconds($gen) {rng}",
        p,
    )
    _sql(
        cat,
        "INSERT INTO results SELECT 'mv-' || $gen || '-' || i, 'default', lpad(i::VARCHAR, 64, "
        "'0'), 'mv_embed', 'minilm-l6', $mv_key, $mv_cfg, 'doc-' || $gen || '-' || i, "
        f"'run-mv-' || $gen, 'ok', NULL, false, 'x', 0, 1, now() + to_seconds($gen) {rng}",
        p,
    )
    words = "[" + ", ".join(f"'{w}'" for w in WORDS) + "]"
    for kind, ordinal, text in (
        ("title", 0, f"'Document ' || i || ' ' || {words}[1 + i % {len(WORDS)}]"),
        (
            "chunk",
            0,
            f"list_aggregate(list_transform(range(40), lambda x: {words}[1 + (i * 7 + x * 13) % "
            f"{len(WORDS)}]), 'string_agg', ' ')",
        ),
    ):
        _sql(
            cat,
            f"INSERT INTO evidence_text SELECT 'ev-{kind}-' || $gen || '-' || i, 'default', "
            "lpad(i::VARCHAR, 64, '0'), 'doc-' || $gen || '-' || i, 'run-doc-' || $gen, "
            f"'doc_text', '{kind}', {ordinal}, {text}, 1.0, '{{}}' {rng}",
            p,
        )
    store = VectorStore(Settings.from_env().lance_dir)
    gen_rng = np.random.default_rng(gen * 1_000_003 + lo)
    for start in range(lo, hi, 20000):
        end = min(start + 20000, hi)
        vec = gen_rng.standard_normal((end - start, DIM)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        ids = [f"mv-{gen}-{i}" for i in range(start, end)]
        store.append(
            "mv",
            DIM,
            {
                "evidence_id": ids,
                "tenant_id": ["default"] * len(ids),
                "asset_id": [f"{i:064d}" for i in range(start, end)],
                "dedupe_key": ids,
                "run_id": [f"run-mv-{gen}"] * len(ids),
                "axis": ["mv"] * len(ids),
                "target": ["chunk:0"] * len(ids),
                "dim": [DIM] * len(ids),
                "vector": vec,
                "norm": [1.0] * len(ids),
                "checksum": ["x"] * len(ids),
            },
            batch_rows=5000,
        )


def setup(n: int) -> None:
    from rag_pipeline.settings import Settings
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = Settings.from_env()
    keys = _keys(settings)
    src = settings.sources[0]
    with open_settings_catalog(settings) as cat:
        if cat.scalar("SELECT count(*) FROM results"):
            return
        for gen, kind in ((1, "doc_text"), (1, "mv_embed")):
            cat.con.execute(
                "INSERT INTO analysis_runs VALUES (?, 'default', ?, 'p', 'b', 'm', 'r', 'f32', "
                "'', 'w', 'k', '{}', 'c', 'pk', NULL, now(), now(), 1, 0, 0, 0, 0, 0, 0, "
                "'persisted', now())",
                [f"run-{'doc' if kind == 'doc_text' else 'mv'}-{gen}", kind],
            )
        _sql(
            cat,
            "INSERT INTO asset_versions SELECT 'default', 'v' || i, lpad(i::VARCHAR, 64, '0'), "
            "$src || '/d' || i || '.md', $src, 'd' || i || '.md', 100, 1700000000000000000, "
            "lpad(i::VARCHAR, 64, '0'), 'text/markdown', '', now(), now(), NULL, NULL, true, "
            "'src', ['all'] FROM range(0, $n) t(i)",
            {"src": str(src), "n": n},
        )
        _results(cat, keys, 0, n, 1)


def change(n: int, fraction: float) -> int:
    """Re-analyse the first ``fraction`` of the documents: new results, evidence, vectors."""
    from rag_pipeline.settings import Settings
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = Settings.from_env()
    k = max(1, int(n * fraction))
    with open_settings_catalog(settings) as cat:
        gen = int(cat.scalar("SELECT count(DISTINCT run_id) FROM results")) // 2 + 1
        for kind in ("doc", "mv"):
            cat.con.execute(
                "INSERT INTO analysis_runs SELECT ?, 'default', analyzer, profile, backend, "
                "model_id, revision, dtype, quantization, weights_checksum, model_key, config, "
                "config_hash, partition_key, NULL, now(), now(), 1, 0, 0, 0, 0, 0, 0, "
                "'persisted', now() FROM analysis_runs WHERE run_id = ?",
                [f"run-{kind}-{gen}", f"run-{kind}-1"],
            )
        _results(cat, _keys(settings), 0, k, gen)
    return k


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def publish(mode: str, legacy_file: str | None) -> dict:
    from rag_pipeline.settings import Settings
    from rag_pipeline.snapshot.build import build_snapshot
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = Settings.from_env()
    base_rss = _rss_mib()  # after the imports: lancedb, pyarrow, duckdb, pydantic
    t0 = time.perf_counter()
    with open_settings_catalog(settings) as cat:
        if legacy_file:
            spec = importlib.util.spec_from_file_location("legacy_build", legacy_file)
            assert spec and spec.loader
            mod = importlib.util.module_from_spec(spec)
            sys.modules["legacy_build"] = mod  # dataclasses look their module up
            spec.loader.exec_module(mod)
            res = mod.build_snapshot(settings, cat, force=True)
            rows = res.manifest.n_units
        else:
            res = build_snapshot(settings, cat, full=mode == "full")
            st = res.manifest.stats
            rows = st.get("rows_upserted", 0) + st.get("rows_deleted", 0)
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "base_rss_mib": round(base_rss, 1),
        "rows_written": rows,
        "units": res.manifest.n_units,
        "mode": res.manifest.stats.get("publish_mode", "legacy"),
    }


def _child(args: list[str], n: int) -> dict:
    env = os.environ | _env(n) | {"PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, __file__, *args], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1] or "{}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000])
    ap.add_argument("--change", type=float, default=0.001, help="fraction re-analysed")
    ap.add_argument("--legacy", metavar="REV", help="also run the builder of git revision REV")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--legacy-file", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.step == "setup":
        setup(a.n)
        print("{}")
        return
    if a.step == "change":
        print(json.dumps({"changed": change(a.n, a.change)}))
        return
    if a.step in ("full", "incremental", "legacy"):
        print(json.dumps(publish(a.step, a.legacy_file)))
        return

    legacy_file = None
    if a.legacy:
        legacy_file = str(ROOT / f"legacy_build_{a.legacy}.py")
        ROOT.mkdir(parents=True, exist_ok=True)
        src = subprocess.run(
            ["git", "show", f"{a.legacy}:rag_pipeline/snapshot/build.py"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        Path(legacy_file).write_text(src)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"{'units':>8} {'step':<12} {'seconds':>8} {'peak RSS MiB':>13} {'after imports':>14} "
        f"{'rows written':>13}"
    )
    for n in a.sizes:
        _child(["--step", "setup", "--n", str(n)], n)
        steps = [("full", [])]
        steps.append(("incremental", ["--change", str(a.change)]))
        if legacy_file:
            steps.append(("legacy", ["--legacy-file", legacy_file]))
        for step, extra in steps:
            if step == "incremental":
                _child(["--step", "change", "--n", str(n), "--change", str(a.change)], n)
            r = _child(["--step", step, "--n", str(n), *extra], n)
            print(
                f"{n:>8} {step:<12} {r['seconds']:>8} {r['peak_rss_mib']:>13} "
                f"{r['base_rss_mib']:>14} {r['rows_written']:>13}",
                flush=True,
            )


if __name__ == "__main__":
    main()
