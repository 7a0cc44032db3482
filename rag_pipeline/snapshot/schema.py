"""The search snapshot's contract: Arrow schema of its LanceDB table and its manifest.

The pipeline writes snapshots (``rag_pipeline.snapshot.build``); serving only reads them. This
module is the one thing both sides share, so it imports neither.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from rag_pipeline.contracts import ModelSpec

# 3: acl_groups, path and locations; source is the source's name; one snapshot, all tenants.
# 4: one table, a tagged version per snapshot; unit_key, group_key and group_hash for upserts.
# 5: text_hash, mv_hash and vv_hash: a policy switch rewrites only the vector columns it changes.
SNAPSHOT_SCHEMA_VERSION = 5

# The one LanceDB table every snapshot since schema 4 is a tagged version of.
SNAPSHOT_TABLE = "search_units"

# Full-text fields, each with its own FTS index and BM25 weight (settings.FieldWeights).
FTS_FIELDS = ("title", "body", "caption", "tags", "ocr", "metadata")


def snapshot_arrow_schema(mv_dim: int, vv_dim: int | None = None) -> pa.Schema:
    """``vector_vv`` exists only when the policy names a VV profile (a fixed-size list cannot
    have size 0)."""
    vv = (
        [pa.field("has_vv", pa.bool_()), pa.field("vector_vv", pa.list_(pa.float32(), vv_dim))]
        if vv_dim
        else []
    )
    return pa.schema(
        [
            pa.field("unit_id", pa.string(), nullable=False),  # unit (unique per tenant)
            # Who may read it: the principal's prefilter (BTREE and LABEL_LIST scalar indexes).
            pa.field("tenant_id", pa.string(), nullable=False),
            pa.field("acl_groups", pa.list_(pa.string())),
            pa.field("asset_id", pa.string(), nullable=False),  # sha256 of content
            pa.field("version_id", pa.string(), nullable=False),  # observed file state
            # Absolute paths: the pipeline's own (evals, benchmarks); serving never returns them.
            pa.field("uri", pa.string(), nullable=False),  # primary current path
            pa.field("uris", pa.list_(pa.string())),  # every current path
            pa.field("source", pa.string()),  # configured source name
            pa.field("path", pa.string()),  # path relative to the source
            pa.field("locations", pa.list_(pa.string())),  # every "<source>/<path>"
            pa.field("folder", pa.string()),  # folder relative to source
            pa.field("kind", pa.string(), nullable=False),  # "document" | "image"
            pa.field("media_type", pa.string()),
            pa.field("chunk_index", pa.int32()),  # -1 for whole-asset units
            pa.field("locator", pa.string()),  # JSON: page, offsets
            *[pa.field(f, pa.string()) for f in FTS_FIELDS],
            pa.field("mtime", pa.timestamp("us", tz="UTC")),
            pa.field("taken_at", pa.timestamp("us", tz="UTC")),  # EXIF/XMP date, if any
            pa.field("size", pa.int64()),
            pa.field("has_mv", pa.bool_()),
            pa.field("vector_mv", pa.list_(pa.float32(), mv_dim)),
            *vv,
            # Normalised tag values (image keywords, VLM tags): tag search's pre-filter / boost.
            pa.field("content_tags", pa.list_(pa.string())),
            pa.field("thumbnail", pa.string()),  # relative to the data dir
            # JSON list: {kind, field, ordinal, text, confidence, run_id}
            pa.field("evidence", pa.string()),
            # JSON object: task_type -> {run_id, model_key, model_id, revision, backend, ...}
            pa.field("runs", pa.string()),
            # Incremental publishing: "<tenant>/<unit_id>" (the merge key), the unit's file group
            # "<tenant>/<asset_id>/<acl hash>" and the hash of every input its rows come from.
            pa.field("unit_key", pa.string()),
            pa.field("group_key", pa.string()),
            pa.field("group_hash", pa.string()),
            # The parts of group_hash: the inputs of the unit set and its text columns, of the
            # MV columns (has_mv, vector_mv) and of the VV ones. A group whose text_hash is
            # unchanged keeps its rows and gets only its vector columns rewritten.
            pa.field("text_hash", pa.string()),
            pa.field("mv_hash", pa.string()),
            pa.field("vv_hash", pa.string()),
        ]
    )


class AxisInfo(BaseModel):
    available: bool
    model: ModelSpec | None = None
    model_dir: str | None = None
    dim: int | None = None
    reason: str | None = None  # why an axis is unavailable


class CrossEncoderInfo(BaseModel):
    """The rerank stage's cross-encoder the policy named: its profile, exactly which weights
    (serving loads those or none: model parity) and how it runs (top N, batch, length)."""

    profile: str
    available: bool
    model: ModelSpec
    model_dir: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # retrieval.cross_encoder's config
    reason: str | None = None  # why it is unavailable (its directory was missing at publish)


class SnapshotManifest(BaseModel):
    schema_version: int = SNAPSHOT_SCHEMA_VERSION
    snapshot_id: str
    table_name: str
    created_at: datetime
    tenants: list[str]
    n_units: int
    n_documents: int
    n_images: int
    axes: dict[str, AxisInfo]  # "fts", "mv", "vv"
    # Which profile's evidence fills each policy slot (text, mv, ocr, vv, caption).
    policy: dict[str, str] = Field(default_factory=dict)
    field_weights: dict[str, float]
    dagster_run_id: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    # The ranker the policy names (``rag_pipeline.retrieval.ranker.RankerModel`` as JSON): the
    # rerank stage serving applies to this snapshot; None: no rerank stage.
    ranker: dict[str, Any] | None = None
    # The cross-encoder the policy names (``cross_encoder`` slot); None: none.
    cross_encoder: CrossEncoderInfo | None = None


def normalize_tag(value: str) -> str:
    """One spelling per tag, shared by the snapshot writer and the query side."""
    return " ".join(value.casefold().replace("_", " ").split())


def manifest_path(snapshots_dir: Path, snapshot_id: str) -> Path:
    return snapshots_dir / f"{snapshot_id}.json"


def current_pointer(snapshots_dir: Path) -> Path:
    return snapshots_dir / "CURRENT"


def write_atomic(path: Path, text: str) -> None:
    """Write then rename: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def open_snapshot_table(db: Any, manifest: SnapshotManifest) -> Any:
    """The manifest's LanceDB table at the version it published (its tag names the same
    version); a table from before schema 4 has one version and no ``table_version``."""
    table = db.open_table(manifest.table_name)
    version = manifest.stats.get("table_version")
    if isinstance(version, int):
        table.checkout(version)
    return table


def read_current_manifest(snapshots_dir: Path, pointer: str = "CURRENT") -> SnapshotManifest:
    ptr = snapshots_dir / pointer
    if not ptr.exists():
        raise FileNotFoundError(
            f"no published snapshot under {snapshots_dir} (missing {pointer}); "
            "materialize the pipeline first (make demo, or rag-pipeline materialize)"
        )
    snapshot_id = ptr.read_text().strip()
    return read_manifest(snapshots_dir, snapshot_id)


def read_manifest(snapshots_dir: Path, snapshot_id: str) -> SnapshotManifest:
    return SnapshotManifest.model_validate(
        json.loads(manifest_path(snapshots_dir, snapshot_id).read_text())
    )
