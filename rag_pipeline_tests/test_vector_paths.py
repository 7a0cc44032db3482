"""The vector axes' two paths against real LanceDB: the exact in-memory search returns what
Lance's flat scan returns (with prefilters and exclusions), and past the threshold the publisher
indexes a vector column whose ANN answers agree with the exact ones."""

from __future__ import annotations

import os

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import BTree, HnswSq

from rag_pipeline.settings import Settings
from rag_pipeline.snapshot.build import ANN_INDEX, ANN_QUERY, _ensure_vector_indexes
from serving.axes import ExactVectors, vector_candidates

DIM = 32


def _table(tmp_path, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, DIM)).astype(np.float32)
    vecs = centers[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    has = rng.random(n) > 0.1  # some units have no vector (zeros, has_mv false)
    vecs[~has] = 0.0
    db = lancedb.connect(str(tmp_path / "lance"))
    tbl = db.create_table(
        "units",
        pa.table(
            {
                "unit_id": [f"u{i}" for i in range(n)],
                "tenant_id": [f"t{i % 3}" for i in range(n)],
                "asset_id": [f"a{i // 2}" for i in range(n)],
                "has_mv": has.tolist(),
                "vector_mv": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), DIM),
            }
        ),
    )
    tbl.create_index("tenant_id", config=BTree())
    return tbl, rng


def test_exact_path_equals_lance_flat_scan(tmp_path):
    tbl, rng = _table(tmp_path, 2000)
    ds = tbl.to_lance()
    exact = ExactVectors(ds, "vector_mv", "has_mv = true")
    assert exact.matrix.shape == (ds.count_rows("has_mv = true"), DIM)
    for where in (None, "tenant_id = 't1'", "tenant_id = 't2' AND unit_id <> 'u5'"):
        for _ in range(5):
            q = rng.standard_normal(DIM).astype(np.float32)
            got = exact.search(ds, q, where, 20)
            flat = vector_candidates(ds, "vector_mv", "has_mv = true", q, where, 20)
            assert got.row_ids == flat.row_ids
            np.testing.assert_allclose(got.scores, flat.scores, atol=1e-5)
    # an exclusion (similar: the asset's own units) removes exactly those rows
    q = rng.standard_normal(DIM).astype(np.float32)
    top = exact.search(ds, q, None, 5)
    drop = np.asarray(top.row_ids[:2], dtype=np.uint64)
    rest = exact.search(ds, q, None, 5, exclude_rows=drop)
    assert not set(rest.row_ids) & set(top.row_ids[:2])
    assert rest.row_ids[:3] == top.row_ids[2:]
    # a filter nothing passes: no candidates, not an error
    assert exact.search(ds, q, "tenant_id = 'nobody'", 5).row_ids == []


def test_row_blocks_on_threads_give_the_single_product(tmp_path, monkeypatch):
    tbl, rng = _table(tmp_path, 1000)
    ds = tbl.to_lance()
    whole = ExactVectors(ds, "vector_mv", "has_mv = true")
    monkeypatch.setattr(ExactVectors, "PARALLEL_MIN_ROWS", 10)
    blocked = ExactVectors(ds, "vector_mv", "has_mv = true")
    assert len(whole._blocks) == 1 and len(blocked._blocks) == min(4, os.cpu_count() or 1)
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(blocked.scores(q), whole.matrix @ q, rtol=1e-5, atol=1e-6)
        assert blocked.search(ds, q, None, 10) == whole.search(ds, q, None, 10)


def test_publisher_indexes_past_the_threshold_and_ann_agrees(tmp_path):
    tbl, rng = _table(tmp_path, 3000, seed=1)
    below = Settings(data_dir=tmp_path / "d", vector_ann_min_units=10_000)
    assert _ensure_vector_indexes(tbl, below) == {}
    above = Settings(data_dir=tmp_path / "d", vector_ann_min_units=1000)
    ann = _ensure_vector_indexes(tbl, above)
    assert set(ann) == {"vector_mv"}
    assert {k: ann["vector_mv"][k] for k in ANN_QUERY} == ANN_QUERY
    assert ann["vector_mv"]["index_type"] == ANN_INDEX
    # sqrt(2,700 vectors) = 51 partitions, a sixteenth of them probed
    assert ann["vector_mv"]["minimum_nprobes"] == 4
    (idx,) = [idx for idx in tbl.list_indices() if "vector_mv" in idx.columns]
    assert str(idx.index_type) == "IvfRq"
    ds = tbl.to_lance()
    exact = ExactVectors(ds, "vector_mv", "has_mv = true")
    recalls = []
    for where in (None, "tenant_id = 't0'"):
        for _ in range(10):
            q = rng.standard_normal(DIM).astype(np.float32)
            truth = set(exact.search(ds, q, where, 10).row_ids)
            got = vector_candidates(
                ds, "vector_mv", "has_mv = true", q, where, 10, ann=ann["vector_mv"]
            )
            recalls.append(len(truth & set(got.row_ids)) / 10)
    assert np.mean(recalls) >= 0.9, recalls
    deep = vector_candidates(ds, "vector_mv", "has_mv = true", q, None, 100, ann=ann["vector_mv"])
    assert len(deep.row_ids) == 100


def test_vector_index_rebuilt_after_a_column_rewrite_or_of_another_type(tmp_path):
    tbl, _ = _table(tmp_path, 3000, seed=2)
    above = Settings(data_dir=tmp_path / "d", vector_ann_min_units=1000)

    def uuid() -> str:
        (idx,) = [idx for idx in tbl.list_indices() if "vector_mv" in idx.columns]
        return str(idx.index_uuid)

    # an index an earlier build made (IVF_HNSW_SQ) is replaced by the current kind
    tbl.create_index("vector_mv", config=HnswSq(distance_type="cosine"))
    old = uuid()
    _ensure_vector_indexes(tbl, above)
    assert uuid() != old
    kept = uuid()
    _ensure_vector_indexes(tbl, above)
    assert uuid() == kept  # up to date: left alone (optimize_indices keeps it current)
    _ensure_vector_indexes(tbl, above, rebuild=["vector_mv"])  # its column was rewritten
    assert uuid() != kept
    # below the threshold a rewritten column keeps an index it has (retrained), not dropped
    below = Settings(data_dir=tmp_path / "d", vector_ann_min_units=10_000)
    assert set(_ensure_vector_indexes(tbl, below, rebuild=["vector_mv"])) == {"vector_mv"}


@pytest.mark.parametrize("n", [0])
def test_empty_exact_search(tmp_path, n):
    db = lancedb.connect(str(tmp_path / "lance"))
    tbl = db.create_table(
        "units",
        schema=pa.schema([("unit_id", pa.string()), ("vector_mv", pa.list_(pa.float32(), DIM))]),
    )
    exact = ExactVectors(tbl.to_lance(), "vector_mv", None)
    assert exact.search(tbl.to_lance(), np.ones(DIM), None, 5).row_ids == []
