"""Build and publish a search snapshot: a tagged version of the one LanceDB snapshot table.

One row per searchable unit (a document chunk, an image) with its current-best evidence per
axis, every full-text field indexed for BM25 on its own (so each gets its own weight), its MV
vector, filter columns and provenance (evidence items and the runs and models behind them).

Publishing is incremental and streams: the catalog yields one light row per *unit group* (a
file's units under one ACL set) with a hash of every input its rows come from; only groups whose
hash is new are expanded into units, batch by batch (their evidence and vectors read for that
batch alone), and upserted (``merge_insert`` on ``unit_key``); units of vanished or changed
groups that are no longer produced are deleted; small fragments are compacted and the indexes
brought up to date; the resulting table version is tagged with the snapshot id. A group whose
only change is a vector input (a policy switch of the MV or VV profile) keeps its rows: only its
vector columns are rewritten, in place ("columns: vector_mv"). A full rebuild
(``full=True``, ``rag-pipeline materialize --full``) overwrites the table with a new version,
and happens by itself when the table's schema must change (a new vector dimension).

Publishing writes the manifest (table, version, tag), then swaps the CURRENT pointer with a
rename: readers of a previous snapshot keep reading its tagged version, which retention
removes only when no live reader leases it. If nothing changed, nothing is published. The
publisher is the table's single writer (LanceDB's delete and merge_insert commits conflict).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb
import lance
import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import FTS, BTree, IvfRq, LabelList

from rag_pipeline.analysis.profiles import load_profiles
from rag_pipeline.contracts import stable_hash
from rag_pipeline.settings import Settings
from rag_pipeline.snapshot.leases import live_leases, snapshot_leases
from rag_pipeline.snapshot.policy import effective_policy
from rag_pipeline.snapshot.rankers import effective_ranker
from rag_pipeline.snapshot.rankers import resolve as resolve_ranker
from rag_pipeline.snapshot.schema import (
    FTS_FIELDS,
    SNAPSHOT_SCHEMA_VERSION,
    SNAPSHOT_TABLE,
    AxisInfo,
    CrossEncoderInfo,
    SnapshotManifest,
    current_pointer,
    manifest_path,
    normalize_tag,
    read_current_manifest,
    snapshot_arrow_schema,
    write_atomic,
)
from rag_pipeline.storage.catalog.catalog import Catalog, utcnow
from rag_pipeline.storage.vector_store import VectorStore

# Unit groups expanded per batch: bounds the evidence, vectors and rows held at once; each batch
# scans the vector store's key columns once, so not much smaller (100k units: 1024 -> 98 scans).
BATCH_GROUPS = 4096
# Rows per data file: full files are left alone by compaction, so a small change compacts only
# the small files it added instead of rewriting the table.
FRAGMENT_ROWS = 16384
_DELETE_CHUNK = 1000
# LanceDB's FTS index keeps counting replaced and deleted rows in its BM25 statistics after an
# incremental update (scores drift from a fresh build's); once such rows since the last FTS
# build exceed this fraction of the table, publishing rebuilds the FTS indexes.
FTS_REBUILD_FRACTION = 0.02
# The ANN index past ``RAG_VECTOR_ANN_MIN_UNITS`` and the query parameters serving uses with it
# (recorded in the manifest): chosen on SciFact MiniLM vectors at 100k, docs/benchmarks.md.
# IVF_RQ (1-bit RaBitQ codes, exact re-ranking of refine_factor x k candidates) kept recall@10
# >= 0.95 with and without the tenant and ACL prefilters at the latency of IVF_HNSW_SQ, without
# HNSW's slow tail under a tenant prefilter, with an index 8x smaller and as quick to build
# (IVF_PQ: as fast to query, 7x slower to build).
ANN_INDEX = "IVF_RQ"
# IVF partitions: sqrt(vectors), Lance's default; queries probe this fraction of them (1/16:
# 16 of 256 at 100k reached recall 0.95 under every filter in both runs, 8 in one of them).
ANN_PROBE_FRACTION = 1 / 16
ANN_QUERY: dict[str, Any] = {"refine_factor": 5}


def _ann_config(n_vectors: int) -> IvfRq:
    return IvfRq(distance_type="cosine", num_bits=1, num_partitions=max(1, math.isqrt(n_vectors)))


def _latest(name: str, type_: str, key: str) -> str:
    """The newest ok result per (tenant, asset) of one task type, model and config."""
    return f"""{name} AS (
    SELECT * FROM (
        SELECT r.tenant_id, r.asset_id, r.dedupe_key, r.run_id,
               row_number() OVER (PARTITION BY tenant_id, asset_id
               ORDER BY persisted_at DESC, dedupe_key) AS rn
        FROM results r WHERE status = 'ok'
          AND task_type = ${type_} AND model_key = ${key}_key AND config_hash = ${key}_cfg)
    WHERE rn = 1)"""


# One row per unit group: every tenant's current asset (content identity is (tenant, sha256))
# per distinct ACL group set of its current paths (copies of one file readable by different
# groups become separate units, so a unit's paths never name a copy its readers may not see),
# with the results its units are built from and a hash of all of it: the group's rows change
# exactly when the hash does (results and their evidence are immutable once persisted).
# The hash is made of three: text_hash (everything the unit set and its text, filter and
# evidence columns come from), mv_hash (the MV result: has_mv, vector_mv) and vv_hash (the VV
# result); the ``runs`` provenance column depends on all three.
_SELECT_GROUPS = f"""
WITH v0 AS (
    SELECT v.*, list_sort(list_distinct(v.acl_groups)) AS acl
    FROM asset_versions v WHERE is_current),
cur AS (
    SELECT v.*,
           row_number() OVER w_order AS rn,
           list(uri) OVER w_all AS uris,
           list(source_name || '/' || rel_path) OVER w_all AS locations
    FROM v0 v
    WINDOW w_order AS (PARTITION BY tenant_id, asset_id, acl ORDER BY last_seen_at DESC, uri),
           w_all AS (PARTITION BY tenant_id, asset_id, acl ORDER BY uri
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
text_res AS (
    SELECT * FROM (
        SELECT r.*, row_number() OVER (PARTITION BY tenant_id, asset_id
               ORDER BY persisted_at DESC, dedupe_key) AS rn
        FROM results r WHERE status = 'ok'
          AND ((task_type = 'doc_text' AND model_key = $doc_key AND config_hash = $doc_cfg)
            OR (task_type = 'image_meta' AND model_key = $img_key AND config_hash = $img_cfg)))
    WHERE rn = 1),
mv_res AS (
    SELECT * FROM (
        SELECT r.*, row_number() OVER (PARTITION BY tenant_id, input_dedupe_key
               ORDER BY persisted_at DESC, dedupe_key) AS rn
        FROM results r WHERE status = 'ok'
          AND task_type = 'mv_embed' AND model_key = $mv_key AND config_hash = $mv_cfg)
    WHERE rn = 1),
{_latest("ocr_res", "ocr_type", "ocr")},
{_latest("caption_res", "caption_type", "caption")},
{_latest("vv_res", "vv_type", "vv")},
grp AS (
    SELECT c.tenant_id, c.asset_id, c.version_id, c.uri, c.uris, c.locations, c.source,
           c.source_name, c.rel_path, c.acl, c.media_type, c.size, c.mtime_ns,
           t.task_type AS text_type, t.dedupe_key AS text_key, t.run_id AS text_run,
           m.dedupe_key AS mv_key, m.run_id AS mv_run,
           o.dedupe_key AS ocr_key, o.run_id AS ocr_run,
           p.dedupe_key AS caption_key, p.run_id AS caption_run,
           g.dedupe_key AS vv_key, g.run_id AS vv_run,
           count(*) OVER (PARTITION BY c.tenant_id, c.asset_id) AS n_acl
    FROM cur c JOIN text_res t ON t.tenant_id = c.tenant_id AND t.asset_id = c.asset_id
    LEFT JOIN mv_res m ON m.tenant_id = t.tenant_id AND m.input_dedupe_key = t.dedupe_key
    LEFT JOIN ocr_res o ON t.task_type = 'image_meta'
         AND o.tenant_id = c.tenant_id AND o.asset_id = c.asset_id
    LEFT JOIN caption_res p ON t.task_type = 'image_meta'
         AND p.tenant_id = c.tenant_id AND p.asset_id = c.asset_id
    LEFT JOIN vv_res g ON t.task_type = 'image_meta'
         AND g.tenant_id = c.tenant_id AND g.asset_id = c.asset_id
    WHERE c.rn = 1),
hashed AS (
    SELECT *,
           tenant_id || '/' || asset_id || '/' || md5(CAST(acl AS VARCHAR))[:12] AS group_key,
           md5(CAST(row($fmt, tenant_id, asset_id, version_id, uri, uris, locations, source,
               source_name, rel_path, acl, media_type, size, mtime_ns, text_type, text_key,
               text_run, ocr_key, ocr_run, caption_key, caption_run, n_acl) AS VARCHAR))
               AS text_hash,
           md5(CAST(row($fmt, mv_key, mv_run) AS VARCHAR)) AS mv_hash,
           md5(CAST(row($fmt, vv_key, vv_run) AS VARCHAR)) AS vv_hash
    FROM grp)
SELECT *, md5(text_hash || mv_hash || vv_hash) AS group_hash
FROM hashed
ORDER BY tenant_id, asset_id, acl
"""


@dataclass
class SnapshotResult:
    manifest: SnapshotManifest
    published: bool  # False: identical to the current snapshot, nothing new written
    seconds: float


@dataclass
class _Plan:
    """What the next snapshot is made of: the policy's profiles and one row per unit group."""

    policy: dict[str, str]
    profiles: Any  # rag_pipeline.analysis.profiles.Profiles
    groups: pa.Table
    dim: int
    vv_dim: int
    mv_model_key: str
    mv_model_dir: str
    vv_model_key: str | None
    vv_model_dir: str | None
    vv_unavailable: str | None


def plan_groups(settings: Settings, cat: Catalog, policy: dict[str, str] | None = None) -> _Plan:
    """One Arrow row per unit group (no evidence, no vectors), selected by the policy's
    profiles: their model keys and config hashes, so the same evidence is chosen whichever
    profile name first persisted it."""
    profiles = load_profiles(settings)
    policy = policy or effective_policy(profiles, cat)
    text_prof, mv_prof = profiles[policy["text"]], profiles[policy["mv"]]
    doc, img = text_prof.tasks["doc_text"], text_prof.tasks["image_meta"]
    mv_task = mv_prof.tasks["mv_embed"]
    params: dict[str, Any] = {
        "fmt": SNAPSHOT_SCHEMA_VERSION,
        "doc_key": doc.model.key,
        "doc_cfg": stable_hash(doc.config),
        "img_key": img.model.key,
        "img_cfg": stable_hash(img.config),
        "mv_key": mv_task.model.key,
        "mv_cfg": stable_hash(mv_task.config),
    }
    # Image-only profiles named by the policy: OCR text, VLM captions and tags, VV vectors.
    for slot in ("ocr", "caption", "vv"):
        prof = profiles[policy[slot]] if policy.get(slot) else None
        tp = prof.tasks[prof.analyzer] if prof is not None else None
        params |= {
            f"{slot}_type": tp.task_type if tp else "",
            f"{slot}_key": tp.model.key if tp else "",
            f"{slot}_cfg": stable_hash(tp.config) if tp else "",
        }
    groups = cat.con.sql(_SELECT_GROUPS, params=params).to_arrow_table()
    vv_prof = profiles[policy["vv"]] if policy.get("vv") else None
    return _Plan(
        policy=dict(policy),
        profiles=profiles,
        groups=groups,
        dim=int(mv_task.model.dim or 0),
        vv_dim=int(vv_prof.dim or 0) if vv_prof else 0,
        mv_model_key=mv_task.model.key,
        mv_model_dir=str(mv_prof.model_dir),
        vv_model_key=vv_prof.tasks["vv_embed"].model.key if vv_prof else None,
        vv_model_dir=str(vv_prof.model_dir) if vv_prof else None,
        vv_unavailable=vv_prof.unavailable if vv_prof else None,
    )


def _run_info(cat: Catalog, run_ids: list[str]) -> dict[str, dict]:
    if not run_ids:
        return {}
    rows = cat.rows(
        "SELECT run_id, analyzer, backend, model_id, revision, dtype, quantization, "
        "weights_checksum, model_key, config_hash, partition_key, dagster_run_id, persisted_at "
        "FROM analysis_runs WHERE run_id IN (SELECT unnest(?))",
        [run_ids],
    )
    return {
        r["run_id"]: {k: (str(v) if isinstance(v, datetime) else v) for k, v in r.items()}
        for r in rows
    }


def _evidence_item(ev: dict, field: str) -> dict:
    return {
        "kind": ev["kind"],
        "field": field,
        "ordinal": ev["ordinal"],
        "text": ev["text"][:1000],
        "confidence": round(float(ev["confidence"]), 4),
        "run_id": ev["run_id"],
        "locator": json.loads(ev["locator"]) if ev["locator"] else {},
    }


def _ts(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC)


def _taken_at(evs: list[dict]) -> datetime | None:
    for ev in evs:
        if ev["kind"] == "metadata":
            loc = json.loads(ev["locator"]) if ev["locator"] else {}
            raw = loc.get("taken_at")
            if raw:
                try:
                    dt = datetime.fromisoformat(raw)
                    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
                except ValueError:
                    return None
    return None


def _vectors(
    store: VectorStore, axis: str, dim: int, keys: list[str], run_ids: list[str]
) -> dict[tuple[str, str], np.ndarray]:
    """(dedupe_key, target) -> vector, for one batch's results."""
    out: dict[tuple[str, str], np.ndarray] = {}
    vt = store.read_keys(axis, dim, keys, run_ids) if dim else None
    if vt is not None and vt.num_rows:
        mat = vt.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        for k, t, v in zip(
            vt.column("dedupe_key").to_pylist(), vt.column("target").to_pylist(), mat, strict=True
        ):
            out[(k, t)] = v
    return out


def _thumbnail(settings: Settings, asset_id: str) -> str:
    rel = PurePosixPath("thumbnails") / asset_id[:2] / f"{asset_id}.jpg"
    return str(rel) if (settings.data_dir / rel).exists() else ""


def _group_units(
    settings: Settings,
    a: dict,
    evidence: dict[str, list[dict]],
    runs: dict[str, dict],
    vectors: dict[tuple[str, str], np.ndarray],
    vv_vectors: dict[tuple[str, str], np.ndarray],
) -> Iterator[dict]:
    """The units of one group (one file under one ACL set), vectors as numpy arrays or None."""
    # Unit ids are unique within a tenant; a copy under another ACL gets its own suffix.
    suffix = f"~{stable_hash(list(a['acl']), 8)}" if a["n_acl"] > 1 else ""
    evs = evidence.get(a["text_key"], [])
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for ev in evs:
        by_kind[ev["kind"]].append(ev)
    unit_runs = {a["text_type"]: runs.get(a["text_run"], {"run_id": a["text_run"]})}
    if a["mv_run"]:
        unit_runs["mv_embed"] = runs.get(a["mv_run"], {"run_id": a["mv_run"]})
    folder = str(PurePosixPath(a["rel_path"]).parent)
    base = {
        "tenant_id": a["tenant_id"],
        "acl_groups": list(a["acl"]),
        "asset_id": a["asset_id"],
        "version_id": a["version_id"],
        "uri": a["uri"],
        "uris": list(a["uris"]),
        "source": a["source_name"] or PurePosixPath(a["source"]).name,
        "path": a["rel_path"],
        "locations": list(a["locations"]),
        "folder": "" if folder == "." else folder,
        "media_type": a["media_type"],
        "mtime": _ts(a["mtime_ns"]),
        "size": a["size"],
        "taken_at": _taken_at(evs),
        "content_tags": [],
        "thumbnail": "",
        "has_vv": False,
        "vector_vv": None,
        "title": " ".join(e["text"] for e in by_kind["title"]),
        "metadata": "\n".join(e["text"] for e in by_kind["metadata"]),
        "group_key": a["group_key"],
        "group_hash": a["group_hash"],
        "text_hash": a["text_hash"],
        "mv_hash": a["mv_hash"],
        "vv_hash": a["vv_hash"],
    }
    head = [_evidence_item(e, "title") for e in by_kind["title"]] + [
        _evidence_item(e, "metadata") for e in by_kind["metadata"]
    ]
    if a["text_type"] == "doc_text":
        for ch in by_kind["chunk"]:
            vec = vectors.get((a["mv_key"], f"chunk:{ch['ordinal']}")) if a["mv_key"] else None
            yield base | {
                "unit_id": f"{a['asset_id']}:{ch['ordinal']}{suffix}",
                "kind": "document",
                "chunk_index": int(ch["ordinal"]),
                "locator": ch["locator"],
                "body": ch["text"],
                "caption": "",
                "tags": "",
                "ocr": "",
                "has_mv": vec is not None,
                "vector_mv": vec,
                "runs": json.dumps(unit_runs, sort_keys=True),
                "evidence": json.dumps([*head, _evidence_item(ch, "body")]),
            }
        return
    vec = vectors.get((a["mv_key"], "unit:0")) if a["mv_key"] else None
    for slot, task_type in (("ocr", "ocr"), ("caption", "caption"), ("vv", "vv_embed")):
        key, run = a[f"{slot}_key"], a[f"{slot}_run"]
        if key is not None:
            unit_runs[task_type] = runs.get(run, {"run_id": run})
            if slot != "vv":
                for ev in evidence.get(key, []):
                    by_kind[ev["kind"]].append(ev)
    vv_vec = vv_vectors.get((a["vv_key"], "unit:0")) if a["vv_key"] else None
    captions = by_kind["description"] + by_kind["caption"]
    tags = by_kind["keyword"] + by_kind["tag"]
    yield base | {
        "unit_id": f"{a['asset_id']}:img{suffix}",
        "kind": "image",
        "chunk_index": -1,
        "locator": "{}",
        "body": "",
        "caption": "\n".join(e["text"] for e in captions),
        "tags": ", ".join(e["text"] for e in tags),
        "ocr": "\n".join(e["text"] for e in by_kind["ocr"]),
        "content_tags": sorted({normalize_tag(e["text"]) for e in tags} - {""}),
        "thumbnail": _thumbnail(settings, a["asset_id"]),
        "has_mv": vec is not None,
        "vector_mv": vec,
        "has_vv": vv_vec is not None,
        "vector_vv": vv_vec,
        "runs": json.dumps(unit_runs, sort_keys=True),
        "evidence": json.dumps(
            head
            + [_evidence_item(e, "caption") for e in captions]
            + [_evidence_item(e, "tags") for e in tags]
            + [_evidence_item(e, "ocr") for e in by_kind["ocr"]]
        ),
    }


def _fixed_size(vecs: list[np.ndarray | None], dim: int) -> pa.FixedSizeListArray:
    mat = np.zeros((len(vecs), dim), dtype=np.float32)
    for i, v in enumerate(vecs):
        if v is not None:
            mat[i] = v
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.ravel()), dim)


def unit_batches(
    settings: Settings,
    cat: Catalog,
    plan: _Plan,
    groups: pa.Table | None = None,
    batch_groups: int = BATCH_GROUPS,
    emitted: set[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The snapshot rows of ``groups`` (default: every group of the plan) as record batches
    of the snapshot schema: each batch reads the evidence and vectors of its own groups only,
    so memory is bounded by the batch, not the corpus. ``emitted`` collects the unit keys."""
    groups = plan.groups if groups is None else groups
    schema = snapshot_arrow_schema(plan.dim, plan.vv_dim)
    store = VectorStore(settings.lance_dir)
    for start in range(0, groups.num_rows, batch_groups):
        rows = groups.slice(start, batch_groups).to_pylist()
        text_keys = [r[k] for r in rows for k in ("text_key", "ocr_key", "caption_key") if r[k]]
        ev_rows = cat.rows(
            "SELECT dedupe_key, kind, ordinal, text, confidence, locator, run_id "
            "FROM evidence_text WHERE dedupe_key IN (SELECT unnest(?)) "
            "ORDER BY dedupe_key, kind, ordinal",
            [text_keys],
        )
        evidence: dict[str, list[dict]] = defaultdict(list)
        for ev in ev_rows:
            evidence[ev["dedupe_key"]].append(ev)
        del ev_rows
        run_ids = {r[k] for r in rows for k in ("text_run", "mv_run", "ocr_run", "caption_run")}
        run_ids |= {r["vv_run"] for r in rows}
        runs = _run_info(cat, sorted(run_ids - {None}))

        def keys_runs(k: str, rk: str, rows: list[dict] = rows) -> tuple[list[str], list[str]]:
            return [r[k] for r in rows if r[k]], sorted({r[rk] for r in rows if r[rk]})

        vectors = _vectors(store, "mv", plan.dim, *keys_runs("mv_key", "mv_run"))
        vv_vectors = _vectors(store, "vv", plan.vv_dim, *keys_runs("vv_key", "vv_run"))
        cols: dict[str, list] = {name: [] for name in schema.names}
        for a in rows:
            for u in _group_units(settings, a, evidence, runs, vectors, vv_vectors):
                u["unit_key"] = f"{u['tenant_id']}/{u['unit_id']}"
                for name in schema.names:
                    cols[name].append(u.get(name))
        if not cols["unit_id"]:
            continue
        if emitted is not None:
            emitted.update(cols["unit_key"])
        arrays = []
        for field in schema:
            if field.name in ("vector_mv", "vector_vv"):
                arrays.append(_fixed_size(cols[field.name], field.type.list_size))
            else:
                arrays.append(pa.array(cols[field.name], type=field.type))
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _table_uri(settings: Settings, name: str) -> str:
    return str(Path(settings.lance_dir) / f"{name}.lance")


def _same_schema(a: pa.Schema, b: pa.Schema) -> bool:
    return [(f.name, f.type) for f in a] == [(f.name, f.type) for f in b]


def _plan_digest(groups: pa.Table) -> str:
    """Order-independent identity of every group's inputs."""
    con = duckdb.connect()
    con.register("g", groups.select(["group_key", "group_hash"]))
    # Sums of two independent 64-bit hashes per group: no sort, no 100 MB string at 1M units.
    row = con.execute(
        "SELECT count(*) || ':' || coalesce(sum(hash(group_key || ':' || group_hash)), 0) "
        "|| ':' || coalesce(sum(hash(group_hash || ':' || group_key)), 0) FROM g"
    ).fetchone()
    con.close()
    return str(row[0] if row else "")


@dataclass
class _Diff:
    rows: pa.Table  # groups whose units are written whole (new, or their text inputs changed)
    columns: pa.Table  # groups whose units stay and only vector columns change
    stale: list[str]  # unit keys of rows of vanished or changed groups (deleted unless written)
    mv: bool  # some column-only group has a new MV result
    vv: bool  # ... a new VV result


def _diff(groups: pa.Table, old: pa.Table) -> _Diff:
    """The groups whose hash the table does not hold yet, split by what changed: a group whose
    text_hash the table holds (one hash for all of a group's rows) keeps its unit set and text
    columns, so only its vector columns are rewritten; any other is rewritten whole."""
    con = duckdb.connect()
    con.register("plan", groups)
    con.register("old", old)
    con.execute(
        "CREATE TEMP TABLE o AS SELECT group_key, min(group_hash) AS gh, min(text_hash) AS th, "
        "min(mv_hash) AS mh, min(vv_hash) AS vh, count(DISTINCT group_hash) = 1 AS one "
        "FROM old GROUP BY group_key"
    )
    changed = (
        "FROM plan p LEFT JOIN o ON o.group_key = p.group_key "
        "WHERE (o.gh IS DISTINCT FROM p.group_hash OR NOT o.one)"
    )
    cols_only = "(o.one AND o.th = p.text_hash)"
    rows = con.sql(
        f"SELECT p.* {changed} AND NOT coalesce({cols_only}, false) "
        "ORDER BY tenant_id, asset_id, acl"
    ).to_arrow_table()
    columns = con.sql(
        f"SELECT p.*, o.mh <> p.mv_hash AS mv_changed, o.vh <> p.vv_hash AS vv_changed "
        f"{changed} AND {cols_only} ORDER BY tenant_id, asset_id, acl"
    ).to_arrow_table()
    stale = [
        r[0]
        for r in con.execute(
            "SELECT unit_key FROM old o WHERE NOT EXISTS (SELECT 1 FROM plan p "
            "WHERE o.group_key = p.group_key AND o.group_hash = p.group_hash)"
        ).fetchall()
    ]
    con.close()
    mv = bool(columns.num_rows) and bool(pc.any(columns.column("mv_changed")).as_py())
    vv = bool(columns.num_rows) and bool(pc.any(columns.column("vv_changed")).as_py())
    return _Diff(
        rows=rows,
        columns=columns.drop_columns(["mv_changed", "vv_changed"]),
        stale=stale,
        mv=mv,
        vv=vv,
    )


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _fts_config() -> FTS:
    # English stemming and stop words: BM25 over word stems, per field.
    return FTS(stem=True, remove_stop_words=True, language="English", with_position=False)


def _ensure_indexes(tbl: Any) -> list[str]:
    """Create the indexes a table lacks (a new table, or one first written empty)."""
    have = {c for idx in tbl.list_indices() for c in idx.columns}
    made = []
    for f in FTS_FIELDS:
        if f not in have:
            tbl.create_index(f, replace=True, config=_fts_config())
            made.append(f)
    # The principal's prefilter (tenant_id = ? AND array_has_any(acl_groups, ?)) is answered
    # by scalar indexes inside every index query.
    for col, cfg in (("tenant_id", BTree()), ("acl_groups", LabelList())):
        if col not in have:
            tbl.create_index(col, config=cfg, replace=True)
            made.append(col)
    return made


def _ann_index(tbl: Any, column: str) -> Any | None:
    for idx in tbl.list_indices():
        if column in idx.columns and ("ivf" in str(idx.index_type).lower()):
            return idx
    return None


def _ann_query(tbl: Any, name: str) -> dict[str, Any]:
    """Serving's query parameters for the ANN index ``name``: probe ``ANN_PROBE_FRACTION`` of
    its partitions (read from the index, which keeps its partitions as the table grows)."""
    stats = tbl.to_lance().stats.index_stats(name)
    parts = max(int(s.get("num_partitions") or 1) for s in stats.get("indices") or [{}])
    nprobes = max(1, math.ceil(parts * ANN_PROBE_FRACTION))
    return dict(ANN_QUERY, minimum_nprobes=nprobes, index_type=ANN_INDEX)


def _ensure_vector_indexes(
    tbl: Any, settings: Settings, rebuild: list[str] | tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """An ANN index on each vector column with more than ``vector_ann_min_units`` vectors
    (kept up to date by ``_optimize`` once made); vector column -> serving's query parameters.
    A column left without one is searched exactly (``serving.axes.ExactVectors``).

    An index is built again when ``rebuild`` names its column (rewritten in place by a policy
    switch: Lance drops the rewritten fragments from the column's index, and its partitions
    were trained on the previous model's vectors) or when it is not an ``ANN_INDEX`` (made by
    an earlier build)."""
    out: dict[str, dict[str, Any]] = {}
    for column, has in (("vector_mv", "has_mv = true"), ("vector_vv", "has_vv = true")):
        if column not in tbl.schema.names:
            continue
        idx = _ann_index(tbl, column)
        stale = idx is not None and (
            column in rebuild
            or str(idx.index_type).replace("_", "").lower() != ANN_INDEX.replace("_", "").lower()
        )
        if idx is None or stale:
            n = tbl.count_rows(has)
            if idx is None and n <= settings.vector_ann_min_units:
                continue
            tbl.create_index(column, config=_ann_config(n), replace=True)
            tbl.checkout_latest()
            idx = _ann_index(tbl, column)
        assert idx is not None
        out[column] = _ann_query(tbl, idx.name)
    return out


def _write_full(
    settings: Settings, plan: _Plan, cat: Catalog, db: Any
) -> tuple[Any, dict[str, Any]]:
    """Overwrite the snapshot table with every unit: a new version (older tagged versions stay
    readable) written batch by batch in files of ``FRAGMENT_ROWS``."""
    schema = snapshot_arrow_schema(plan.dim, plan.vv_dim)
    reader = pa.RecordBatchReader.from_batches(schema, unit_batches(settings, cat, plan))
    uri = _table_uri(settings, SNAPSHOT_TABLE)
    exists = Path(uri).exists()
    lance.write_dataset(
        reader, uri, schema=schema, mode="overwrite" if exists else "create",
        max_rows_per_file=FRAGMENT_ROWS,
    )  # fmt: skip
    tbl = db.open_table(SNAPSHOT_TABLE)
    n = tbl.count_rows()
    return tbl, {
        "rows_upserted": n,
        "rows_replaced": 0,
        "rows_deleted": 0,
        "groups_changed": plan.groups.num_rows,
        "columns_rewritten": [],
        "rows_column_rewritten": 0,
    }


# What a column-only rewrite writes besides the join key: the changed axis' columns, the
# provenance (``runs`` names the MV and VV runs) and the hashes.
_MV_COLUMNS = ("has_mv", "vector_mv", "mv_hash")
_VV_COLUMNS = ("has_vv", "vector_vv", "vv_hash")


def _write_columns(
    settings: Settings,
    plan: _Plan,
    cat: Catalog,
    tbl: Any,
    diff: _Diff,
    old_keys: pa.Array,
    emitted: set[str],
    leftover: list[pa.RecordBatch],
) -> tuple[list[str], int]:
    """Rewrite the vector columns of the column-only groups in place: Lance attaches new data
    files holding just those columns to the fragments that hold the rows (``merge_insert`` in
    ``rewrite_columns`` mode), so the text columns' files, the FTS and scalar indexes and the
    row ids stay. A unit the table lacks (cannot happen while units are a function of the
    text inputs alone, but then it is not lost) goes to ``leftover``, for the row upsert.
    Returns the vector columns rewritten and the number of rows."""
    vector_cols = ["vector_mv"] * diff.mv + ["vector_vv"] * (diff.vv and plan.vv_dim > 0)
    if not vector_cols:  # no vector input changed (cannot happen): rewrite the rows whole
        leftover.extend(unit_batches(settings, cat, plan, diff.columns))
        return [], 0
    names = ["unit_key", "runs", "group_hash"]
    names += [*_MV_COLUMNS] * diff.mv + [*_VV_COLUMNS] * ("vector_vv" in vector_cols)
    full = snapshot_arrow_schema(plan.dim, plan.vv_dim)
    schema = pa.schema([full.field(n) for n in names])
    written: list[int] = [0]

    def batches() -> Iterator[pa.RecordBatch]:
        for b in unit_batches(settings, cat, plan, diff.columns):
            there = pc.is_in(b.column("unit_key"), value_set=old_keys)
            if not pc.all(there).as_py():
                leftover.append(b.filter(pc.invert(there)))
                b = b.filter(there)
            emitted.update(b.column("unit_key").to_pylist())
            written[0] += b.num_rows
            yield pa.RecordBatch.from_arrays([b.column(n) for n in names], schema=schema)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    ds = tbl.to_lance()
    res = (
        ds.merge_insert("unit_key")
        .when_matched_update_all()
        .write_mode("rewrite_columns")
        .execute(reader)
    )
    tbl.checkout_latest()
    return vector_cols, int(res.get("num_updated_rows", written[0]))


def _write_incremental(settings: Settings, plan: _Plan, cat: Catalog, tbl: Any) -> dict[str, Any]:
    """Rewrite the vector columns of groups whose only change is a vector input (a policy
    switch of the MV or VV profile), upsert the units of new and changed groups, delete those
    no longer produced."""
    old = tbl.to_lance().to_table(
        columns=["unit_key", "group_key", "group_hash", "text_hash", "mv_hash", "vv_hash"]
    )
    diff = _diff(plan.groups, old)
    old_keys = pc.filter(
        old.column("unit_key"), pc.is_in(old.column("group_key"), diff.columns["group_key"])
    ).combine_chunks()
    del old
    emitted: set[str] = set()
    leftover: list[pa.RecordBatch] = []
    columns, column_rows = _write_columns(
        settings, plan, cat, tbl, diff, old_keys, emitted, leftover
    )
    upserted = replaced = 0
    if diff.rows.num_rows or leftover:
        schema = snapshot_arrow_schema(plan.dim, plan.vv_dim)
        batches = unit_batches(settings, cat, plan, diff.rows, emitted=emitted)
        reader = pa.RecordBatchReader.from_batches(schema, itertools.chain(batches, leftover))
        res = (
            tbl.merge_insert("unit_key")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(reader)
        )
        upserted = int(res.num_updated_rows) + int(res.num_inserted_rows)
        replaced = int(res.num_updated_rows)
        emitted.update(k for b in leftover for k in b.column("unit_key").to_pylist())
    gone = sorted(set(diff.stale) - emitted)
    for i in range(0, len(gone), _DELETE_CHUNK):
        chunk = gone[i : i + _DELETE_CHUNK]
        tbl.delete(f"unit_key IN ({', '.join(_quote(k) for k in chunk)})")
    return {
        "rows_upserted": upserted,
        "rows_replaced": replaced,
        "rows_deleted": len(gone),
        "groups_changed": diff.rows.num_rows + diff.columns.num_rows,
        "columns_rewritten": columns,
        "rows_column_rewritten": column_rows,
    }


def _optimize(settings: Settings) -> None:
    """Compact the small files a change added (full files are not touched) and bring every
    index up to date: LanceDB's FTS indexes take new rows only through this step (until then
    they are searched unindexed). Old versions are retention's business (``_retain``)."""
    ds = lance.dataset(_table_uri(settings, SNAPSHOT_TABLE))
    ds.optimize.compact_files(target_rows_per_fragment=FRAGMENT_ROWS)
    ds = lance.dataset(_table_uri(settings, SNAPSHOT_TABLE))
    ds.optimize.optimize_indices()


def _table_stats(tbl: Any, plan: _Plan) -> dict[str, Any]:
    """Counts of the written version (the table, not the change) and of the plan."""
    ds = tbl.to_lance()
    n_units = ds.count_rows()
    per_tenant: dict[str, int] = {}
    if n_units:
        vc = pc.value_counts(ds.to_table(columns=["tenant_id"]).column(0).combine_chunks())
        per_tenant = {
            str(v["values"]): int(v["counts"]) for v in vc.to_pylist()
        }  # small: one entry per tenant

    def count(where: str) -> int:
        return int(ds.count_rows(filter=where)) if n_units else 0

    g = plan.groups
    con = duckdb.connect()
    con.register("g", g.select(["tenant_id", "asset_id", "text_type", "caption_key"]))
    row = con.execute(
        "SELECT count(DISTINCT (tenant_id, asset_id)), "
        "count(DISTINCT (tenant_id, asset_id)) FILTER (WHERE text_type = 'doc_text'), "
        "count(DISTINCT (tenant_id, asset_id)) FILTER (WHERE text_type = 'image_meta' "
        "AND caption_key IS NOT NULL) FROM g"
    ).fetchone()
    con.close()
    n_assets, n_docs, n_captioned = (int(x or 0) for x in (row or (0, 0, 0)))
    return {
        "policy": dict(plan.policy),
        # Units with text the MV axis embeds but no vector: a gap, unlike a bare image.
        "n_units_missing_mv": count(
            "has_mv = false AND (kind = 'document' OR title <> '' OR caption <> '' OR tags <> '')"
        ),
        "n_assets": n_assets,
        "n_documents": n_docs,
        "n_images": n_assets - n_docs,
        "tenants": sorted(per_tenant),
        "n_units_per_tenant": dict(sorted(per_tenant.items())),
        "n_units": n_units,
        "n_units_with_mv": count("has_mv = true"),
        "mv_dim": plan.dim,
        "mv_model_key": plan.mv_model_key,
        "mv_model_dir": plan.mv_model_dir,
        "n_units_with_vv": count("has_vv = true") if plan.vv_dim else 0,
        "vv_dim": plan.vv_dim,
        "vv_model_key": plan.vv_model_key,
        "vv_model_dir": plan.vv_model_dir,
        "vv_unavailable": plan.vv_unavailable,
        "n_images_with_ocr": count("ocr <> ''"),
        "n_images_with_caption": n_captioned,
    }


def _cross_encoder(plan: _Plan) -> CrossEncoderInfo | None:
    """The cross-encoder the policy names, as the manifest records it (None: none)."""
    name = plan.policy.get("cross_encoder")
    if not name:
        return None
    prof = plan.profiles[name]
    return CrossEncoderInfo(
        profile=name,
        available=prof.unavailable is None,
        model=prof.tasks["cross_encoder"].model,
        model_dir=str(prof.model_dir) if prof.model_dir else None,
        config={**prof.runtime, **prof.tasks["cross_encoder"].config},
        reason=f"cross-encoder unavailable: {prof.unavailable}" if prof.unavailable else None,
    )


def _fingerprint(
    plan: _Plan, settings: Settings, ranker_version: str, ce: CrossEncoderInfo | None = None
) -> str:
    """Identity of a snapshot's content: same evidence, policy and settings -> same value."""
    parts: list[Any] = [
        SNAPSHOT_SCHEMA_VERSION,
        _plan_digest(plan.groups),
        settings.field_weights.model_dump(),
        plan.policy,
        ranker_version,
        plan.mv_model_key,
        plan.vv_model_key,
        plan.vv_unavailable,
    ]
    if ce is not None:  # only then: snapshots without one keep their fingerprints
        parts.append(ce.model_dump(mode="json"))
    return stable_hash(parts, 32)


def build_snapshot(
    settings: Settings,
    cat: Catalog,
    dagster_run_id: str | None = None,
    force: bool = False,
    policy: dict[str, str] | None = None,
    full: bool = False,
) -> SnapshotResult:
    """Publish the catalog's current state as a new snapshot (a tagged table version).

    ``full``: rewrite every unit (else only the change since the table's latest version).
    ``force``: publish even when nothing changed."""
    t0 = time.perf_counter()
    plan = plan_groups(settings, cat, policy)
    # The ranker the policy names travels in the manifest: serving reads it from there.
    ranker_version = effective_ranker(settings, cat)
    ranker = resolve_ranker(settings, ranker_version)
    cross_encoder = _cross_encoder(plan)
    fp = _fingerprint(plan, settings, ranker_version, cross_encoder)
    try:
        current = read_current_manifest(settings.snapshots_dir)
    except FileNotFoundError:
        current = None
    if current and current.stats.get("fingerprint") == fp and not force and not full:
        return SnapshotResult(current, published=False, seconds=time.perf_counter() - t0)

    now = utcnow()
    snapshot_id = f"{now:%Y%m%dT%H%M%S}-{fp[:8]}"
    schema = snapshot_arrow_schema(plan.dim, plan.vv_dim)
    db = lancedb.connect(str(settings.lance_dir))
    tbl = db.open_table(SNAPSHOT_TABLE) if SNAPSHOT_TABLE in db else None  # type: ignore[operator]
    # The same state published twice within a second (a policy switched A -> B -> A): the
    # id, a table tag, must still be new.
    tags = set(tbl.tags.list()) if tbl is not None else set()
    taken = 1
    while snapshot_id in tags or manifest_path(settings.snapshots_dir, snapshot_id).exists():
        taken += 1
        snapshot_id = f"{now:%Y%m%dT%H%M%S}-{fp[:8]}-{taken}"
    if full:
        mode = "full"
    elif tbl is None:
        mode = "full: first snapshot table"
    elif not _same_schema(tbl.schema, schema):
        # A new vector dimension (a policy switch to another model) or an older schema:
        # no row of the old table fits, so every row is written again.
        mode = "full: the table schema changed"
    else:
        mode = "incremental"
    t_write = time.perf_counter()
    if mode == "incremental":
        assert tbl is not None
        change = _write_incremental(settings, plan, cat, tbl)
        if change["columns_rewritten"]:
            # A policy switch that kept every unit: only these columns were written.
            cols = f"columns: {', '.join(change['columns_rewritten'])}"
            rows_too = change["rows_upserted"] or change["rows_deleted"]
            mode = f"incremental + {cols}" if rows_too else cols
    else:
        tbl, change = _write_full(settings, plan, cat, db)
    write_s = time.perf_counter() - t_write
    incremental = mode.startswith(("incremental", "columns"))
    t_idx = time.perf_counter()
    tbl.checkout_latest()
    fts_stale = 0
    if incremental and current is not None:
        fts_stale = int(current.stats.get("fts_stale_rows", 0))
    fts_stale += change["rows_replaced"] + change["rows_deleted"]
    fts_rebuilt = False
    if n_rows := tbl.count_rows():
        made = _ensure_indexes(tbl)
        # A column-only rewrite adds no fragment and deletes no row: nothing to compact, and
        # the FTS and scalar indexes still cover every row.
        changed = made or change["rows_upserted"] or change["rows_deleted"]
        if incremental and changed:
            _optimize(settings)
            tbl.checkout_latest()
        if incremental and fts_stale > FTS_REBUILD_FRACTION * n_rows:
            for f in FTS_FIELDS:  # a fresh build: exact BM25 statistics again
                tbl.create_index(f, replace=True, config=_fts_config())
            fts_stale, fts_rebuilt = 0, True
        tbl.checkout_latest()
        ann = _ensure_vector_indexes(tbl, settings, rebuild=change["columns_rewritten"])
    else:
        ann = {}
    tbl.checkout_latest()
    index_s = time.perf_counter() - t_idx
    version = int(tbl.version)
    tbl.tags.create(snapshot_id, version)

    stats = _table_stats(tbl, plan)
    profiles = plan.profiles
    mv = profiles[plan.policy["mv"]].tasks["mv_embed"].model
    vv_slot = plan.policy.get("vv")
    vv_model = profiles[vv_slot].tasks["vv_embed"].model if vv_slot else None
    if not vv_slot:
        vv_reason = "no visual (VV) profile in the snapshot policy"
    elif plan.vv_unavailable:
        vv_reason = f"VV model unavailable: {plan.vv_unavailable}"
    elif not stats["n_units_with_vv"]:
        vv_reason = "no VV vectors persisted for the policy's profile"
    else:
        vv_reason = None
    stats |= {
        "fingerprint": fp,
        "ranker": ranker_version,
        "table_version": version,
        "table_tag": snapshot_id,
        "publish_mode": mode,
        "fts_rebuilt": fts_rebuilt or not incremental,
        "fts_stale_rows": fts_stale if incremental else 0,
        "ann": ann,
        **change,
        "write_seconds": round(write_s, 3),
        "index_seconds": round(index_s, 3),
    }
    n_units = stats["n_units"]
    manifest = SnapshotManifest(
        snapshot_id=snapshot_id,
        table_name=SNAPSHOT_TABLE,
        created_at=now,
        tenants=stats["tenants"],
        n_units=n_units,
        n_documents=stats["n_documents"],
        n_images=stats["n_images"],
        axes={
            "fts": AxisInfo(available=bool(n_units)),
            "mv": AxisInfo(
                available=stats["n_units_with_mv"] > 0,
                model=mv,
                model_dir=plan.mv_model_dir,
                dim=plan.dim,
                reason=None if stats["n_units_with_mv"] else "no MV vectors persisted",
            ),
            "vv": AxisInfo(
                available=vv_reason is None,
                model=vv_model,
                model_dir=plan.vv_model_dir,
                dim=plan.vv_dim or None,
                reason=vv_reason,
            ),
        },
        policy={**plan.policy, "ranker": ranker_version},
        field_weights=settings.field_weights.model_dump(),
        dagster_run_id=dagster_run_id,
        stats=stats,
        ranker=ranker.model_dump(mode="json") if ranker is not None else None,
        cross_encoder=cross_encoder,
    )
    write_atomic(
        manifest_path(settings.snapshots_dir, snapshot_id), manifest.model_dump_json(indent=2)
    )
    write_atomic(current_pointer(settings.snapshots_dir), snapshot_id)
    _retain(settings, db)
    return SnapshotResult(manifest, published=True, seconds=time.perf_counter() - t0)


def _age_key(manifest: Path) -> tuple[str, int]:
    """Ids start with their creation second; within one second, the write time decides."""
    try:
        mtime = manifest.stat().st_mtime_ns
    except FileNotFoundError:  # removed meanwhile
        mtime = 0
    return manifest.stem.split("-", 1)[0], mtime


def _manifest_table(path: Path) -> tuple[str, str | None]:
    """(table, tag) of a manifest file: a tagged version of the snapshot table, or (before
    schema 4) a table of its own."""
    legacy = f"snapshot_{path.stem.replace('-', '_')}"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return legacy, None
    tag = (data.get("stats") or {}).get("table_tag")
    return data.get("table_name") or legacy, tag if isinstance(tag, str) else None


def _retain(settings: Settings, db) -> list[str]:
    """Drop snapshots beyond the newest ``snapshots_kept``, never a pointed-at one and never
    one a live reader holds a lease on (``rag_pipeline.snapshot.leases``); stale leases (dead
    process, heartbeat older than ``lease_ttl_s``) are removed on the way.

    Dropping a snapshot deletes its tag (or its own table, before schema 4); then the snapshot
    table's versions that no tag names are cleaned up (their files deleted), except the latest.
    """
    snapshots_dir = settings.snapshots_dir
    pinned = set()
    for ptr in snapshots_dir.glob("[A-Z]*"):
        if ptr.is_file() and ptr.suffix == "":
            pinned.add(ptr.read_text().strip())
    manifests = sorted(snapshots_dir.glob("*.json"), key=_age_key, reverse=True)  # newest first
    live_leases(snapshots_dir, settings.lease_ttl_s)  # reap stale leases, also of gone snapshots
    dropped = []
    for old in manifests[settings.snapshots_kept :]:
        sid = old.stem
        if sid in pinned:
            continue
        # Checked right before the drop: a reader writes its lease before it opens the table.
        if snapshot_leases(snapshots_dir, sid, settings.lease_ttl_s):
            continue
        table, tag = _manifest_table(old)
        with contextlib.suppress(Exception):  # already gone: only the manifest is left to clean
            if tag is None:
                db.drop_table(table)
            else:
                db.open_table(table).tags.delete(tag)
        old.unlink(missing_ok=True)
        dropped.append(sid)
    uri = _table_uri(settings, SNAPSHOT_TABLE)
    if Path(uri).exists():
        # Untagged versions (a publish's intermediate commits, dropped snapshots): no manifest
        # names them, so no reader opens them. Tagged ones are skipped, not an error.
        lance.dataset(uri).cleanup_old_versions(
            older_than=timedelta(0), error_if_tagged_old_versions=False
        )
    return dropped
