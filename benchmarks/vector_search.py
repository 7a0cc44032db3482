"""Vector axis latency and recall at 100k units: Lance flat scan, the exact in-memory path
serving uses below the ANN threshold (``serving.axes.ExactVectors``), Lance ANN indexes
(IVF_PQ, IVF_HNSW_SQ, IVF_RQ, each with refine, its query parameters tuned to recall@10 >=
``--target`` with and without filters; build seconds and on-disk size) and the numpy floor
(``M @ q`` + argpartition, no filter, no bookkeeping), side by side in one run.

Vectors: the SciFact corpus (``$RAG_SHARED_DATA/scifact``) embedded with the packaged MiniLM
(cached under ``var/bench/vector_search``), grown to ``--units`` rows by noisy copies of the
documents (cosine ~0.85 to their original: clustered like real chunks of related documents,
unlike uniform random vectors, on which every ANN index looks worse than it is). Rows carry a
tenant (``--tenants``, even split) and an ACL group (``--groups``): the prefilters are
``tenant_id = 't1'`` and ``tenant_id = 't1' AND array_has_any(acl_groups, ['g1'])``. Queries:
SciFact train queries embedded by the same model. Recall@10 is the overlap of an ANN query's
top 10 with the exact top 10 under the same filter; every query asks for ``--depth``
candidates (the searcher's per-axis depth).

    OMP_NUM_THREADS=1 python benchmarks/vector_search.py --units 100000 --queries 200 --docs 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import eprint, load_dataset  # noqa: E402

ROOT = REPO / "var" / "bench" / "vector_search"

# (label, create_index kwargs, query parameter candidates from cheapest to dearest): per index,
# the first candidate whose recall@10 vs exact is >= ``--target`` under every filter (on a
# quarter of the queries) is the one measured; the sweep is printed too.
ANN = [
    (
        "IVF_PQ",
        {"index_type": "IVF_PQ", "num_partitions": 256, "num_sub_vectors": 48},
        [
            {"minimum_nprobes": n, "refine_factor": r}
            for n, r in ((8, 5), (16, 5), (16, 10), (32, 10), (64, 10), (64, 20), (128, 20))
        ],
    ),
    (
        "IVF_HNSW_SQ",
        {"index_type": "IVF_HNSW_SQ", "num_partitions": 64, "m": 16, "ef_construction": 150},
        [
            {"minimum_nprobes": n, "ef": 150, "refine_factor": r}
            for n, r in ((4, 2), (4, 4), (8, 4), (16, 4), (16, 10), (32, 10))
        ],
    ),
    (
        "IVF_RQ",
        {"index_type": "IVF_RQ", "num_partitions": 256, "num_bits": 1},
        [
            {"minimum_nprobes": n, "refine_factor": r}
            for n, r in ((8, 5), (16, 5), (16, 10), (32, 10), (64, 10), (64, 20), (128, 20))
        ],
    ),
]


def index_bytes(ds: Any, column: str) -> int:
    """On-disk size of the vector index on ``column`` (its files under ``_indices/<uuid>``)."""
    root = Path(ds.uri) / "_indices"
    total = 0
    for idx in ds.describe_indices():
        if column in idx.field_names:
            for seg in idx.segments:
                total += sum(f.stat().st_size for f in (root / seg.uuid).rglob("*") if f.is_file())
    return total


def embeddings(n_docs: int | None, n_queries: int) -> tuple[Any, Any]:
    import numpy as np

    from rag_pipeline.analysis.analyzers.text_embedding import TextEncoder
    from rag_pipeline.settings import Settings

    ROOT.mkdir(parents=True, exist_ok=True)
    docs_f = ROOT / f"scifact_docs_{n_docs or 'all'}.npy"
    queries_f = ROOT / f"scifact_queries_{n_queries}.npy"
    if docs_f.exists() and queries_f.exists():
        return np.load(docs_f), np.load(queries_f)
    ds = load_dataset("scifact", "train")
    enc = TextEncoder.load(Settings().mv_model_dir)
    texts = [f"{d['title']}\n{d['text']}"[:2000] for d in ds.corpus.values()][:n_docs]
    t0 = time.perf_counter()
    docs = enc.encode(texts).astype(np.float32)
    queries = enc.encode(list(ds.queries.values())[:n_queries]).astype(np.float32)
    eprint(
        f"embedded {len(texts)} docs, {len(queries)} queries in {time.perf_counter() - t0:.0f} s"
    )
    np.save(docs_f, docs)
    np.save(queries_f, queries)
    return docs, queries


def grow(docs: Any, n: int, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    base = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    out[: len(base)] = base[:n]
    if n > len(base):
        src = base[rng.integers(0, len(base), n - len(base))]
        noise = rng.standard_normal(src.shape).astype(np.float32)
        noise *= 0.6 / np.linalg.norm(noise, axis=1, keepdims=True)
        out[len(base) :] = src + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def build_table(mat: Any, tenants: int, groups: int) -> Any:
    import lancedb
    import pyarrow as pa
    from lancedb.index import BTree, LabelList

    path = ROOT / f"lance-{len(mat)}"
    shutil.rmtree(path, ignore_errors=True)
    db = lancedb.connect(str(path))
    n, dim = mat.shape
    idx = range(n)
    table = pa.table(
        {
            "unit_id": [f"u{i}" for i in idx],
            "tenant_id": [f"t{i % tenants}" for i in idx],
            "acl_groups": [[f"g{(i // tenants) % groups}"] for i in idx],
            "has_mv": [True] * n,
            "vector_mv": pa.FixedSizeListArray.from_arrays(pa.array(mat.ravel()), dim),
        }
    )
    tbl = db.create_table("units", table)
    tbl.create_index("tenant_id", config=BTree())
    tbl.create_index("acl_groups", config=LabelList())
    return tbl


class _Rows(list):
    def append(self, row) -> None:
        super().append(row)
        eprint(f"| {row[0]} | {row[1]} | {row[2]:.2f} | {row[3]:.2f} | {row[4]} |")


def timed(fn, queries) -> tuple[list[float], list[Any]]:
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append((time.perf_counter() - t0) * 1000)
    return times, results


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--depth", type=int, default=100, help="candidates per query")
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--docs", type=int, default=None, help="embed only the first N docs")
    ap.add_argument("--ann", nargs="*", default=[a[0] for a in ANN], help="ANN kinds to try")
    ap.add_argument("--target", type=float, default=0.95, help="recall@10 each index is tuned to")
    a = ap.parse_args()

    import numpy as np

    from serving.axes import ExactVectors, vector_candidates

    docs, qs = embeddings(a.docs, a.queries)
    mat = grow(docs, a.units)
    queries = [q / np.linalg.norm(q) for q in qs[: a.queries].astype(np.float32)]
    eprint(f"writing {len(mat)} x {mat.shape[1]} vectors")
    tbl = build_table(mat, a.tenants, a.groups)
    ds = tbl.to_lance()
    filters = {
        "none": None,
        "tenant": "tenant_id = 't1'",
        "tenant+acl": "tenant_id = 't1' AND array_has_any(acl_groups, ['g1'])",
    }
    k = a.depth
    rows = _Rows()  # path, filter, p50, p95, recall; each also on stderr as it comes

    # numpy floor: the matrix product and a top-k, nothing else
    def floor(q):
        s = mat @ q
        top = np.argpartition(-s, k - 1)[:k]
        return top[np.argsort(-s[top])]

    t, _ = timed(floor, queries)
    rows.append(("numpy floor", "none", pct(t, 50), pct(t, 95), ""))

    t0 = time.perf_counter()
    exact = ExactVectors(ds, "vector_mv", None)
    eprint(
        f"exact path loaded in {time.perf_counter() - t0:.2f} s ({exact.nbytes / 2**20:.0f} MiB)"
    )
    truth: dict[str, list[set[int]]] = {}
    for name, where in filters.items():
        exact.mask(ds, where)  # a filter's mask is computed once per searcher, then cached
        t, res = timed(lambda q, w=where: exact.search(ds, q, w, k), queries)
        truth[name] = [set(r.row_ids[:10]) for r in res]
        rows.append(("exact (in-memory)", name, pct(t, 50), pct(t, 95), "1.000"))

    for name, where in filters.items():
        t, res = timed(
            lambda q, w=where: vector_candidates(
                ds, "vector_mv", None, q, w, k, ann={"use_index": False}
            ),
            queries[: max(20, len(queries) // 4)],
        )
        rec = statistics.mean(
            len(set(r.row_ids[:10]) & g) / 10 for r, g in zip(res, truth[name], strict=False)
        )
        rows.append(("lance flat", name, pct(t, 50), pct(t, 95), f"{rec:.3f}"))

    sweep: list[str] = []
    built: list[str] = []
    for label, create, candidates in ANN:
        if label not in a.ann:
            continue
        t0 = time.perf_counter()
        try:
            tbl.create_index(
                metric="cosine", vector_column_name="vector_mv", replace=True, **create
            )
        except Exception as exc:  # an index type this lancedb does not have
            built.append(f"| {label} | not available: {exc} | | |")
            continue
        build_s = time.perf_counter() - t0
        ds = tbl.to_lance()
        size = index_bytes(ds, "vector_mv")
        built.append(f"| {label} | {create} | {build_s:.1f} | {size / 2**20:.1f} |")

        def recall(
            params: dict, where: str | None, truth_: list[set[int]], qs: list, d: Any = ds
        ) -> tuple:
            t, res = timed(
                lambda q: vector_candidates(d, "vector_mv", None, q, where, k, ann=params),
                qs,
            )
            rec = statistics.mean(
                len(set(r.row_ids[:10]) & g) / 10 for r, g in zip(res, truth_, strict=False)
            )
            return t, rec

        chosen = candidates[-1]
        sub = queries[: max(20, len(queries) // 4)]
        for params in candidates:
            recs = {n: recall(params, w, truth[n], sub)[1] for n, w in filters.items()}
            sweep.append(
                f"| {label} | {params} | " + " | ".join(f"{recs[n]:.3f}" for n in filters) + " |"
            )
            eprint(sweep[-1])
            if min(recs.values()) >= a.target:
                chosen = params
                break
        for name, where in filters.items():
            t, rec = recall(chosen, where, truth[name], queries)
            rows.append((f"{label} {chosen}", name, pct(t, 50), pct(t, 95), f"{rec:.3f}"))

    print(
        f"{len(mat)} units x {mat.shape[1]} dims, {len(queries)} queries, depth {k}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print("| path | filter | p50 ms | p95 ms | recall@10 vs exact |\n|---|---|---|---|---|")
    for path, flt, p50, p95, rec in rows:
        print(f"| {path} | {flt} | {p50:.2f} | {p95:.2f} | {rec} |")
    if built:
        print("\n| index | build parameters | build s | index MiB |\n|---|---|---:|---:|")
        print("\n".join(built))
    if sweep:
        print(
            f"\nrecall@10 vs exact on {max(20, len(queries) // 4)} queries, per query parameters "
            f"(first reaching {a.target} under every filter is measured above)"
        )
        print("| index | query parameters | " + " | ".join(filters) + " |")
        print("|---|---|" + "---:|" * len(filters))
        print("\n".join(sweep))


if __name__ == "__main__":
    main()
