"""Search over a published snapshot: BM25 (fts) + text-meaning vectors (mv), fused by weighted RRF.

Serving only *reads*: the snapshot manifest (``rag_pipeline.snapshot_schema``) and the LanceDB
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
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import lancedb
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_pipeline.analyzers.text_embedding import TextEncoder, model_spec_for
from rag_pipeline.retrieval.explain import matched_evidence, query_terms, snippet
from rag_pipeline.retrieval.fusion import AXES, RRF_K, QueryType, classify_query, weighted_rrf, \
    weights_for
from rag_pipeline.settings import Settings
from rag_pipeline.snapshot_schema import (
    FTS_FIELDS,
    SnapshotManifest,
    read_current_manifest,
    read_manifest,
)

log = logging.getLogger(__name__)

FtsCombine = Literal["max", "sum"]

# Axes this build can query. "vv" (visual vectors) has no query encoder in serving yet.
SERVABLE_AXES = ("fts", "mv")
# Fields a snippet may come from, in order of preference.
SNIPPET_FIELDS = ("body", "caption", "ocr", "title", "tags", "metadata")
# Columns read for every candidate (everything a Hit needs; never the vectors).
HIT_COLUMNS = [
    "unit_id", "tenant_id", "asset_id", "version_id", "uri", "uris", "source", "folder", "kind",
    "media_type", "chunk_index", "locator", *FTS_FIELDS, "mtime", "size", "has_mv", "evidence",
    "runs",
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


def build_filter(tenant: str, filters: SearchFilters | None) -> str:
    """SQL predicate: always the tenant, plus every filter that is set."""
    clauses = [f"tenant_id = {sql_str(tenant)}"]
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
    return " AND ".join(f"({c})" for c in clauses)


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
# The searcher


class Searcher:
    """Read-only search over one snapshot. Thread-safe for concurrent ``search`` calls."""

    def __init__(self, manifest: SnapshotManifest, table: Any, encoder: TextEncoder | None,
                 *, snapshots_dir: Path | None = None, lance_dir: Path | None = None,
                 fts_combine: FtsCombine = "max", max_workers: int = 4):
        if fts_combine not in ("max", "sum"):
            raise ValueError(f"fts_combine must be 'max' or 'sum', not {fts_combine!r}")
        self.fts_combine = fts_combine
        self.manifest = manifest
        self.table = table
        self.encoder = encoder
        self.snapshots_dir = snapshots_dir
        self.lance_dir = lance_dir
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="search-axis")
        self._fts_fields = list(FTS_FIELDS)
        self._fts_boosts = [float(manifest.field_weights.get(f, 1.0)) for f in self._fts_fields]
        self.unavailable: dict[str, str] = self._unavailable_axes()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def open(cls, snapshots_dir: Path, lance_dir: Path, *, mv_model_dir: str | None = None,
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
        return cls(manifest, table, encoder, snapshots_dir=snapshots_dir, lance_dir=lance_dir,
                   fts_combine=fts_combine)

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> Searcher:
        """Open the current snapshot; its query model is the one its manifest records, unless
        RAG_QUERY_MODEL_DIR points elsewhere (another copy of the same weights, say)."""
        kw.setdefault("mv_model_dir", os.environ.get("RAG_QUERY_MODEL_DIR") or None)
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
    def _fts_query(self, text: str) -> Any:
        from lancedb.query import BooleanQuery, MatchQuery, MultiMatchQuery, Occur

        if self.fts_combine == "sum":
            return BooleanQuery([(Occur.SHOULD, MatchQuery(text, f, boost=w))
                                 for f, w in zip(self._fts_fields, self._fts_boosts)])
        return MultiMatchQuery(text, columns=self._fts_fields, boosts=self._fts_boosts)

    def _fts(self, query: str, where: str, limit: int) -> tuple[list[dict[str, Any]], float]:
        t0 = time.perf_counter()
        terms = query_terms(query)
        if not terms:  # empty or stopword-only: BM25 has nothing to match
            return [], _ms(t0)
        text = " ".join(terms)
        try:
            rows = (self.table.search(self._fts_query(text), query_type="fts")
                    .where(where, prefilter=True).limit(limit)
                    .select([*HIT_COLUMNS, "_score"]).to_arrow().to_pylist())
        except Exception as exc:
            # The index's tokenizer may still drop every term (its stopword list differs from
            # ours): that is "no fts candidates", anything else is a real failure.
            if any(w in str(exc).lower() for w in ("stop", "empty", "token")):
                log.warning("fts query %r matched no terms (%s): no fts candidates", text, exc)
                return [], _ms(t0)
            raise
        return rows, _ms(t0)

    def _mv(self, query: str, where: str, limit: int) -> tuple[list[dict[str, Any]], float, float]:
        assert self.encoder is not None
        t0 = time.perf_counter()
        vec = self.encoder.encode_query(query)
        t_enc = _ms(t0)
        t1 = time.perf_counter()
        rows = (self.table.search(vec, vector_column_name="vector_mv").metric("cosine")
                .where(f"{where} AND (has_mv = true)", prefilter=True).limit(limit)
                .select([*HIT_COLUMNS, "_distance"]).to_arrow().to_pylist())
        return rows, t_enc, _ms(t1)

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
        where = build_filter(req.tenant, req.filters)
        limit = max(req.candidates, req.k)

        futures = {}
        if "fts" in axes:
            futures["fts"] = self._pool.submit(self._fts, req.query, where, limit)
        if "mv" in axes:
            futures["mv"] = self._pool.submit(self._mv, req.query, where, limit)
        results: dict[str, list[dict[str, Any]]] = {}
        for axis, fut in futures.items():
            out = fut.result()
            results[axis] = out[0]
            if axis == "mv":
                timings["mv_encode"], timings["mv"] = out[1], out[2]
            else:
                timings[axis] = out[1]
        timings["axes_wall"] = _ms(t_start)

        t_fuse = time.perf_counter()
        rows_by_id: dict[str, dict[str, Any]] = {}
        axis_hits: dict[str, dict[str, AxisHit]] = {}
        rankings: dict[str, list[str]] = {}
        key = "asset_id" if req.collapse else "unit_id"
        for axis, rows in results.items():
            ids = []
            seen: set[str] = set()
            for row in rows:
                uid = row[key]
                if uid in seen:  # a lower-ranked chunk of a file already ranked
                    continue
                seen.add(uid)
                ids.append(uid)
                rank = len(ids)
                rows_by_id.setdefault(uid, row)
                score = (float(row["_score"]) if axis == "fts"
                         else 1.0 - float(row["_distance"]))
                axis_hits.setdefault(uid, {})[axis] = AxisHit(rank=rank, score=score)
            rankings[axis] = ids
        fused = weighted_rrf(rankings, weights, k=RRF_K)[: req.k]
        timings["fuse"] = _ms(t_fuse)

        t_build = time.perf_counter()
        fusion = FusionInfo(query_type=query_type, weights=weights, rrf_k=RRF_K)
        hits = [self._hit(rows_by_id[uid], score, axis_hits[uid], req.query, fusion)
                for uid, score in fused]
        timings["build"] = _ms(t_build)
        timings["total"] = _ms(t_start)
        return SearchResponse(
            query=req.query, query_type=query_type, snapshot_id=self.manifest.snapshot_id,
            axes_used=axes, axes_unavailable=dict(self.unavailable), hits=hits,
            timings_ms=timings,
        )

    def _hit(self, row: dict[str, Any], score: float, axes: dict[str, AxisHit], query: str,
             fusion: FusionInfo) -> Hit:
        evidence = matched_evidence(row.get("evidence"), query)
        matched = [
            MatchedEvidence(kind=e.get("kind"), field=e.get("field"), ordinal=e.get("ordinal"),
                            text=snippet(str(e.get("text") or ""), query, width=300),
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
            snippet=self._snippet(row, query), chunk_index=row.get("chunk_index"),
            locator=_loads(row.get("locator"), {}), score=score, axes=axes,
            explanation=Explanation(
                matched_evidence=matched,
                runs=_loads(row.get("runs"), {}),
                file_version=FileVersion(version_id=row["version_id"], uri=uri,
                                         uris=list(row.get("uris") or [uri]),
                                         asset_id=row["asset_id"], size=row.get("size"),
                                         mtime=mtime),
                fusion=fusion,
            ),
        )

    @staticmethod
    def _snippet(row: dict[str, Any], query: str, width: int = 200) -> str:
        """The field with the most matched query terms (body preferred), windowed on a match."""
        from rag_pipeline.retrieval.explain import matched_terms

        best_field, best_n = None, 0
        for f in SNIPPET_FIELDS:
            text = row.get(f) or ""
            if text:
                n = len(matched_terms(query, text))
                if n > best_n:
                    best_field, best_n = f, n
        if best_field is None:
            best_field = next((f for f in SNIPPET_FIELDS if row.get(f)), None)
        return snippet(row.get(best_field) or "", query, width) if best_field else ""

    # -- comparison baseline -----------------------------------------------------------------
    def lancedb_hybrid(self, query: str, k: int = 10, *, tenant: str = "default",
                       filters: SearchFilters | None = None) -> list[str]:
        """Unit ids from LanceDB's built-in hybrid search (vector + FTS, RRFReranker).

        Same tenant filter and FTS fields/boosts as ``search``; for benchmarks only.
        """
        from lancedb.rerankers import RRFReranker

        if self.encoder is None:
            raise AxisUnavailable(f"lancedb_hybrid needs the MV axis: "
                                  f"{self.unavailable.get('mv', 'unavailable')}")
        terms = query_terms(query)
        vec = self.encoder.encode_query(query)
        where = build_filter(tenant, filters)
        if not terms:  # nothing for FTS to match: the vector side alone
            rows = (self.table.search(vec, vector_column_name="vector_mv").metric("cosine")
                    .where(f"{where} AND (has_mv = true)", prefilter=True).limit(k)
                    .select(["unit_id", "_distance"]).to_arrow())
            return rows.column("unit_id").to_pylist()
        rows = (self.table.search(query_type="hybrid", vector_column_name="vector_mv")
                .vector(vec).text(self._fts_query(" ".join(terms)))
                .metric("cosine").rerank(RRFReranker(K=RRF_K))
                .where(where, prefilter=True).limit(k).select(["unit_id"]).to_arrow())
        return rows.column("unit_id").to_pylist()
