"""Build and publish a search snapshot: a new, read-only LanceDB table per version.

One row per searchable unit (a document chunk, an image) with its current-best evidence per
axis, every full-text field indexed for BM25 on its own (so each gets its own weight), its MV
vector, filter columns and provenance (evidence items and the runs and models behind them).
Publishing writes the manifest, then swaps the CURRENT pointer with a rename: readers of the
previous snapshot keep reading an untouched table. If nothing changed, nothing is published.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, BTree, LabelList

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
    AxisInfo,
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

# Every tenant's current assets (content identity is (tenant, sha256)), one row per distinct
# ACL group set of an asset's current paths: copies of one file readable by different groups
# become separate units, so a unit's paths never name a copy its readers may not see.
_SELECT_UNITS = """
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
    WHERE rn = 1)
SELECT c.tenant_id, c.asset_id, c.version_id, c.uri, c.uris, c.locations, c.source,
       c.source_name, c.rel_path, c.acl, c.media_type, c.size, c.mtime_ns,
       t.task_type AS text_type, t.dedupe_key AS text_key, t.run_id AS text_run,
       m.dedupe_key AS mv_key, m.run_id AS mv_run
FROM cur c JOIN text_res t ON t.tenant_id = c.tenant_id AND t.asset_id = c.asset_id
LEFT JOIN mv_res m ON m.tenant_id = t.tenant_id AND m.input_dedupe_key = t.dedupe_key
WHERE c.rn = 1
ORDER BY c.tenant_id, c.asset_id, c.acl
"""


@dataclass
class SnapshotResult:
    manifest: SnapshotManifest
    published: bool  # False: identical to the current snapshot, nothing new written
    seconds: float


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


def _image_results(cat: Catalog, profile) -> dict[tuple[str, str], dict]:
    """(tenant, asset_id) -> the newest ok result of an image-only profile (matched by model
    and config, like the text and MV results)."""
    if profile is None:
        return {}
    tp = profile.tasks[profile.analyzer]
    rows = cat.rows(
        "SELECT tenant_id, asset_id, dedupe_key, run_id FROM (SELECT r.*, row_number() OVER "
        "(PARTITION BY tenant_id, asset_id ORDER BY persisted_at DESC, dedupe_key) AS rn FROM "
        "results r WHERE status = 'ok' AND task_type = ? AND model_key = ? AND config_hash = ?) "
        "WHERE rn = 1",
        [tp.task_type, tp.model.key, stable_hash(tp.config)],
    )
    return {(r["tenant_id"], r["asset_id"]): r for r in rows}


def _vectors(
    settings: Settings, axis: str, dim: int, run_ids: list[str]
) -> dict[tuple[str, str], np.ndarray]:
    out: dict[tuple[str, str], np.ndarray] = {}
    vt = VectorStore(settings.lance_dir).read(axis, dim, run_ids) if dim else None
    if vt is not None and vt.num_rows:
        keys = vt.column("dedupe_key").to_pylist()
        targets = vt.column("target").to_pylist()
        mat = vt.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        for k, t, v in zip(keys, targets, mat, strict=True):
            out[(k, t)] = v
    return out


def _thumbnail(settings: Settings, asset_id: str) -> str:
    rel = PurePosixPath("thumbnails") / asset_id[:2] / f"{asset_id}.jpg"
    return str(rel) if (settings.data_dir / rel).exists() else ""


def collect_units(
    settings: Settings, cat: Catalog, policy: dict[str, str] | None = None
) -> tuple[list[dict], dict]:
    """Rows for the snapshot table, plus stats. Reads the catalog and the vector store.

    Evidence is selected by the policy's profiles: their model keys and config hashes, so the
    same evidence is chosen whichever profile name first persisted it.
    """
    profiles = load_profiles(settings)
    policy = policy or effective_policy(profiles, cat)
    text_prof, mv_prof = profiles[policy["text"]], profiles[policy["mv"]]
    doc, img = text_prof.tasks["doc_text"], text_prof.tasks["image_meta"]
    mv_task = mv_prof.tasks["mv_embed"]
    mv_spec = mv_task.model
    dim = int(mv_spec.dim or 0)
    assets = cat.rows(
        _SELECT_UNITS,
        {
            "doc_key": doc.model.key,
            "doc_cfg": stable_hash(doc.config),
            "img_key": img.model.key,
            "img_cfg": stable_hash(img.config),
            "mv_key": mv_spec.key,
            "mv_cfg": stable_hash(mv_task.config),
        },
    )
    # Image-only profiles named by the policy: OCR text, VLM captions and tags, VV vectors.
    extra = {
        slot: _image_results(cat, profiles[policy[slot]])
        for slot in ("ocr", "caption", "vv")
        if policy.get(slot)
    }
    vv_prof = profiles[policy["vv"]] if policy.get("vv") else None
    vv_dim = int(vv_prof.dim or 0) if vv_prof else 0
    text_keys = [a["text_key"] for a in assets] + [
        r["dedupe_key"] for slot in ("ocr", "caption") for r in extra.get(slot, {}).values()
    ]
    ev_rows = cat.rows(
        "SELECT dedupe_key, kind, ordinal, text, confidence, locator, run_id FROM evidence_text "
        "WHERE dedupe_key IN (SELECT unnest(?)) ORDER BY dedupe_key, kind, ordinal",
        [text_keys],
    )
    evidence: dict[str, list[dict]] = defaultdict(list)
    for ev in ev_rows:
        evidence[ev["dedupe_key"]].append(ev)

    mv_runs = sorted({a["mv_run"] for a in assets if a["mv_run"]})
    vectors = _vectors(settings, "mv", dim, mv_runs)
    vv_runs = sorted({r["run_id"] for r in extra.get("vv", {}).values()})
    vv_vectors = _vectors(settings, "vv", vv_dim, vv_runs)
    extra_runs = {r["run_id"] for rows in extra.values() for r in rows.values()}
    runs = _run_info(cat, sorted({a["text_run"] for a in assets} | set(mv_runs) | extra_runs))

    units: list[dict] = []
    zero = np.zeros(dim, dtype=np.float32)
    zero_vv = np.zeros(vv_dim, dtype=np.float32)
    n_docs = n_images = n_with_mv = n_with_vv = 0
    acl_sets: dict[tuple[str, str], int] = defaultdict(int)
    for a in assets:
        acl_sets[(a["tenant_id"], a["asset_id"])] += 1
    for a in assets:
        ident = (a["tenant_id"], a["asset_id"])
        # Unit ids are unique within a tenant; a copy under another ACL gets its own suffix.
        suffix = f"~{stable_hash(list(a['acl']), 8)}" if acl_sets[ident] > 1 else ""
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
            "vector_vv": zero_vv,
            "title": " ".join(e["text"] for e in by_kind["title"]),
            "metadata": "\n".join(e["text"] for e in by_kind["metadata"]),
        }
        head = [_evidence_item(e, "title") for e in by_kind["title"]] + [
            _evidence_item(e, "metadata") for e in by_kind["metadata"]
        ]
        if a["text_type"] == "doc_text":
            n_docs += 1
            for ch in by_kind["chunk"]:
                vec = vectors.get((a["mv_key"], f"chunk:{ch['ordinal']}")) if a["mv_key"] else None
                n_with_mv += vec is not None
                units.append(
                    base
                    | {
                        "unit_id": f"{a['asset_id']}:{ch['ordinal']}{suffix}",
                        "kind": "document",
                        "chunk_index": int(ch["ordinal"]),
                        "locator": ch["locator"],
                        "body": ch["text"],
                        "caption": "",
                        "tags": "",
                        "ocr": "",
                        "has_mv": vec is not None,
                        "vector_mv": vec if vec is not None else zero,
                        "runs": json.dumps(unit_runs, sort_keys=True),
                        "evidence": json.dumps([*head, _evidence_item(ch, "body")]),
                    }
                )
        else:
            n_images += 1
            vec = vectors.get((a["mv_key"], "unit:0")) if a["mv_key"] else None
            n_with_mv += vec is not None
            for slot, task_type in (("ocr", "ocr"), ("caption", "caption"), ("vv", "vv_embed")):
                r = extra.get(slot, {}).get(ident)
                if r is not None:
                    unit_runs[task_type] = runs.get(r["run_id"], {"run_id": r["run_id"]})
                    if slot != "vv":
                        for ev in evidence.get(r["dedupe_key"], []):
                            by_kind[ev["kind"]].append(ev)
            vv_res = extra.get("vv", {}).get(ident)
            vv_vec = vv_vectors.get((vv_res["dedupe_key"], "unit:0")) if vv_res else None
            n_with_vv += vv_vec is not None
            captions = by_kind["description"] + by_kind["caption"]
            tags = by_kind["keyword"] + by_kind["tag"]
            units.append(
                base
                | {
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
                    "vector_mv": vec if vec is not None else zero,
                    "has_vv": vv_vec is not None,
                    "vector_vv": vv_vec if vv_vec is not None else zero_vv,
                    "runs": json.dumps(unit_runs, sort_keys=True),
                    "evidence": json.dumps(
                        head
                        + [_evidence_item(e, "caption") for e in captions]
                        + [_evidence_item(e, "tags") for e in tags]
                        + [_evidence_item(e, "ocr") for e in by_kind["ocr"]]
                    ),
                }
            )
    # Units with text the MV axis embeds but no vector: a gap, unlike a bare image.
    missing = sum(
        1
        for u in units
        if not u["has_mv"] and (u["kind"] == "document" or u["title"] or u["caption"] or u["tags"])
    )
    per_tenant: dict[str, int] = defaultdict(int)
    for u in units:
        per_tenant[u["tenant_id"]] += 1
    stats = {
        "policy": dict(policy),
        "n_units_missing_mv": missing,
        "n_assets": len(acl_sets),
        "n_documents": n_docs,
        "n_images": n_images,
        "tenants": sorted(per_tenant),
        "n_units_per_tenant": dict(sorted(per_tenant.items())),
        "n_units": len(units),
        "n_units_with_mv": n_with_mv,
        "mv_dim": dim,
        "mv_model_key": mv_spec.key,
        "mv_model_dir": str(mv_prof.model_dir),
        "n_units_with_vv": n_with_vv,
        "vv_dim": vv_dim,
        "vv_model_key": vv_prof.tasks["vv_embed"].model.key if vv_prof else None,
        "vv_model_dir": str(vv_prof.model_dir) if vv_prof else None,
        "vv_unavailable": vv_prof.unavailable if vv_prof else None,
        "n_images_with_ocr": sum(1 for u in units if u["ocr"]),
        "n_images_with_caption": sum(
            1 for a in assets if a["asset_id"] in extra.get("caption", {})
        ),
    }
    n_docs_assets = {
        (a["tenant_id"], a["asset_id"]) for a in assets if a["text_type"] == "doc_text"
    }
    stats["n_documents"] = len(n_docs_assets)
    stats["n_images"] = len(acl_sets) - len(n_docs_assets)
    return units, stats


def fingerprint(units: list[dict], settings: Settings) -> str:
    """Identity of a snapshot's content: same evidence and settings -> same fingerprint."""
    ident = [
        (
            u["tenant_id"],
            u["unit_id"],
            u["version_id"],
            u["runs"],
            tuple(u["uris"]),
            u["source"],
            u["path"],
            tuple(u["locations"]),
            tuple(u["acl_groups"]),
        )
        for u in units
    ]
    return stable_hash(
        [SNAPSHOT_SCHEMA_VERSION, sorted(ident), settings.field_weights.model_dump()], 32
    )


def _stats_fingerprint(units: list[dict], stats: dict, settings: Settings) -> str:
    return stable_hash(
        [
            fingerprint(units, settings),
            stats["policy"],
            stats.get("ranker"),
            stats["mv_model_key"],
            stats["vv_model_key"],
            stats["vv_unavailable"],
        ],
        32,
    )


def build_snapshot(
    settings: Settings,
    cat: Catalog,
    dagster_run_id: str | None = None,
    force: bool = False,
    policy: dict[str, str] | None = None,
) -> SnapshotResult:
    t0 = time.perf_counter()
    units, stats = collect_units(settings, cat, policy)
    # The ranker the policy names travels in the manifest: serving reads it from there.
    ranker_version = effective_ranker(settings, cat)
    ranker = resolve_ranker(settings, ranker_version)
    stats["ranker"] = ranker_version
    fp = _stats_fingerprint(units, stats, settings)
    try:
        current = read_current_manifest(settings.snapshots_dir)
    except FileNotFoundError:
        current = None
    if current and current.stats.get("fingerprint") == fp and not force:
        return SnapshotResult(current, published=False, seconds=time.perf_counter() - t0)

    now = utcnow()
    snapshot_id = f"{now:%Y%m%dT%H%M%S}-{fp[:8]}"
    table_name = f"snapshot_{snapshot_id.replace('-', '_')}"
    dim, vv_dim = stats["mv_dim"], stats["vv_dim"]
    schema = snapshot_arrow_schema(dim, vv_dim)
    vector_cols = {"vector_mv": dim, "vector_vv": vv_dim}
    cols: dict[str, list] = {
        name: [u.get(name) for u in units] for name in schema.names if name not in vector_cols
    }
    arrays = {name: pa.array(cols[name], type=schema.field(name).type) for name in cols}
    for name, d in vector_cols.items():
        if name in schema.names:
            flat = (
                np.stack([u[name] for u in units]).astype(np.float32).ravel()
                if units
                else np.zeros(0, dtype=np.float32)
            )
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), d)
    table = pa.table([arrays[n] for n in schema.names], schema=schema)

    db = lancedb.connect(str(settings.lance_dir))
    tbl = db.create_table(table_name, data=table, mode="create")
    t_idx = time.perf_counter()
    if units:
        for f in FTS_FIELDS:
            # English stemming and stop words: BM25 over word stems, per field.
            tbl.create_index(
                f,
                replace=True,
                config=FTS(
                    stem=True, remove_stop_words=True, language="English", with_position=False
                ),
            )
        # The principal's prefilter (tenant_id = ? AND array_has_any(acl_groups, ?)) is
        # answered by scalar indexes inside every index query.
        tbl.create_index("tenant_id", config=BTree(), replace=True)
        tbl.create_index("acl_groups", config=LabelList(), replace=True)
    index_s = time.perf_counter() - t_idx

    profiles = load_profiles(settings)
    mv = profiles[stats["policy"]["mv"]].tasks["mv_embed"].model
    vv_slot = stats["policy"].get("vv")
    vv_model = profiles[vv_slot].tasks["vv_embed"].model if vv_slot else None
    if not vv_slot:
        vv_reason = "no visual (VV) profile in the snapshot policy"
    elif stats["vv_unavailable"]:
        vv_reason = f"VV model unavailable: {stats['vv_unavailable']}"
    elif not stats["n_units_with_vv"]:
        vv_reason = "no VV vectors persisted for the policy's profile"
    else:
        vv_reason = None
    stats |= {"fingerprint": fp, "index_seconds": round(index_s, 3)}
    manifest = SnapshotManifest(
        snapshot_id=snapshot_id,
        table_name=table_name,
        created_at=now,
        tenants=stats["tenants"],
        n_units=len(units),
        n_documents=stats["n_documents"],
        n_images=stats["n_images"],
        axes={
            "fts": AxisInfo(available=bool(units)),
            "mv": AxisInfo(
                available=stats["n_units_with_mv"] > 0,
                model=mv,
                model_dir=stats["mv_model_dir"],
                dim=dim,
                reason=None if stats["n_units_with_mv"] else "no MV vectors persisted",
            ),
            "vv": AxisInfo(
                available=vv_reason is None,
                model=vv_model,
                model_dir=stats["vv_model_dir"],
                dim=vv_dim or None,
                reason=vv_reason,
            ),
        },
        policy={**stats["policy"], "ranker": ranker_version},
        field_weights=settings.field_weights.model_dump(),
        dagster_run_id=dagster_run_id,
        stats=stats,
        ranker=ranker.model_dump(mode="json") if ranker is not None else None,
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


def _retain(settings: Settings, db) -> list[str]:
    """Drop snapshot tables beyond the newest ``snapshots_kept``, never a pointed-at one and
    never one a live reader holds a lease on (``rag_pipeline.snapshot.leases``); stale leases
    (dead process, heartbeat older than ``lease_ttl_s``) are removed on the way."""
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
        with contextlib.suppress(Exception):  # already gone: only the manifest is left to clean
            db.drop_table(f"snapshot_{sid.replace('-', '_')}")
        old.unlink(missing_ok=True)
        dropped.append(sid)
    return dropped
