"""Axis sources and their fusion: how each axis finds candidates in the snapshot's Lance
dataset (row ids and the axis' own score, nothing else), how row ids map to files and units
(``RowKeys``), and the weighted-RRF fusion of the axes' rankings into the top hits."""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow.compute as pc
from lance import query as lance_query
from threadpoolctl import threadpool_limits

from rag_pipeline.retrieval.fusion import AXES, RRF_K, weighted_rrf
from serving.errors import SearchError
from serving.filters import sql_and
from serving.models import AxisHit, SearchRequest

log = logging.getLogger(__name__)

FtsCombine = Literal["max", "sum"]

# Axes this build can query; "tags" (content_tags matched by query entities) is a boost, not a
# requestable axis.
SERVABLE_AXES = ("fts", "mv", "vv")
# An asset found by several axes is shown as the best chunk of the first of these that found it:
# BM25's chunk holds the query's words, so it makes the better snippet.
REPRESENTATIVE_ORDER = ("fts", "mv", "vv")


# --------------------------------------------------------------------------------------------
# One axis' candidates


@dataclass(frozen=True)
class AxisCandidates:
    """One axis' ranked candidates, best first: LanceDB row ids (of the pinned table version)
    and the axis' own score, higher is better (``AxisHit.score``). Nothing else is read."""

    row_ids: list[int]
    scores: list[float]

    EMPTY: ClassVar[AxisCandidates]

    @classmethod
    def from_arrow(cls, tbl: Any, scores: list[float]) -> AxisCandidates:
        return cls(tbl.column("_rowid").to_pylist(), scores)


AxisCandidates.EMPTY = AxisCandidates([], [])


@dataclass(frozen=True)
class AxisSource:
    """How one axis finds candidates, in two steps: ``encode`` turns the request into the axis'
    query (a model's forward pass, or a term list; None: no candidates), ``search`` runs it
    against the table (query, SQL filter, candidate depth)."""

    encode: Callable[[SearchRequest], Any]
    search: Callable[[Any, str | None, int], AxisCandidates]


def fts_query(
    text: str, fields: list[str], boosts: list[float], combine: FtsCombine, lib: Any = lance_query
) -> Any:
    """The BM25 query for ``text`` over ``fields`` with per-field ``boosts``: "max" is a
    ``MultiMatchQuery`` (the best boosted field wins), "sum" a ``BooleanQuery`` of boosted
    per-field SHOULD clauses. ``lib`` is ``lance.query`` or ``lancedb.query`` (same class names
    and arguments)."""
    if combine == "sum":
        return lib.BooleanQuery(
            [
                (lib.Occur.SHOULD, lib.MatchQuery(text, f, boost=w))
                for f, w in zip(fields, boosts, strict=True)
            ]
        )
    return lib.MultiMatchQuery(text, fields, boosts=boosts)


def fts_candidates(
    dataset: Any, query: Any, where: str | None, limit: int, *, text: str
) -> AxisCandidates:
    """BM25 candidates of ``query`` (an ``fts_query`` of ``text``), prefiltered by ``where``."""
    try:
        tbl = dataset.to_table(
            full_text_query=query,
            filter=where,
            prefilter=True,
            limit=limit,
            columns=["_score"],
            with_row_id=True,
        )
    except Exception as exc:
        # The index's tokenizer may still drop every term (its stopword list differs from
        # ours): that is "no fts candidates", anything else is a real failure.
        if any(w in str(exc).lower() for w in ("stop", "empty", "token")):
            log.warning("fts query %r matched no terms (%s): no fts candidates", text, exc)
            return AxisCandidates.EMPTY
        raise
    return AxisCandidates.from_arrow(tbl, [float(x) for x in tbl.column("_score").to_pylist()])


# Query parameters of Lance's ``nearest`` a manifest's ``ann`` entry may set.
_NEAREST_PARAMS = (
    "minimum_nprobes",
    "maximum_nprobes",
    "nprobes",
    "refine_factor",
    "ef",
    "use_index",
)


def vector_candidates(
    dataset: Any,
    column: str,
    has_clause: str | None,
    vec: Any,
    where: str | None,
    limit: int,
    exclude: str | None = None,
    ann: Mapping[str, Any] | None = None,
) -> AxisCandidates:
    """Cosine search in Lance: the column's ANN index with ``ann``'s ``nprobes`` and
    ``refine_factor`` (exact re-ranking of the best candidates), else a flat scan.
    ``has_clause`` keeps rows that have a vector (None: every row has one); the score is
    1 - cosine distance."""
    nearest: dict[str, Any] = {"column": column, "q": vec, "k": limit, "metric": "cosine"}
    if ann:
        nearest |= {k: v for k, v in ann.items() if k in _NEAREST_PARAMS and v is not None}
        if "ef" in nearest:  # HNSW needs ef >= the candidates it returns (k x refine factor)
            nearest["ef"] = max(int(nearest["ef"]), limit * int(nearest.get("refine_factor") or 1))
    tbl = dataset.to_table(
        nearest=nearest,
        filter=sql_and(where, has_clause, exclude),
        prefilter=True,
        columns=["_distance"],
        with_row_id=True,
    )
    return AxisCandidates.from_arrow(
        tbl, [1.0 - float(d) for d in tbl.column("_distance").to_pylist()]
    )


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_BLAS_LIMITED = False


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_workers(), thread_name_prefix="exact-vectors")
        return _POOL


def _single_threaded_blas() -> None:
    """One BLAS thread per call, for the whole serving process. OpenBLAS' own worker threads
    spin for a long while after every product, and on a small machine they took the cores
    from the query encoder that runs next: hybrid p50 68 ms with them, 33 ms without
    (SciFact, 2 cores, docs/benchmarks.md). ``ExactVectors`` parallelises by row blocks."""
    global _BLAS_LIMITED
    if not _BLAS_LIMITED:
        threadpool_limits(limits=1, user_api="blas")
        _BLAS_LIMITED = True


class ExactVectors:
    """Exact cosine search over one vector column of a snapshot version, in memory.

    Lance's flat scan reads and decodes every vector per query (at 100k x 384 it was ~16x
    numpy's ``M @ q``, docs/benchmarks.md); below the publisher's ANN threshold the searcher
    keeps the rows that have a vector as one L2-normalised float32 matrix instead (4 x dim
    bytes a row) and answers with a matrix-vector product and ``argpartition``. A request's
    SQL prefilter becomes a boolean row mask, computed once per distinct filter by Lance (its
    scalar indexes) and kept in a small LRU.
    """

    MASKS_KEPT = 256
    # From this many rows the product runs in row blocks on a small thread pool (numpy releases
    # the GIL in BLAS): as fast as OpenBLAS' own threads, without their spinning (below).
    PARALLEL_MIN_ROWS = 50_000

    def __init__(self, dataset: Any, column: str, has_clause: str | None):
        _single_threaded_blas()
        tbl = dataset.to_table(columns=[column], filter=has_clause, with_row_id=True)
        row_ids = tbl.column("_rowid").to_numpy()
        order = np.argsort(row_ids, kind="stable")
        self.row_ids = row_ids[order]
        dim = tbl.schema.field(column).type.list_size
        flat = tbl.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        mat = np.ascontiguousarray(flat.reshape(-1, dim)[order], dtype=np.float32)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        mat /= np.maximum(norms, 1e-12)
        self.matrix = mat
        n_blocks = _workers() if len(mat) >= self.PARALLEL_MIN_ROWS else 1
        bounds = np.linspace(0, len(mat), n_blocks + 1).astype(int)
        self._blocks = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        self.has_clause = has_clause
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.row_ids.nbytes)

    def scores(self, q: np.ndarray) -> np.ndarray:
        """Cosine of every row with the unit vector ``q``."""
        if len(self._blocks) == 1:
            return self.matrix @ q
        out = np.empty(len(self.matrix), dtype=np.float32)

        def block(bounds: tuple[int, int]) -> None:
            a, b = bounds
            np.dot(self.matrix[a:b], q, out=out[a:b])

        list(_pool().map(block, self._blocks))
        return out

    def mask(self, dataset: Any, where: str | None) -> np.ndarray | None:
        """Rows of the matrix passing ``where`` (None: all)."""
        if where is None:
            return None
        with self._lock:
            hit = self._masks.get(where)
            if hit is not None:
                self._masks.move_to_end(where)
                return hit
        ids = dataset.to_table(columns=[], filter=where, with_row_id=True).column("_rowid")
        mask = self._rows_mask(ids.to_numpy())
        with self._lock:
            self._masks[where] = mask
            while len(self._masks) > self.MASKS_KEPT:
                self._masks.popitem(last=False)
        return mask

    def _rows_mask(self, row_ids: np.ndarray) -> np.ndarray:
        """Matrix rows whose row id is in ``row_ids`` (ids of rows without a vector match
        nothing)."""
        mask = np.zeros(len(self.row_ids), dtype=bool)
        if len(row_ids) and len(self.row_ids):
            rids = np.asarray(row_ids, dtype=self.row_ids.dtype)
            idx = np.searchsorted(self.row_ids, rids)
            ok = idx < len(self.row_ids)
            idx, rids = idx[ok], rids[ok]
            mask[idx[self.row_ids[idx] == rids]] = True
        return mask

    def search(
        self,
        dataset: Any,
        vec: Any,
        where: str | None,
        limit: int,
        exclude_rows: np.ndarray | None = None,
    ) -> AxisCandidates:
        q = np.asarray(vec, dtype=np.float32).ravel()
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        scores = self.scores(q)
        mask = self.mask(dataset, where)
        if exclude_rows is not None and len(exclude_rows):
            mask = np.ones(len(scores), dtype=bool) if mask is None else mask.copy()
            mask &= ~self._rows_mask(np.asarray(exclude_rows))
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
            n_valid = int(mask.sum())
        else:
            n_valid = len(scores)
        k = min(limit, n_valid)
        if k <= 0:
            return AxisCandidates.EMPTY
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        # best first; equal scores by row id, so the order is deterministic
        top = top[np.lexsort((self.row_ids[top], -scores[top]))]
        top = top[np.isfinite(scores[top])]
        return AxisCandidates(self.row_ids[top].tolist(), scores[top].astype(float).tolist())


# --------------------------------------------------------------------------------------------
# Row ids -> files and units


class RowKeys:
    """Every row's file (asset), unit and position in one snapshot dataset version, by row id.

    Read once per searcher (32 bytes a row), so that candidate queries read no column at all
    (on SciFact, reading two id columns for 100 BM25 candidates took longer than the BM25
    search itself) and the hits are read by position (``LanceDataset.take``). Keys are
    integers that sort like the id strings, so RRF ties break as they would on the ids.
    """

    def __init__(self, dataset: Any):
        tbl = dataset.to_table(columns=["unit_id", "asset_id"], with_row_id=True)
        row_ids = tbl.column("_rowid").to_numpy()
        order = np.argsort(row_ids, kind="stable")
        self._row_ids = row_ids[order]
        self._offsets = order  # a full scan's order is the position ``take`` expects
        self._keys = {
            collapse: pc.rank(
                tbl.column(col).combine_chunks(), sort_keys="ascending", tiebreaker="dense"
            )
            .to_numpy()
            .astype(np.int64)[order]
            for collapse, col in ((True, "asset_id"), (False, "unit_id"))
        }

    def _index(self, row_ids: list[int]) -> np.ndarray:
        rids = np.asarray(row_ids, dtype=self._row_ids.dtype)
        idx = np.searchsorted(self._row_ids, rids)
        if (idx >= len(self._row_ids)).any() or (self._row_ids[idx] != rids).any():
            raise SearchError(
                "a candidate row is not in the snapshot table version read at "
                "open: was the table changed in place?"
            )
        return idx

    def keys(self, row_ids: list[int], *, collapse: bool) -> list[int]:
        return self._keys[collapse][self._index(row_ids)].tolist() if row_ids else []

    def offsets(self, row_ids: list[int]) -> list[int]:
        return self._offsets[self._index(row_ids)].tolist() if row_ids else []


# --------------------------------------------------------------------------------------------
# Fusion


@dataclass(frozen=True)
class FusedHit:
    key: int  # RowKeys key: the file, or the unit without collapsing
    score: float  # weighted RRF
    row_id: int  # the unit shown for it
    axes: dict[str, AxisHit]


def fuse_candidates(
    results: Mapping[str, AxisCandidates],
    weights: Mapping[str, float],
    k: int,
    keys_of: Callable[[list[int]], list[int]],
) -> list[FusedHit]:
    """Weighted RRF of the axes' candidates: the top ``k``, best first.

    ``keys_of`` maps row ids to fusion keys: files (each axis then ranks files by their best
    chunk) or units. A key's unit (the row shown) is the best chunk of the first axis in
    ``REPRESENTATIVE_ORDER`` that found it.
    """
    per_axis: dict[int, dict[str, tuple[int, float]]] = {}  # key -> axis -> (rank, score)
    rankings: dict[str, list[int]] = {}
    rep_rows: dict[int, int] = {}
    order = sorted(
        results,
        key=lambda a: (
            REPRESENTATIVE_ORDER.index(a) if a in REPRESENTATIVE_ORDER else len(AXES),
            a,
        ),
    )
    for axis in order:
        c = results[axis]
        ids: list[int] = []
        seen: set[int] = set()
        for row_id, key, score in zip(c.row_ids, keys_of(c.row_ids), c.scores, strict=True):
            if key in seen:  # a lower-ranked chunk of a file already ranked
                continue
            seen.add(key)
            ids.append(key)
            rep_rows.setdefault(key, row_id)
            per_axis.setdefault(key, {})[axis] = (len(ids), score)
        rankings[axis] = ids
    return [
        FusedHit(
            key,
            score,
            rep_rows[key],
            {a: AxisHit(rank=r, score=sc) for a, (r, sc) in per_axis[key].items()},
        )
        for key, score in weighted_rrf(rankings, weights, k=RRF_K)[:k]
    ]
