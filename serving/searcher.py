"""The searcher: read-only search over one published snapshot, BM25 (fts) + text-meaning
vectors (mv) + image vectors (vv), fused by weighted RRF, with a metadata-first tag boost.

Serving only *reads*: the snapshot manifest (``rag_pipeline.snapshot.schema``) and the LanceDB
table it names. It never imports the catalog, the snapshot writer or Dagster.

    searcher = Searcher.from_settings(Settings.from_env())
    who = Principal(tenant="acme", groups={"staff"})
    resp = searcher.search("invoice 2024 acme", who, k=5, filters={"kind": "document"})

Every read takes a ``Principal`` (tenant + ACL groups) and applies ``tenant_id = <tenant> AND
array_has_any(acl_groups, <groups>)`` inside each index query (a prefilter, never after it);
there is no default principal.

Axes are explicit: a request that names an axis the snapshot (or this build) cannot serve gets
``AxisUnavailable``, never a silent fallback; a query-time MV model whose weights differ from the
model that built the snapshot is refused with ``ModelMismatch``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow.compute as pc
from lance import query as lance_query

from rag_pipeline.analysis.analyzers.text_embedding import TextEncoder, model_spec_for
from rag_pipeline.contracts import ModelSpec
from rag_pipeline.retrieval.cross_encoder import PairScorer
from rag_pipeline.retrieval.explain import QueryMatcher, query_terms
from rag_pipeline.retrieval.features import AxisEvidence, QueryFeatures
from rag_pipeline.retrieval.fusion import (
    AXES,
    RRF_K,
    SEMANTIC_MIN_WORDS,
    QueryType,
    classify_query,
    weights_for,
)
from rag_pipeline.retrieval.ranker import RankerModel
from rag_pipeline.retrieval.rerank import (
    DEFAULT_BUDGET_MS,
    DEFAULT_DEPTH,
    Candidate,
    explain,
    rerank,
)
from rag_pipeline.settings import Settings
from rag_pipeline.snapshot.schema import (
    FTS_FIELDS,
    SnapshotManifest,
    read_current_manifest,
    read_manifest,
)
from serving.axes import (
    SERVABLE_AXES,
    AxisCandidates,
    AxisSource,
    ExactVectors,
    FtsCombine,
    FusedHit,
    RowKeys,
    fts_candidates,
    fts_query,
    fuse_candidates,
    vector_candidates,
)
from serving.cache import default_vector_cache
from serving.errors import AxisUnavailable, ModelMismatch, SearchError
from serving.filters import build_filter, sql_and, sql_str
from serving.hits import HIT_COLUMNS, build_hit
from serving.models import (
    CrossEncoderSummary,
    FusionInfo,
    Hit,
    RerankExplanation,
    RerankInfo,
    SearchFilters,
    SearchRequest,
    SearchResponse,
    SimilarRequest,
)
from serving.principal import TENANT_WIDE_GROUP, Principal
from serving.reranking import load_cross_encoder
from serving.tags import TagIndex
from serving.visual import load_vv_encoder

log = logging.getLogger(__name__)

# Share of the fused score given to tag matches when the query names tags (metadata first).
TAG_WEIGHT = 0.25
# ``Searcher(ranker=...)`` default: the ranker the snapshot's manifest carries.
FROM_SNAPSHOT = "snapshot"


def _model_health(model: ModelSpec) -> dict[str, Any]:
    """A model's identity as /health reports it: id, revision, weights checksum."""
    return {
        "model_id": model.model_id,
        "revision": model.revision,
        "weights_checksum": model.weights_checksum,
    }


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


class Searcher:
    """Read-only search over one snapshot. Thread-safe for concurrent ``search`` calls."""

    def __init__(
        self,
        manifest: SnapshotManifest,
        table: Any,
        encoder: TextEncoder | None,
        *,
        snapshots_dir: Path | None = None,
        lance_dir: Path | None = None,
        fts_combine: FtsCombine = "max",
        max_workers: int = 4,
        vv_encoder: Any | None = None,
        vv_unavailable: str | None = None,
        query_cache: Any | None = None,
        ranker: RankerModel | str | None = FROM_SNAPSHOT,
        rerank_depth: int | None = None,
        rerank_budget_ms: float = DEFAULT_BUDGET_MS,
        cross_encoder: PairScorer | None = None,
        cross_encoder_unavailable: str | None = None,
    ):
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
        # Query vectors by (model, text): ``serving.cache.VectorCache`` (default: in-process).
        self.query_cache = query_cache if query_cache is not None else default_vector_cache()
        self.snapshots_dir = snapshots_dir
        self.lance_dir = lance_dir
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="search-axis")
        # A field no row has text in matches nothing: leaving it out of the BM25 query changes
        # no score and saves its index search on every query.
        self._fts_fields = [f for f in FTS_FIELDS if self._has_text(f)]
        self._fts_boosts = [float(manifest.field_weights.get(f, 1.0)) for f in self._fts_fields]
        # Reading a column costs about the same for 1 row as for 10: skip the empty ones.
        names = set(self.dataset.schema.names)
        self._hit_columns = [
            c for c in HIT_COLUMNS if c in names and (c not in FTS_FIELDS or c in self._fts_fields)
        ]
        self._tags = TagIndex(self.dataset)
        self._row_keys = RowKeys(self.dataset)
        # Clauses every row passes are left out of the queries: on SciFact the tenant prefilter
        # took half of a BM25 search's time.
        self._sole_tenant = self._only_value("tenant_id")
        # Per tenant, the distinct ACL group sets its rows carry: a principal holding a group of
        # every one of them reads the whole tenant, and the group clause is left out.
        self._acl_sets = self._read_acl_sets()
        n_rows = self.dataset.count_rows()
        # The clause that keeps rows with an MV vector (None: every row has one).
        self.mv_clause = (
            None
            if n_rows and self.dataset.count_rows("has_mv = true") == n_rows
            else "has_mv = true"
        )
        self.unavailable: dict[str, str] = self._unavailable_axes()
        self._ann, self._exact = self._vector_paths(names)
        # The rerank stage: the ranker the snapshot's policy named (or one given), applied to
        # the top ``rerank_depth`` fused candidates within ``rerank_budget_ms``.
        if ranker == FROM_SNAPSHOT:
            ranker = RankerModel.model_validate(manifest.ranker) if manifest.ranker else None
        self.ranker: RankerModel | None = ranker if isinstance(ranker, RankerModel) else None
        self.rerank_depth = rerank_depth
        self.rerank_budget_ms = rerank_budget_ms
        # The cross-encoder the manifest names (``serving.reranking``), or why there is none.
        self.cross_encoder = cross_encoder
        self.cross_encoder_unavailable = cross_encoder_unavailable
        # What features read: the text fields with text, tags, and the evidence (confidences)
        # only where a model read some of the text (OCR, captions, VLM tags).
        machine_read = {"caption", "ocr", "tags"} & set(self._fts_fields)
        self._feature_columns = [
            c
            for c in (*self._fts_fields, "content_tags", *(["evidence"] if machine_read else []))
            if c in names
        ]

    def _vector_paths(
        self, names: set[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, ExactVectors]]:
        """Per vector column of a servable axis: Lance's ANN index when the publisher built one
        (past ``RAG_VECTOR_ANN_MIN_UNITS``; its query parameters are in the manifest), else the
        exact in-memory search (``ExactVectors``)."""
        indexed: set[str] = set()
        try:
            for idx in self.table.list_indices():
                kind = str(getattr(idx, "index_type", "")).lower()
                if "ivf" in kind or "hnsw" in kind:
                    indexed.update(idx.columns)
        except Exception as exc:  # unknown: search as if there were none
            log.warning("could not list the snapshot's indexes: %s", exc)
        params = self.manifest.stats.get("ann") or {}
        ann: dict[str, dict[str, Any]] = {}
        exact: dict[str, ExactVectors] = {}
        for axis, column, has in (
            ("mv", "vector_mv", self.mv_clause),
            ("vv", "vector_vv", "has_vv = true"),
        ):
            if column not in names or axis in self.unavailable:
                continue
            if column in indexed:
                ann[column] = dict(params.get(column) or {})
            else:
                exact[column] = ExactVectors(self.dataset, column, has)
        return ann, exact

    def _vector_search(
        self,
        column: str,
        has_clause: str | None,
        vec: Any,
        where: str | None,
        limit: int,
        exclude_rows: list[int] | None = None,
        exclude: str | None = None,
    ) -> AxisCandidates:
        exact = self._exact.get(column)
        if exact is not None:
            rows = np.asarray(exclude_rows or [], dtype=np.uint64)
            return exact.search(self.dataset, vec, where, limit, exclude_rows=rows)
        return vector_candidates(
            self.dataset, column, has_clause, vec, where, limit, exclude, ann=self._ann.get(column)
        )

    def _only_value(self, column: str) -> Any:
        """The column's value if all rows have the same (non-null) one, else None."""
        values = pc.unique(self.dataset.to_table(columns=[column]).column(0))
        return values[0].as_py() if len(values) == 1 else None

    def _read_acl_sets(self) -> dict[str, set[frozenset[str]]]:
        names = set(self.dataset.schema.names)
        cols = ["tenant_id", "acl_groups"] if "acl_groups" in names else ["tenant_id"]
        tbl = self.dataset.to_table(columns=cols)
        tenants = tbl.column("tenant_id").to_pylist()
        # A snapshot from before ACL columns: every unit is tenant-wide.
        groups = (
            tbl.column("acl_groups").to_pylist()
            if "acl_groups" in names
            else [[TENANT_WIDE_GROUP]] * len(tenants)
        )
        out: dict[str, set[frozenset[str]]] = {}
        for tenant, gs in zip(tenants, groups, strict=True):
            out.setdefault(tenant, set()).add(frozenset(gs or ()))
        return out

    @property
    def tenants(self) -> list[str]:
        """The tenants this snapshot has units of."""
        return sorted(self._acl_sets)

    def tenant_groups(self, tenant: str) -> frozenset[str]:
        """Every ACL group on the rows of ``tenant`` (the operator's view of a whole tenant)."""
        return frozenset(g for s in self._acl_sets.get(tenant, ()) for g in s)

    def operator_principal(
        self, tenant: str, groups: frozenset[str] | set[str] | None = None
    ) -> Principal:
        """The operator's principal (CLI, evals, benchmarks): ``tenant`` with ``groups``, or with
        every group on that tenant's rows (None: the whole tenant). The tenant is always named."""
        if groups is None:
            groups = self.tenant_groups(tenant) | {TENANT_WIDE_GROUP}
        return Principal(tenant=tenant, groups=frozenset(groups))

    def _has_text(self, column: str) -> bool:
        try:
            return (
                self.dataset.to_table(
                    columns=["unit_id"], filter=f"{column} <> ''", limit=1
                ).num_rows
                > 0
            )
        except Exception as exc:  # unknown: keep the field
            log.warning("could not check the snapshot's %s column: %s", column, exc)
            return True

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        snapshots_dir: Path,
        lance_dir: Path,
        *,
        mv_model_dir: str | None = None,
        vv_model_dir: str | None = None,
        ce_model_dir: str | None = None,
        pointer: str = "CURRENT",
        snapshot_id: str | None = None,
        fts_combine: FtsCombine = "max",
        query_cache: Any | None = None,
        **rerank_kw: Any,
    ) -> Searcher:
        """Open the snapshot named by ``pointer`` (or ``snapshot_id``) for reading.

        If the snapshot has an MV axis, the query encoder is loaded from ``mv_model_dir``
        (default: the directory recorded in the manifest) and refused with ``ModelMismatch``
        unless its weights checksum equals the one in the manifest's MV model spec.

        ``fts_combine`` says how per-field BM25 scores combine: "max" (LanceDB's
        ``MultiMatchQuery``: the best boosted field wins, like Elasticsearch ``best_fields``) or
        "sum" (a ``BooleanQuery`` of boosted per-field SHOULD clauses: a term in title *and* body
        counts twice, like ``most_fields``).

        The rerank stage's cross-encoder, if the manifest names one, is loaded and warmed here
        (from ``ce_model_dir``, default: the manifest's directory); one that is missing, does
        not load or has other weights is left out, with the reason (``serving.reranking``).
        """
        snapshots_dir, lance_dir = Path(snapshots_dir), Path(lance_dir)
        manifest = (
            read_manifest(snapshots_dir, snapshot_id)
            if snapshot_id
            else read_current_manifest(snapshots_dir, pointer)
        )
        db = lancedb.connect(str(lance_dir))
        table = db.open_table(manifest.table_name)
        version = manifest.stats.get("table_version")
        if isinstance(version, int):
            table.checkout(version)  # pin the exact table version the snapshot published
        encoder = cls._load_mv_encoder(manifest, mv_model_dir)
        vv_encoder, vv_unavailable = load_vv_encoder(manifest, vv_model_dir)
        if vv_encoder is not None and "vector_vv" not in table.schema.names:
            vv_encoder, vv_unavailable = None, f"table {manifest.table_name} has no vector_vv"
        if "cross_encoder" not in rerank_kw:
            rerank_kw["cross_encoder"], rerank_kw["cross_encoder_unavailable"] = load_cross_encoder(
                manifest, ce_model_dir
            )
        return cls(
            manifest,
            table,
            encoder,
            snapshots_dir=snapshots_dir,
            lance_dir=lance_dir,
            fts_combine=fts_combine,
            vv_encoder=vv_encoder,
            vv_unavailable=vv_unavailable,
            query_cache=query_cache,
            **rerank_kw,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> Searcher:
        """Open the current snapshot; its query model is the one its manifest records, unless
        RAG_QUERY_MODEL_DIR points elsewhere (another copy of the same weights, say)."""
        kw.setdefault("mv_model_dir", settings.query_model_dir)
        kw.setdefault("vv_model_dir", settings.query_vv_model_dir)
        kw.setdefault("ce_model_dir", settings.query_ce_model_dir)
        kw.setdefault("rerank_depth", settings.rerank_depth)  # None: the ranker's own
        kw.setdefault("rerank_budget_ms", settings.rerank_budget_ms)
        if "snapshot_id" not in kw:  # serving follows the promoted snapshot once there is one
            promoted = (settings.snapshots_dir / "PROMOTED").exists()
            kw.setdefault("pointer", "PROMOTED" if promoted else "CURRENT")
        return cls.open(settings.snapshots_dir, settings.lance_dir, **kw)

    @staticmethod
    def _load_mv_encoder(
        manifest: SnapshotManifest, mv_model_dir: str | None
    ) -> TextEncoder | None:
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
            entry: dict[str, Any] = {
                "available": axis not in self.unavailable,
                "reason": self.unavailable.get(axis),
            }
            if info is not None and info.model is not None:
                entry["model"] = _model_health(info.model) | {"dim": info.dim or info.model.dim}
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
            "cross_encoder": self._cross_encoder_health(),
        }

    def _cross_encoder_health(self) -> dict[str, Any] | None:
        """The rerank stage's cross-encoder: its profile, model, whether it is loaded and why
        not (None: the snapshot names none)."""
        info = self.manifest.cross_encoder
        if info is None:
            return None
        return {
            "profile": info.profile,
            "available": self.cross_encoder is not None,
            "reason": None if self.cross_encoder is not None else self.cross_encoder_unavailable,
            "top_n": info.config.get("top_n"),
            "model": _model_health(info.model),
        }

    # -- per-axis candidate retrieval --------------------------------------------------------
    # Each source returns only what ranking needs (row ids and scores); the hits' columns are
    # read after fusion, for the final hits alone (``_fetch_rows``).
    def _candidate_sources(self) -> dict[str, AxisSource]:
        return {
            "fts": AxisSource(self._fts_encode, self._fts_search),
            "mv": AxisSource(self._mv_encode, self._mv_search),
            "vv": AxisSource(self._vv_encode, self._vv_search),
            "tags": AxisSource(lambda req: None, self._tags_search),
        }

    def fts_query(self, text: str, lib: Any = lance_query) -> Any:
        """The BM25 query over the fields with text, with this searcher's boosts and
        ``fts_combine``: ``lib`` is ``lance.query`` or ``lancedb.query`` (same class names and
        arguments)."""
        return fts_query(text, self._fts_fields, self._fts_boosts, self.fts_combine, lib)

    def where(self, principal: Principal, filters: SearchFilters | None = None) -> str | None:
        """The SQL prefilter of a principal's request (``build_filter``), less the clauses every
        row passes: the tenant clause when every row is that tenant's, the group clause when
        every row of the tenant carries one of the principal's groups."""
        if not isinstance(principal, Principal):
            raise TypeError(f"a Principal is required, not {type(principal).__name__}")
        sets = self._acl_sets.get(principal.tenant)
        all_readable = bool(sets) and all(s & principal.groups for s in sets or ())
        if not all_readable and "acl_groups" not in self.dataset.schema.names:
            # A snapshot from before ACL columns whose rows this principal cannot all read:
            # nothing (its rows are tenant-wide, so the principal lacks the tenant-wide group).
            return sql_and(
                build_filter(principal, filters, sole_tenant=self._sole_tenant, all_readable=True),
                "false",
            )
        return build_filter(
            principal, filters, sole_tenant=self._sole_tenant, all_readable=all_readable
        )

    def _fts_encode(self, req: SearchRequest) -> str | None:
        terms = query_terms(req.query)
        if not terms or not self._fts_fields:  # stopwords only, or no text in the snapshot
            return None
        return " ".join(terms)

    def _fts_search(self, text: str, where: str | None, limit: int) -> AxisCandidates:
        return fts_candidates(self.dataset, self.fts_query(text), where, limit, text=text)

    def _mv_encode(self, req: SearchRequest) -> Any:
        assert self.encoder is not None
        return self.query_cache.encode(self._model_key("mv"), req.query, self.encoder.encode_query)

    def _mv_search(self, vec: Any, where: str | None, limit: int) -> AxisCandidates:
        return self._vector_search("vector_mv", self.mv_clause, vec, where, limit)

    def _vv_encode(self, req: SearchRequest) -> Any:
        assert self.vv_encoder is not None
        return self.query_cache.encode(  # the text tower: text -> image
            self._model_key("vv"), req.query, self.vv_encoder.encode_query
        )

    def _model_key(self, axis: str) -> str:
        """What identifies an axis' query model in the embedding cache: its model key (id,
        revision, weights) as the manifest records it."""
        info = self.manifest.axes.get(axis)
        spec = info.model if info is not None else None
        return f"{axis}:{spec.key if spec is not None else self.manifest.snapshot_id}"

    def _vv_search(self, vec: Any, where: str | None, limit: int) -> AxisCandidates:
        return self._vector_search("vector_vv", "has_vv = true", vec, where, limit)

    def _tags_search(self, entities: list[str], where: str | None, limit: int) -> AxisCandidates:
        row_ids, scores = self._tags.search(self.dataset, entities, where or "true", limit)
        return AxisCandidates(row_ids, scores)

    def _timed_search(
        self, source: AxisSource, query: Any, where: str | None, limit: int
    ) -> tuple[AxisCandidates, float]:
        t0 = time.perf_counter()
        return (
            AxisCandidates.EMPTY if query is None else source.search(query, where, limit),
            _ms(t0),
        )

    def _fetch_rows(
        self, row_ids: list[int], columns: list[str] | None = None
    ) -> dict[int, dict[str, Any]]:
        """The hit columns (or ``columns``) of the given rows, by row id."""
        if not row_ids:
            return {}
        cols = self._hit_columns if columns is None else columns
        rows = self.dataset.take(
            self._row_keys.offsets(row_ids), columns=[*cols, "_rowid"]
        ).to_pylist()
        out = {int(r.pop("_rowid")): r for r in rows}
        if out.keys() != set(row_ids):
            raise SearchError("the snapshot dataset returned other rows than asked for")
        return out

    # -- search ----------------------------------------------------------------------------
    def _fused(
        self,
        req: SearchRequest,
        principal: Principal,
        n: int,
        timings: dict[str, float],
        t_start: float,
    ) -> tuple[list[FusedHit], QueryType, dict[str, float], list[str], list[str], QueryMatcher]:
        """The top ``n`` fused candidates of a request, with what fusion decided on the way
        (query type, weights, axes, query entities) and the query's matcher."""
        if req.axes is not None:
            bad = [a for a in req.axes if a in self.unavailable]
            if bad:
                raise AxisUnavailable(
                    "; ".join(
                        f"axis {a!r} is unavailable in snapshot {self.manifest.snapshot_id}: "
                        f"{self.unavailable[a]}"
                        for a in bad
                    )
                )
            axes = [a for a in AXES if a in req.axes]
        else:
            axes = self.available_axes
        if not axes:
            raise AxisUnavailable(
                f"snapshot {self.manifest.snapshot_id} has no servable axis: {self.unavailable}"
            )

        # Fusion weights and the query classifier's threshold learned beside the ranker.
        learned = self.ranker.served_fusion if self.ranker is not None else {}
        query_type: QueryType = req.query_type or classify_query(
            req.query, int(learned.get("semantic_min_words", SEMANTIC_MIN_WORDS))
        )
        weights = weights_for(query_type, axes, learned.get("fts_share"))
        axes = [a for a in axes if a in weights]
        # Metadata first: tags named in the query pull the units carrying them up (not when the
        # request restricts the axes: then it gets exactly those).
        entities = self._tags.entities(req.query) if req.axes is None else []
        if entities:
            weights = {a: w * (1.0 - TAG_WEIGHT) for a, w in weights.items()} | {"tags": TAG_WEIGHT}
            axes = [*axes, "tags"]
        where = self.where(principal, req.filters)
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
        futures = {
            a: self._pool.submit(self._timed_search, sources[a], queries[a], where, limit)
            for a in axes[:-1]
        }
        done = {axes[-1]: self._timed_search(sources[axes[-1]], queries[axes[-1]], where, limit)}
        matcher = QueryMatcher(req.query)  # explains the hits; made while the others finish
        done.update((a, f.result()) for a, f in futures.items())
        results = {}
        for axis in axes:
            results[axis], timings[axis] = done[axis]
        timings["axes_wall"] = _ms(t_start)

        t_fuse = time.perf_counter()
        fused = fuse_candidates(
            results, weights, n, partial(self._row_keys.keys, collapse=req.collapse)
        )
        timings["fuse"] = _ms(t_fuse)
        return fused, query_type, weights, axes, entities, matcher

    def fused_candidates(
        self, request: SearchRequest | str, principal: Principal, **kw: Any
    ) -> list[Candidate]:
        """The fused candidates the rerank stage would see (``rerank_depth`` of them, default
        ``self.rerank_depth``), in fused order, with their path and locations besides the
        feature columns: what a ranker is trained on."""
        req = (
            SearchRequest(query=request, **kw)
            if isinstance(request, str)
            else SearchRequest.model_validate({**request.model_dump(), **kw})
        )
        depth = self.depth_for(req)
        fused = self._fused(req, principal, depth, {}, time.perf_counter())[0]
        return self.rerank_candidates(fused, extra_columns=["path", "locations", "unit_id"])

    def search(
        self, request: SearchRequest | str, principal: Principal, **kw: Any
    ) -> SearchResponse:
        """Search as ``principal``: only its tenant's units that carry one of its groups."""
        t_start = time.perf_counter()
        if isinstance(request, str):
            req = SearchRequest(query=request, **kw)
        elif kw:
            req = SearchRequest.model_validate({**request.model_dump(), **kw})
        else:
            req = request
        timings: dict[str, float] = {}

        depth = self.depth_for(req)
        reranking = self.ranker is not None and req.rerank
        fused, query_type, weights, axes, entities, matcher = self._fused(
            req, principal, max(req.k, depth) if reranking else req.k, timings, t_start
        )

        why: dict[int, RerankExplanation] = {}
        rerank_info = None
        if reranking:
            t_rerank = time.perf_counter()
            fused, why, rerank_info = self._rerank(req.query, fused, depth, req.k)
            timings["rerank"] = _ms(t_rerank)
        fused = fused[: req.k]

        t_fetch = time.perf_counter()
        rows = self._fetch_rows([f.row_id for f in fused])
        timings["fetch"] = _ms(t_fetch)

        t_build = time.perf_counter()
        fusion = FusionInfo(query_type=query_type, weights=weights, rrf_k=RRF_K)
        hits = [
            build_hit(rows[f.row_id], f.score, f.axes, matcher, fusion, entities) for f in fused
        ]
        for hit, f in zip(hits, fused, strict=True):
            hit.explanation.rerank = why.get(f.key)
        timings["build"] = _ms(t_build)
        timings["total"] = _ms(t_start)
        return SearchResponse(
            query=req.query,
            query_type=query_type,
            snapshot_id=self.manifest.snapshot_id,
            axes_used=axes,
            axes_unavailable=dict(self.unavailable),
            hits=hits,
            timings_ms=timings,
            rerank=rerank_info,
        )

    def depth_for(self, req: SearchRequest) -> int:
        """Fused candidates the stage reorders: the request's, else the configured depth, else
        the one the ranker was trained for, else ``DEFAULT_DEPTH``."""
        ranker_depth = self.ranker.depth if self.ranker is not None else None
        return req.rerank_depth or self.rerank_depth or ranker_depth or DEFAULT_DEPTH

    def rerank_candidates(
        self, fused: list[FusedHit], extra_columns: list[str] | None = None
    ) -> list[Candidate]:
        """The fused hits as the rerank stage sees them: their feature columns, axes and
        fused ranks (also what training computes features from)."""
        cols = list(dict.fromkeys([*self._feature_columns, *(extra_columns or [])]))
        rows = self._fetch_rows([f.row_id for f in fused], cols)
        return [
            Candidate(
                row=rows[f.row_id],
                axes={a: AxisEvidence(h.rank, h.score) for a, h in f.axes.items()},
                fused_rank=i,
                fused_score=f.score,
            )
            for i, f in enumerate(fused, start=1)
        ]

    def _rerank(
        self, query: str, fused: list[FusedHit], depth: int, k: int
    ) -> tuple[list[FusedHit], dict[int, RerankExplanation], RerankInfo]:
        """The fused hits reordered by the ranker (or as they were, past the time ceiling),
        each reranked one's reasons by fusion key, and what the stage did."""
        assert self.ranker is not None
        t0 = time.perf_counter()
        candidates = self.rerank_candidates(fused[:depth])
        spent_ms = (time.perf_counter() - t0) * 1000.0
        outcome = rerank(
            QueryFeatures(query),
            candidates,
            self.ranker,
            depth=depth,
            budget_ms=max(0.0, self.rerank_budget_ms - spent_ms),
            cross_encoder=self.cross_encoder,
            cross_encoder_unavailable=self.cross_encoder_unavailable,
        )
        ce = outcome.cross_encoder
        info = RerankInfo(
            applied=outcome.applied,
            reranked=outcome.reranked,
            timed_out=outcome.timed_out,
            ranker_version=self.ranker.version,
            cross_encoder=(
                CrossEncoderSummary(
                    applied=ce.applied, scored=ce.scored, timed_out=ce.timed_out, reason=ce.reason
                )
                if ce is not None
                else None
            ),
        )
        if not outcome.applied:
            return fused, {}, info
        # Explained: the hits a response can show (the top ``k`` is cut by the caller).
        shown = outcome.order[: max(k, 1)]
        why = {
            fused[i].key: RerankExplanation(
                score=round(outcome.scores[i], 6),
                fused_rank=i + 1,
                contributions={
                    name: round(v, 6) for name, v in explain(outcome, self.ranker, i).items()
                },
                features={name: round(v, 6) for name, v in outcome.features[i].items()},
            )
            for i in shown
            if i in outcome.scores
        }
        return [fused[i] for i in outcome.order], why, info

    def thumbnail_file(self, asset_id: str, principal: Principal) -> Path | None:
        """The stored thumbnail of an asset this snapshot serves to ``principal`` (None: none,
        or not the principal's to see)."""
        if (
            self.lance_dir is None
            or not re.fullmatch(r"[0-9a-f]{64}", asset_id)
            or "thumbnail" not in self.dataset.schema.names
        ):
            return None
        rows = (
            self.dataset.to_table(
                columns=["thumbnail"],
                limit=1,
                filter=sql_and(
                    self.where(principal), f"asset_id = {sql_str(asset_id)}", "thumbnail <> ''"
                ),
            )
            .column("thumbnail")
            .to_pylist()
        )
        if not rows:
            return None
        path = Path(self.lance_dir).parent / rows[0]  # thumbnails sit beside the lance dir
        return path if path.is_file() else None

    def unit(self, unit_id: str, principal: Principal) -> Hit | None:
        """One unit as a hit with its full explanation (no query: nothing matched, score 0);
        None when the principal may not see it or it does not exist."""
        if not isinstance(unit_id, str) or not unit_id or len(unit_id) > 256:
            return None
        tbl = self.dataset.to_table(
            columns=["_rowid"],
            with_row_id=True,
            limit=1,
            filter=sql_and(self.where(principal), f"unit_id = {sql_str(unit_id)}"),
        )
        if not tbl.num_rows:
            return None
        row_id = int(tbl.column("_rowid")[0].as_py())
        row = self._fetch_rows([row_id])[row_id]
        fusion = FusionInfo(query_type="balanced", weights={}, rrf_k=RRF_K)
        hit = build_hit(row, 0.0, {}, QueryMatcher(""), fusion)
        hit.explanation.snapshot_id = self.manifest.snapshot_id
        return hit

    def tag_counts(self, principal: Principal, limit: int = 200) -> list[tuple[str, int]]:
        """The content tags on the units ``principal`` may read, with how many units carry
        each, most used first (ties by name): the vocabulary a tag filter can offer."""
        if "content_tags" not in self.dataset.schema.names:
            return []
        col = self.dataset.to_table(
            columns=["content_tags"],
            filter=sql_and(self.where(principal), "array_length(content_tags) > 0"),
        ).column("content_tags")
        counts = Counter(t for tags in col.to_pylist() for t in set(tags or ()))
        return sorted(counts.items(), key=lambda tn: (-tn[1], tn[0]))[:limit]

    def unit_texts(self, unit_ids: list[str], principal: Principal) -> dict[str, dict[str, Any]]:
        """The text columns (body, caption, OCR) and locator of the given units, by unit id:
        only those ``principal`` may read (the evidence of an answer)."""
        ids = [u for u in dict.fromkeys(unit_ids) if isinstance(u, str) and u]
        if not ids:
            return {}
        names = set(self.dataset.schema.names)
        cols = [c for c in ("unit_id", "body", "caption", "ocr", "locator") if c in names]
        rows = self.dataset.to_table(
            columns=cols,
            filter=sql_and(
                self.where(principal), f"unit_id IN ({', '.join(sql_str(u) for u in ids)})"
            ),
        ).to_pylist()
        return {r["unit_id"]: r for r in rows}

    def embed_query(self, text: str) -> Any:
        """The MV query vector of ``text`` through the query cache (what ``search`` uses)."""
        if self.encoder is None:
            raise AxisUnavailable(self.unavailable.get("mv", "no MV query encoder loaded"))
        return self.query_cache.encode(self._model_key("mv"), text, self.encoder.encode_query)

    def embed_texts(self, texts: list[str]) -> Any:
        """MV vectors of ``texts`` (rows), through the query cache: an answer's evidence
        sentences recur across questions about the same documents."""
        if self.encoder is None:
            raise AxisUnavailable(self.unavailable.get("mv", "no MV query encoder loaded"))
        rows = self.query_cache.encode_many(self._model_key("mv"), texts, self.encoder.encode)
        return np.stack(rows) if rows else np.zeros((0, self.encoder.dim), dtype=np.float32)

    # -- find similar ----------------------------------------------------------------------
    def similar(
        self, request: SimilarRequest | str, principal: Principal, **kw: Any
    ) -> SearchResponse:
        """Units like ``asset_id``: its own vector as the query (image -> image on VV; the mean
        of a document's chunk vectors on MV). The asset itself is left out. The asset must be
        one ``principal`` may see, and so must every hit."""
        t_start = time.perf_counter()
        if isinstance(request, str):
            req = SimilarRequest(asset_id=request, **kw)
        elif kw:
            req = SimilarRequest.model_validate({**request.model_dump(), **kw})
        else:
            req = request
        where = self.where(principal, req.filters)
        own = f"asset_id = {sql_str(req.asset_id)}"
        names = set(self.dataset.schema.names)
        cols = [c for c in ("vector_vv", "has_vv", "vector_mv", "has_mv") if c in names]
        rows = self.dataset.to_table(
            columns=cols, filter=sql_and(where, own), with_row_id=True
        ).to_pylist()
        if not rows:
            raise KeyError(
                f"no unit of asset {req.asset_id} in snapshot "
                f"{self.manifest.snapshot_id} for tenant {principal.tenant!r}"
            )
        has_vv = any(r.get("has_vv") for r in rows)
        axis = req.axis or ("vv" if has_vv and "vv" not in self.unavailable else "mv")
        if axis in self.unavailable:
            raise AxisUnavailable(
                f"axis {axis!r} is unavailable in snapshot "
                f"{self.manifest.snapshot_id}: {self.unavailable[axis]}"
            )
        vecs = [
            np.asarray(r[f"vector_{axis}"], dtype=np.float32) for r in rows if r.get(f"has_{axis}")
        ]
        if not vecs:
            raise AxisUnavailable(f"asset {req.asset_id} has no {axis} vector to search with")
        query = np.mean(vecs, axis=0)
        query /= max(float(np.linalg.norm(query)), 1e-12)
        limit = max(100, req.k * 5)
        found = self._vector_search(
            f"vector_{axis}",
            f"has_{axis} = true",
            query,
            where,
            limit,
            exclude_rows=[r["_rowid"] for r in rows],  # the asset's own units (all visible)
            exclude=f"asset_id <> {sql_str(req.asset_id)}",
        )
        weights: dict[str, float] = {axis: 1.0}
        fused = fuse_candidates(
            {axis: found}, weights, req.k, partial(self._row_keys.keys, collapse=req.collapse)
        )
        fetched = self._fetch_rows([f.row_id for f in fused])
        fusion = FusionInfo(
            query_type="visual" if axis == "vv" else "semantic", weights=weights, rrf_k=RRF_K
        )
        matcher = QueryMatcher("")
        hits = [build_hit(fetched[f.row_id], f.score, f.axes, matcher, fusion) for f in fused]
        return SearchResponse(
            query=f"similar:{req.asset_id}",
            query_type=fusion.query_type,
            snapshot_id=self.manifest.snapshot_id,
            axes_used=[axis],
            axes_unavailable=dict(self.unavailable),
            hits=hits,
            timings_ms={"total": _ms(t_start)},
        )
