"""Search over a published snapshot: BM25 (fts) + text-meaning vectors (mv), fused by weighted RRF.

Serving only *reads*: the snapshot manifest (``rag_pipeline.snapshot.schema``) and the LanceDB
table it names. It never imports the catalog, the snapshot writer or Dagster.

    searcher = Searcher.from_settings(Settings.from_env())
    resp = searcher.search("invoice 2024 acme", k=5, filters={"kind": "document"})

Axes are explicit: a request that names an axis the snapshot (or this build) cannot serve gets
``AxisUnavailable``, never a silent fallback; a query-time MV model whose weights differ from the
model that built the snapshot is refused with ``ModelMismatch``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import lancedb
import numpy as np
import pyarrow.compute as pc
from lance import query as lance_query
from lancedb import query as lancedb_query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_pipeline.analysis.analyzers.text_embedding import TextEncoder, model_spec_for
from rag_pipeline.retrieval.explain import (
    QueryMatcher,
    matched_evidence,
    query_terms,
    snippet,
)
from rag_pipeline.retrieval.fusion import (
    AXES,
    RRF_K,
    QueryType,
    classify_query,
    weighted_rrf,
    weights_for,
)
from rag_pipeline.settings import Settings
from rag_pipeline.snapshot.schema import (
    FTS_FIELDS,
    SnapshotManifest,
    normalize_tag,
    read_current_manifest,
    read_manifest,
)
from serving.tags import TagIndex, sql_list
from serving.visual import load_vv_encoder

log = logging.getLogger(__name__)

FtsCombine = Literal["max", "sum"]

# Axes this build can query; "tags" (content_tags matched by query entities) is a boost, not a
# requestable axis.
SERVABLE_AXES = ("fts", "mv", "vv")
# Share of the fused score given to tag matches when the query names tags (metadata first).
TAG_WEIGHT = 0.25
# Fields a snippet may come from, in order of preference.
SNIPPET_FIELDS = ("body", "caption", "ocr", "title", "tags", "metadata")
# An asset found by several axes is shown as the best chunk of the first of these that found it:
# BM25's chunk holds the query's words, so it makes the better snippet.
REPRESENTATIVE_ORDER = ("fts", "mv", "vv")
# Columns read for the final hits only: what a Hit shows (never the vectors).
HIT_COLUMNS = [
    "unit_id", "asset_id", "version_id", "uri", "uris", "kind", "media_type", "chunk_index",
    "locator", *FTS_FIELDS, "mtime", "size", "evidence", "runs", "content_tags", "thumbnail",
]


# --------------------------------------------------------------------------------------------
# Errors


class SearchError(Exception):
    """Base class of serving errors that are the server's (not the request's) problem."""


class AxisUnavailable(SearchError):
    """A request named an axis this snapshot or this build cannot serve."""


class ModelMismatch(SearchError):
    """The query-time model is not the model that built the snapshot's vectors."""


# --------------------------------------------------------------------------------------------
# Request / response models


class SearchFilters(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: str | None = None                 # "document" | "image"
    folder_prefix: str | None = None        # folder (relative to its source) or any sub-folder
    source: str | None = None               # configured source root, exact
    media_type: str | None = None           # exact, or "image/*"-style major type
    modified_after: datetime | None = None  # mtime >= this (naive datetimes are UTC)
    modified_before: datetime | None = None  # mtime < this
    tags: list[str] | None = None           # every one of these content tags (pre-filter)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(10, ge=1, le=100)
    tenant: str = Field("default", min_length=1)
    filters: SearchFilters | None = None
    query_type: QueryType | None = None  # None: classify_query decides
    axes: list[str] | None = None        # restrict to these axes, e.g. ["fts"] (BM25 only)
    candidates: int = Field(100, ge=1, le=1000)  # per-axis candidate depth
    # One hit per file (its best chunk) rather than one per chunk. Collapsing happens per axis
    # before fusion, so each axis ranks files, not chunks.
    collapse: bool = True

    @field_validator("axes")
    @classmethod
    def _known_axes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        axes = list(dict.fromkeys(a.strip().lower() for a in v if a.strip()))
        if not axes:
            raise ValueError("axes must name at least one axis (or be omitted)")
        unknown = [a for a in axes if a not in AXES]
        if unknown:
            raise ValueError(f"unknown axes {unknown}; known axes are {list(AXES)}")
        return axes


class SimilarRequest(BaseModel):
    """Find units like a given asset: image -> image on the VV axis (default for images with
    VV vectors), or on the MV axis (documents; images without VV)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    asset_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    k: int = Field(10, ge=1, le=100)
    tenant: str = Field("default", min_length=1)
    filters: SearchFilters | None = None
    axis: Literal["vv", "mv"] | None = None
    collapse: bool = True


class AxisHit(BaseModel):
    rank: int    # 1-based rank within the axis' candidates
    score: float  # fts: BM25 score; mv: cosine similarity (1 - cosine distance)


class MatchedEvidence(BaseModel):
    kind: str | None = None
    field: str | None = None
    ordinal: int | None = None
    text: str  # windowed around the first match (about 300 characters)
    confidence: float | None = None
    matched_terms: list[str]
    run_id: str | None = None  # the analysis run that produced this evidence
    locator: dict[str, Any] = Field(default_factory=dict)  # page, char offsets, ...


class FileVersion(BaseModel):
    version_id: str
    uri: str
    uris: list[str] = Field(default_factory=list)
    asset_id: str
    size: int | None = None
    mtime: datetime | None = None


class FusionInfo(BaseModel):
    query_type: QueryType
    weights: dict[str, float]
    rrf_k: int


class Explanation(BaseModel):
    matched_evidence: list[MatchedEvidence]
    runs: dict[str, Any]  # task_type -> {run_id, model_key, model_id, revision, ...}
    file_version: FileVersion
    fusion: FusionInfo
    # Query entities found in this unit's content_tags (the tag boost).
    matched_tags: list[str] = Field(default_factory=list)


class Hit(BaseModel):
    unit_id: str
    asset_id: str
    version_id: str
    uri: str
    kind: str
    media_type: str | None = None
    title: str | None = None
    snippet: str
    chunk_index: int | None = None
    locator: dict[str, Any] = Field(default_factory=dict)
    score: float  # fused weighted-RRF score
    axes: dict[str, AxisHit]
    explanation: Explanation
    thumbnail: str | None = None  # relative to the data dir (HTTP: /thumbnail/<asset_id>)


class SearchResponse(BaseModel):
    query: str
    query_type: QueryType
    snapshot_id: str
    axes_used: list[str]
    axes_unavailable: dict[str, str]
    hits: list[Hit]
    timings_ms: dict[str, float]


# --------------------------------------------------------------------------------------------
# SQL filter helpers


def sql_str(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def _sql_ts(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    iso = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"TIMESTAMP {sql_str(iso)}"


def build_filter(tenant: str, filters: SearchFilters | None, *,
                 sole_tenant: str | None = None) -> str | None:
    """SQL predicate: the tenant, plus every filter that is set; None: nothing to filter.

    The tenant clause is left out when ``tenant`` is ``sole_tenant``, the only tenant the
    table has rows of (a prefilter costs a column scan on every query).
    """
    clauses = [] if tenant == sole_tenant else [f"tenant_id = {sql_str(tenant)}"]
    if filters is not None:
        if filters.kind:
            clauses.append(f"kind = {sql_str(filters.kind)}")
        if filters.source:
            clauses.append(f"source = {sql_str(filters.source)}")
        if filters.media_type:
            mt = filters.media_type.lower()
            if mt.endswith("/*"):
                clauses.append(f"starts_with(media_type, {sql_str(mt[:-1])})")
            else:
                clauses.append(f"media_type = {sql_str(mt)}")
        if filters.folder_prefix is not None:
            prefix = filters.folder_prefix.strip().strip("/")
            if prefix and prefix != ".":
                # Path-segment prefix: "reports" matches reports and reports/2024, not reports_old.
                clauses.append(f"(folder = {sql_str(prefix)} OR "
                               f"starts_with(folder, {sql_str(prefix + '/')}))")
        if filters.modified_after is not None:
            clauses.append(f"mtime >= {_sql_ts(filters.modified_after)}")
        if filters.modified_before is not None:
            clauses.append(f"mtime < {_sql_ts(filters.modified_before)}")
        tags = [t for t in (normalize_tag(x) for x in filters.tags or ()) if t]
        if tags:
            clauses.append(f"array_has_all(content_tags, {sql_list(tags)})")
    return sql_and(*clauses)


def sql_and(*clauses: str | None) -> str | None:
    """The clauses that are set, ANDed (None if none is)."""
    return " AND ".join(f"({c})" for c in clauses if c) or None


def _loads(raw: Any, default: Any) -> Any:
    if raw is None or raw == "":
        return default
    if isinstance(raw, (dict, list)):
        return raw
    try:
        return json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        return default


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


# --------------------------------------------------------------------------------------------
# Axis candidates and their fusion


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
            collapse: pc.rank(tbl.column(col).combine_chunks(), sort_keys="ascending",
                              tiebreaker="dense").to_numpy().astype(np.int64)[order]
            for collapse, col in ((True, "asset_id"), (False, "unit_id"))}

    def _index(self, row_ids: list[int]) -> np.ndarray:
        rids = np.asarray(row_ids, dtype=self._row_ids.dtype)
        idx = np.searchsorted(self._row_ids, rids)
        if (idx >= len(self._row_ids)).any() or (self._row_ids[idx] != rids).any():
            raise SearchError("a candidate row is not in the snapshot table version read at "
                              "open: was the table changed in place?")
        return idx

    def keys(self, row_ids: list[int], *, collapse: bool) -> list[int]:
        return self._keys[collapse][self._index(row_ids)].tolist() if row_ids else []

    def offsets(self, row_ids: list[int]) -> list[int]:
        return self._offsets[self._index(row_ids)].tolist() if row_ids else []


@dataclass(frozen=True)
class FusedHit:
    key: int  # RowKeys key: the file, or the unit without collapsing
    score: float  # weighted RRF
    row_id: int  # the unit shown for it
    axes: dict[str, AxisHit]


def fuse_candidates(results: Mapping[str, AxisCandidates], weights: Mapping[str, float],
                    k: int, keys_of: Callable[[list[int]], list[int]]) -> list[FusedHit]:
    """Weighted RRF of the axes' candidates: the top ``k``, best first.

    ``keys_of`` maps row ids to fusion keys: files (each axis then ranks files by their best
    chunk) or units. A key's unit (the row shown) is the best chunk of the first axis in
    ``REPRESENTATIVE_ORDER`` that found it.
    """
    per_axis: dict[int, dict[str, tuple[int, float]]] = {}  # key -> axis -> (rank, score)
    rankings: dict[str, list[int]] = {}
    rep_rows: dict[int, int] = {}
    order = sorted(results, key=lambda a: (REPRESENTATIVE_ORDER.index(a)
                                           if a in REPRESENTATIVE_ORDER else len(AXES), a))
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
    return [FusedHit(key, score, rep_rows[key],
                     {a: AxisHit(rank=r, score=sc) for a, (r, sc) in per_axis[key].items()})
            for key, score in weighted_rrf(rankings, weights, k=RRF_K)[:k]]


# --------------------------------------------------------------------------------------------
# The searcher


class Searcher:
    """Read-only search over one snapshot. Thread-safe for concurrent ``search`` calls."""

    def __init__(self, manifest: SnapshotManifest, table: Any, encoder: TextEncoder | None,
                 *, snapshots_dir: Path | None = None, lance_dir: Path | None = None,
                 fts_combine: FtsCombine = "max", max_workers: int = 4,
                 vv_encoder: Any | None = None, vv_unavailable: str | None = None):
        if fts_combine not in ("max", "sum"):
            raise ValueError(f"fts_combine must be 'max' or 'sum', not {fts_combine!r}")
        self.fts_combine = fts_combine
        self.manifest = manifest
        self.table = table
        # Candidate queries and the hits' read go to the Lance dataset (same version) directly:
        # on SciFact, lancedb's query builder added 1-2.5 ms to each (see docs/benchmarks.md).
        self.dataset = table.to_lance()
        self.encoder = encoder
        self.vv_encoder = vv_encoder
        self._vv_unavailable = vv_unavailable
        self.snapshots_dir = snapshots_dir
        self.lance_dir = lance_dir
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="search-axis")
        # A field no row has text in matches nothing: leaving it out of the BM25 query changes
        # no score and saves its index search on every query.
        self._fts_fields = [f for f in FTS_FIELDS if self._has_text(f)]
        self._fts_boosts = [float(manifest.field_weights.get(f, 1.0)) for f in self._fts_fields]
        # Reading a column costs about the same for 1 row as for 10: skip the empty ones.
        names = set(self.dataset.schema.names)
        self._hit_columns = [c for c in HIT_COLUMNS if c in names
                             and (c not in FTS_FIELDS or c in self._fts_fields)]
        self._tags = TagIndex(self.dataset)
        self._row_keys = RowKeys(self.dataset)
        # Clauses every row passes are left out of the queries: on SciFact the tenant prefilter
        # took half of a BM25 search's time.
        self._sole_tenant = self._only_value("tenant_id")
        n_rows = self.dataset.count_rows()
        self._mv_clause = (None if n_rows and self.dataset.count_rows("has_mv = true") == n_rows
                           else "has_mv = true")
        self.unavailable: dict[str, str] = self._unavailable_axes()

    def _only_value(self, column: str) -> Any:
        """The column's value if all rows have the same (non-null) one, else None."""
        values = pc.unique(self.dataset.to_table(columns=[column]).column(0))
        return values[0].as_py() if len(values) == 1 else None

    def _has_text(self, column: str) -> bool:
        try:
            return self.dataset.to_table(columns=["unit_id"], filter=f"{column} <> ''",
                                         limit=1).num_rows > 0
        except Exception as exc:  # unknown: keep the field
            log.warning("could not check the snapshot's %s column: %s", column, exc)
            return True

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def open(cls, snapshots_dir: Path, lance_dir: Path, *, mv_model_dir: str | None = None,
             vv_model_dir: str | None = None,
             pointer: str = "CURRENT", snapshot_id: str | None = None,
             fts_combine: FtsCombine = "max") -> Searcher:
        """Open the snapshot named by ``pointer`` (or ``snapshot_id``) for reading.

        If the snapshot has an MV axis, the query encoder is loaded from ``mv_model_dir``
        (default: the directory recorded in the manifest) and refused with ``ModelMismatch``
        unless its weights checksum equals the one in the manifest's MV model spec.

        ``fts_combine`` says how per-field BM25 scores combine: "max" (LanceDB's
        ``MultiMatchQuery``: the best boosted field wins, like Elasticsearch ``best_fields``) or
        "sum" (a ``BooleanQuery`` of boosted per-field SHOULD clauses: a term in title *and* body
        counts twice, like ``most_fields``).
        """
        snapshots_dir, lance_dir = Path(snapshots_dir), Path(lance_dir)
        manifest = (read_manifest(snapshots_dir, snapshot_id) if snapshot_id
                    else read_current_manifest(snapshots_dir, pointer))
        db = lancedb.connect(str(lance_dir))
        table = db.open_table(manifest.table_name)
        version = manifest.stats.get("table_version")
        if isinstance(version, int):
            table.checkout(version)  # pin the exact table version the snapshot published
        encoder = cls._load_mv_encoder(manifest, mv_model_dir)
        vv_encoder, vv_unavailable = load_vv_encoder(manifest, vv_model_dir, ModelMismatch)
        if vv_encoder is not None and "vector_vv" not in table.schema.names:
            vv_encoder, vv_unavailable = None, f"table {manifest.table_name} has no vector_vv"
        return cls(manifest, table, encoder, snapshots_dir=snapshots_dir, lance_dir=lance_dir,
                   fts_combine=fts_combine, vv_encoder=vv_encoder, vv_unavailable=vv_unavailable)

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> Searcher:
        """Open the current snapshot; its query model is the one its manifest records, unless
        RAG_QUERY_MODEL_DIR points elsewhere (another copy of the same weights, say)."""
        kw.setdefault("mv_model_dir", os.environ.get("RAG_QUERY_MODEL_DIR") or None)
        kw.setdefault("vv_model_dir", os.environ.get("RAG_QUERY_VV_MODEL_DIR") or None)
        if "snapshot_id" not in kw:  # serving follows the promoted snapshot once there is one
            promoted = (settings.snapshots_dir / "PROMOTED").exists()
            kw.setdefault("pointer", "PROMOTED" if promoted else "CURRENT")
        return cls.open(settings.snapshots_dir, settings.lance_dir, **kw)

    @staticmethod
    def _load_mv_encoder(manifest: SnapshotManifest,
                         mv_model_dir: str | None) -> TextEncoder | None:
        info = manifest.axes.get("mv")
        if info is None or not info.available:
            return None
        if info.model is None:
            raise ModelMismatch(
                f"snapshot {manifest.snapshot_id} has an MV axis but no MV model spec: "
                "cannot verify a query encoder against it"
            )
        model_dir = mv_model_dir or info.model_dir
        if not model_dir:
            raise ModelMismatch(
                f"snapshot {manifest.snapshot_id} has an MV axis built with {info.model.key} but "
                "no query model directory was given or recorded (set RAG_MV_MODEL_DIR)"
            )
        try:
            spec = model_spec_for(model_dir)
        except FileNotFoundError as exc:
            raise ModelMismatch(
                f"query MV model for snapshot {manifest.snapshot_id} not found: {exc}"
            ) from exc
        if spec.weights_checksum != info.model.weights_checksum:
            raise ModelMismatch(
                f"refusing to serve snapshot {manifest.snapshot_id}: its MV vectors were built "
                f"by {info.model.model_id} (weights {info.model.weights_checksum[:12]}), but the "
                f"query model in {model_dir} is {spec.model_id} (weights "
                f"{spec.weights_checksum[:12]}); query and document vectors would not be "
                "comparable. Use the snapshot's model or rebuild the snapshot."
            )
        encoder = TextEncoder.load(model_dir)
        dim = info.dim or info.model.dim
        if dim and encoder.dim != dim:
            raise ModelMismatch(
                f"query MV model dim {encoder.dim} != snapshot MV dim {dim} "
                f"(snapshot {manifest.snapshot_id})"
            )
        return encoder

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # -- axes ------------------------------------------------------------------------------
    def _unavailable_axes(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for axis in AXES:
            info = self.manifest.axes.get(axis)
            if info is None:
                out[axis] = f"snapshot {self.manifest.snapshot_id} has no {axis!r} axis"
            elif not info.available:
                out[axis] = info.reason or f"{axis!r} axis marked unavailable in the snapshot"
            elif axis not in SERVABLE_AXES:
                out[axis] = f"this serving build has no query encoder for the {axis!r} axis"
            elif axis == "mv" and self.encoder is None:
                out[axis] = "no MV query encoder loaded"
            elif axis == "vv" and self.vv_encoder is None:
                out[axis] = self._vv_unavailable or "no VV query encoder loaded"
        return out

    @property
    def available_axes(self) -> list[str]:
        return [a for a in AXES if a not in self.unavailable]

    def health(self) -> dict[str, Any]:
        m = self.manifest
        axes: dict[str, Any] = {}
        for axis in AXES:
            info = m.axes.get(axis)
            entry: dict[str, Any] = {"available": axis not in self.unavailable,
                                     "reason": self.unavailable.get(axis)}
            if info is not None and info.model is not None:
                entry["model"] = {"model_id": info.model.model_id,
                                  "revision": info.model.revision,
                                  "weights_checksum": info.model.weights_checksum,
                                  "dim": info.dim or info.model.dim}
            axes[axis] = entry
        try:
            n_rows = int(self.table.count_rows())
        except Exception as exc:  # health must answer even when the table misbehaves
            log.warning("count_rows failed: %s", exc)
            n_rows = None
        return {
            "status": "ok" if self.available_axes else "degraded",
            "snapshot_id": m.snapshot_id,
            "table_name": m.table_name,
            "created_at": m.created_at.isoformat(),
            "tenants": m.tenants,
            "n_units": m.n_units,
            "n_documents": m.n_documents,
            "n_images": m.n_images,
            "table_rows": n_rows,
            "axes": axes,
            "field_weights": m.field_weights,
        }

    # -- per-axis candidate retrieval --------------------------------------------------------
    # Each source returns only what ranking needs (row ids and scores); the hits' columns are
    # read after fusion, for the final hits alone (``_fetch_rows``).
    def _candidate_sources(self) -> dict[str, AxisSource]:
        return {"fts": AxisSource(self._fts_encode, self._fts_search),
                "mv": AxisSource(self._mv_encode, self._mv_search),
                "vv": AxisSource(self._vv_encode, self._vv_search),
                "tags": AxisSource(lambda req: None, self._tags_search)}

    def _fts_query(self, text: str, lib: Any = lance_query) -> Any:
        """The BM25 query over the fields with text: ``lib`` is ``lance.query`` or
        ``lancedb.query`` (same class names and arguments)."""
        if self.fts_combine == "sum":
            return lib.BooleanQuery([(lib.Occur.SHOULD, lib.MatchQuery(text, f, boost=w))
                                     for f, w in zip(self._fts_fields, self._fts_boosts)])
        return lib.MultiMatchQuery(text, self._fts_fields, boosts=self._fts_boosts)

    def _fts_encode(self, req: SearchRequest) -> str | None:
        terms = query_terms(req.query)
        if not terms or not self._fts_fields:  # stopwords only, or no text in the snapshot
            return None
        return " ".join(terms)

    def _fts_search(self, text: str, where: str | None, limit: int) -> AxisCandidates:
        try:
            tbl = self.dataset.to_table(full_text_query=self._fts_query(text), filter=where,
                                        prefilter=True, limit=limit, columns=["_score"],
                                        with_row_id=True)
        except Exception as exc:
            # The index's tokenizer may still drop every term (its stopword list differs from
            # ours): that is "no fts candidates", anything else is a real failure.
            if any(w in str(exc).lower() for w in ("stop", "empty", "token")):
                log.warning("fts query %r matched no terms (%s): no fts candidates", text, exc)
                return AxisCandidates.EMPTY
            raise
        return AxisCandidates.from_arrow(tbl, [float(x) for x in tbl.column("_score").to_pylist()])

    def _mv_encode(self, req: SearchRequest) -> Any:
        assert self.encoder is not None
        return self.encoder.encode_query(req.query)

    def _mv_search(self, vec: Any, where: str | None, limit: int) -> AxisCandidates:
        return self._vector_search("vector_mv", self._mv_clause, vec, where, limit)

    def _vv_encode(self, req: SearchRequest) -> Any:
        assert self.vv_encoder is not None
        return self.vv_encoder.encode_query(req.query)  # the text tower: text -> image

    def _vector_search(self, column: str, has_clause: str | None, vec: Any, where: str | None,
                       limit: int, exclude: str | None = None) -> AxisCandidates:
        """Exact (flat) cosine search: the snapshot has no ANN index. ``has_clause`` keeps rows
        that have a vector (None: every row has one)."""
        tbl = self.dataset.to_table(
            nearest={"column": column, "q": vec, "k": limit, "metric": "cosine"},
            filter=sql_and(where, has_clause, exclude), prefilter=True,
            columns=["_distance"], with_row_id=True)
        return AxisCandidates.from_arrow(
            tbl, [1.0 - float(d) for d in tbl.column("_distance").to_pylist()])

    def _vv_search(self, vec: Any, where: str | None, limit: int) -> AxisCandidates:
        return self._vector_search("vector_vv", "has_vv = true", vec, where, limit)

    def _tags_search(self, entities: list[str], where: str | None,
                     limit: int) -> AxisCandidates:
        row_ids, scores = self._tags.search(self.dataset, entities, where or "true", limit)
        return AxisCandidates(row_ids, scores)

    def _timed_search(self, source: AxisSource, query: Any, where: str | None,
                      limit: int) -> tuple[AxisCandidates, float]:
        t0 = time.perf_counter()
        return (AxisCandidates.EMPTY if query is None else source.search(query, where, limit),
                _ms(t0))

    def _fetch_rows(self, row_ids: list[int]) -> dict[int, dict[str, Any]]:
        """The hit columns of the given rows, by row id."""
        if not row_ids:
            return {}
        rows = self.dataset.take(self._row_keys.offsets(row_ids),
                                 columns=[*self._hit_columns, "_rowid"]).to_pylist()
        out = {int(r.pop("_rowid")): r for r in rows}
        if out.keys() != set(row_ids):
            raise SearchError("the snapshot dataset returned other rows than asked for")
        return out

    # -- search ----------------------------------------------------------------------------
    def search(self, request: SearchRequest | str, **kw: Any) -> SearchResponse:
        t_start = time.perf_counter()
        if isinstance(request, str):
            req = SearchRequest(query=request, **kw)
        elif kw:
            req = SearchRequest.model_validate({**request.model_dump(), **kw})
        else:
            req = request
        timings: dict[str, float] = {}

        if req.axes is not None:
            bad = [a for a in req.axes if a in self.unavailable]
            if bad:
                raise AxisUnavailable("; ".join(
                    f"axis {a!r} is unavailable in snapshot {self.manifest.snapshot_id}: "
                    f"{self.unavailable[a]}" for a in bad))
            axes = [a for a in AXES if a in req.axes]
        else:
            axes = self.available_axes
        if not axes:
            raise AxisUnavailable(
                f"snapshot {self.manifest.snapshot_id} has no servable axis: {self.unavailable}")

        query_type: QueryType = req.query_type or classify_query(req.query)
        weights = weights_for(query_type, axes)
        axes = [a for a in axes if a in weights]
        # Metadata first: tags named in the query pull the units carrying them up (not when the
        # request restricts the axes: then it gets exactly those).
        entities = self._tags.entities(req.query) if req.axes is None else []
        if entities:
            weights = {a: w * (1.0 - TAG_WEIGHT) for a, w in weights.items()} | {
                "tags": TAG_WEIGHT}
            axes = [*axes, "tags"]
        where = build_filter(req.tenant, req.filters, sole_tenant=self._sole_tenant)
        limit = max(req.candidates, req.k)

        # Query encoders (torch) use every core: encode for all axes first, then run the index
        # searches side by side (on 2 cores, a BM25 search beside MiniLM's forward pass slowed
        # the pass by more than the search took).
        sources = self._candidate_sources()
        queries: dict[str, Any] = {}
        for axis in axes:
            t0 = time.perf_counter()
            queries[axis] = entities if axis == "tags" else sources[axis].encode(req)
            timings[f"{axis}_encode"] = _ms(t0)
        # All but one search go to the pool; the last runs here (one thread hand-off fewer).
        futures = {a: self._pool.submit(self._timed_search, sources[a], queries[a], where, limit)
                   for a in axes[:-1]}
        done = {axes[-1]: self._timed_search(sources[axes[-1]], queries[axes[-1]], where, limit)}
        matcher = QueryMatcher(req.query)  # explains the hits; made while the others finish
        done.update((a, f.result()) for a, f in futures.items())
        results = {}
        for axis in axes:
            results[axis], timings[axis] = done[axis]
        timings["axes_wall"] = _ms(t_start)

        t_fuse = time.perf_counter()
        fused = fuse_candidates(results, weights, req.k,
                                partial(self._row_keys.keys, collapse=req.collapse))
        timings["fuse"] = _ms(t_fuse)

        t_fetch = time.perf_counter()
        rows = self._fetch_rows([f.row_id for f in fused])
        timings["fetch"] = _ms(t_fetch)

        t_build = time.perf_counter()
        fusion = FusionInfo(query_type=query_type, weights=weights, rrf_k=RRF_K)
        hits = [self._hit(rows[f.row_id], f.score, f.axes, matcher, fusion, entities)
                for f in fused]
        timings["build"] = _ms(t_build)
        timings["total"] = _ms(t_start)
        return SearchResponse(
            query=req.query, query_type=query_type, snapshot_id=self.manifest.snapshot_id,
            axes_used=axes, axes_unavailable=dict(self.unavailable), hits=hits,
            timings_ms=timings,
        )

    def _hit(self, row: dict[str, Any], score: float, axes: dict[str, AxisHit],
             matcher: QueryMatcher, fusion: FusionInfo, entities: list[str] = ()) -> Hit:
        query = matcher.query
        evidence = matched_evidence(row.get("evidence"), query, matcher=matcher)
        matched = [
            MatchedEvidence(kind=e.get("kind"), field=e.get("field"), ordinal=e.get("ordinal"),
                            text=snippet(str(e.get("text") or ""), query, width=300,
                                         matcher=matcher),
                            confidence=e.get("confidence"), matched_terms=e["matched_terms"],
                            run_id=e.get("run_id"),
                            locator=e.get("locator") if isinstance(e.get("locator"), dict) else {})
            for e in evidence
        ]
        uri = row["uri"]
        title = row.get("title") or os.path.basename(uri.rstrip("/")) or uri
        mtime = row.get("mtime")
        if isinstance(mtime, datetime) and mtime.tzinfo is None:
            mtime = mtime.replace(tzinfo=timezone.utc)
        return Hit(
            unit_id=row["unit_id"], asset_id=row["asset_id"], version_id=row["version_id"],
            uri=uri, kind=row["kind"], media_type=row.get("media_type"), title=title,
            snippet=self._snippet(row, matcher), chunk_index=row.get("chunk_index"),
            locator=_loads(row.get("locator"), {}), score=score, axes=axes,
            explanation=Explanation(
                matched_evidence=matched,
                runs=_loads(row.get("runs"), {}),
                file_version=FileVersion(version_id=row["version_id"], uri=uri,
                                         uris=list(row.get("uris") or [uri]),
                                         asset_id=row["asset_id"], size=row.get("size"),
                                         mtime=mtime),
                fusion=fusion,
                matched_tags=[t for t in entities if t in (row.get("content_tags") or ())],
            ),
            thumbnail=row.get("thumbnail") or None,
        )

    def thumbnail_file(self, asset_id: str, tenant: str = "default") -> Path | None:
        """The stored thumbnail of an asset this snapshot serves to ``tenant`` (None: none)."""
        if self.lance_dir is None or not re.fullmatch(r"[0-9a-f]{64}", asset_id) or \
                "thumbnail" not in self.dataset.schema.names:
            return None
        rows = self.dataset.to_table(columns=["thumbnail"], limit=1, filter=(
            f"asset_id = {sql_str(asset_id)} AND tenant_id = {sql_str(tenant)} "
            "AND thumbnail <> ''")).column("thumbnail").to_pylist()
        if not rows:
            return None
        path = Path(self.lance_dir).parent / rows[0]  # thumbnails sit beside the lance dir
        return path if path.is_file() else None

    # -- find similar ----------------------------------------------------------------------
    def similar(self, request: SimilarRequest | str, **kw: Any) -> SearchResponse:
        """Units like ``asset_id``: its own vector as the query (image -> image on VV; the mean
        of a document's chunk vectors on MV). The asset itself is left out."""
        t_start = time.perf_counter()
        req = SimilarRequest(asset_id=request, **kw) if isinstance(request, str) else request
        where = build_filter(req.tenant, req.filters, sole_tenant=self._sole_tenant)
        own = f"asset_id = {sql_str(req.asset_id)}"
        names = set(self.dataset.schema.names)
        cols = [c for c in ("vector_vv", "has_vv", "vector_mv", "has_mv") if c in names]
        rows = self.dataset.to_table(columns=cols, filter=sql_and(where, own)).to_pylist()
        if not rows:
            raise KeyError(f"no unit of asset {req.asset_id} in snapshot "
                           f"{self.manifest.snapshot_id} (for tenant {req.tenant!r})")
        has_vv = any(r.get("has_vv") for r in rows)
        axis = req.axis or ("vv" if has_vv and "vv" not in self.unavailable else "mv")
        if axis in self.unavailable:
            raise AxisUnavailable(f"axis {axis!r} is unavailable in snapshot "
                                  f"{self.manifest.snapshot_id}: {self.unavailable[axis]}")
        vecs = [np.asarray(r[f"vector_{axis}"], dtype=np.float32) for r in rows
                if r.get(f"has_{axis}")]
        if not vecs:
            raise AxisUnavailable(f"asset {req.asset_id} has no {axis} vector to search with")
        query = np.mean(vecs, axis=0)
        query /= max(float(np.linalg.norm(query)), 1e-12)
        limit = max(100, req.k * 5)
        found = self._vector_search(f"vector_{axis}", f"has_{axis} = true", query, where, limit,
                                    exclude=f"asset_id <> {sql_str(req.asset_id)}")
        weights = {axis: 1.0}
        fused = fuse_candidates({axis: found}, weights, req.k,
                                partial(self._row_keys.keys, collapse=req.collapse))
        fetched = self._fetch_rows([f.row_id for f in fused])
        fusion = FusionInfo(query_type="visual" if axis == "vv" else "semantic",
                            weights=weights, rrf_k=RRF_K)
        matcher = QueryMatcher("")
        hits = [self._hit(fetched[f.row_id], f.score, f.axes, matcher, fusion) for f in fused]
        return SearchResponse(
            query=f"similar:{req.asset_id}", query_type=fusion.query_type,
            snapshot_id=self.manifest.snapshot_id, axes_used=[axis],
            axes_unavailable=dict(self.unavailable), hits=hits,
            timings_ms={"total": _ms(t_start)})

    @staticmethod
    def _snippet(row: dict[str, Any], matcher: QueryMatcher, width: int = 200) -> str:
        """The field with the most matched query terms (body preferred), windowed on a match."""
        best_field, best_n = None, 0
        for f in SNIPPET_FIELDS:
            text = row.get(f) or ""
            if text:
                n = len(matcher.matched_terms(text))
                if n > best_n:
                    best_field, best_n = f, n
        if best_field is None:
            best_field = next((f for f in SNIPPET_FIELDS if row.get(f)), None)
        return (snippet(row.get(best_field) or "", matcher.query, width, matcher=matcher)
                if best_field else "")

    # -- comparison baseline -----------------------------------------------------------------
    def lancedb_hybrid(self, query: str, k: int = 10, *, tenant: str = "default",
                       filters: SearchFilters | None = None) -> list[str]:
        """Unit ids from LanceDB's built-in hybrid search (vector + FTS, RRFReranker).

        Same filters (less the clauses every row passes) and FTS fields/boosts as ``search``;
        for benchmarks only.
        """
        from lancedb.rerankers import RRFReranker

        if self.encoder is None:
            raise AxisUnavailable(f"lancedb_hybrid needs the MV axis: "
                                  f"{self.unavailable.get('mv', 'unavailable')}")
        terms = query_terms(query)
        vec = self.encoder.encode_query(query)
        where = build_filter(tenant, filters, sole_tenant=self._sole_tenant)
        if not terms:  # nothing for FTS to match: the vector side alone
            q = (self.table.search(vec, vector_column_name="vector_mv").metric("cosine")
                 .select(["unit_id", "_distance"]))
            mv_where = sql_and(where, self._mv_clause)
            q = q.where(mv_where, prefilter=True) if mv_where else q
            return q.limit(k).to_arrow().column("unit_id").to_pylist()
        q = (self.table.search(query_type="hybrid", vector_column_name="vector_mv")
             .vector(vec).text(self._fts_query(" ".join(terms), lancedb_query))
             .metric("cosine").rerank(RRFReranker(K=RRF_K)).select(["unit_id"]))
        q = q.where(where, prefilter=True) if where else q
        return q.limit(k).to_arrow().column("unit_id").to_pylist()
