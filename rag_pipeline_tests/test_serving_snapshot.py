"""Serving against a small, hand-built snapshot (real LanceDB table, real MiniLM vectors)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest
from lancedb.index import FTS

from evals.baselines.lancedb_hybrid import lancedb_hybrid
from rag_pipeline.analysis.analyzers.text_embedding import TextEncoder, model_spec_for
from rag_pipeline.settings import FieldWeights, Settings
from rag_pipeline.snapshot.schema import (
    FTS_FIELDS,
    AxisInfo,
    SnapshotManifest,
    current_pointer,
    manifest_path,
    snapshot_arrow_schema,
    write_atomic,
)
from serving import (
    AxisUnavailable,
    Hit,
    ModelMismatch,
    Searcher,
    SearchFilters,
    SearchRequest,
    SearchResponse,
)
from serving.filters import build_filter
from serving.principal import Principal

T0 = datetime(2024, 1, 1, tzinfo=UTC)
WHO = Principal(tenant="default")  # tenant-wide units of tenant "default"
ACME = Principal(tenant="acme")

# unit_id, tenant, kind, folder, title, body, caption, tags, ocr, has_mv, days after T0
DOCS = [
    (
        "d-quokka",
        "default",
        "document",
        "wildlife/australia",
        "Quokka field notes",
        "Field notes on the quokka, a small marsupial found on Rottnest Island.",
        "",
        "",
        "",
        True,
        1,
    ),
    (
        "d-marsupial",
        "default",
        "document",
        "wildlife/australia",
        "Marsupials",
        "Kangaroos and wallabies carry their young in a pouch.",
        "",
        "",
        "",
        True,
        2,
    ),
    (
        "d-budget",
        "default",
        "document",
        "finance/2024",
        "Budget review Q3",
        "Quarterly budget review: operating expenses rose eight percent due to cloud hosting costs.",
        "",
        "",
        "",
        True,
        30,
    ),
    (
        "d-board",
        "default",
        "document",
        "finance/board",
        "Board minutes",
        "Minutes of the board meeting: the committee approved the new office lease.",
        "",
        "",
        "",
        True,
        40,
    ),
    (
        "d-bread",
        "default",
        "document",
        "cooking",
        "Sourdough",
        "Knead the dough for ten minutes, let it rise overnight, then bake the bread at 220 degrees.",
        "",
        "",
        "",
        True,
        50,
    ),
    (
        "d-onboard",
        "default",
        "document",
        "hr/onboarding",
        "Onboarding",
        "New employees receive a laptop and badge on their first day; HR schedules orientation.",
        "",
        "",
        "",
        True,
        60,
    ),
    (
        "d-scale-0",
        "default",
        "document",
        "engineering/runbooks",
        "Autoscaling runbook",
        "The cluster autoscaler adds nodes when pods are pending for more than a minute.",
        "",
        "",
        "",
        True,
        70,
    ),
    (
        "d-scale-1",
        "default",
        "document",
        "engineering/runbooks",
        "Autoscaling runbook",
        "Rollbacks use kubectl rollout undo on the deployment.",
        "",
        "",
        "",
        True,
        70,
    ),
    (
        "d-travel",
        "default",
        "document",
        "travel",
        "Lisbon itinerary",
        "Flight to Lisbon on Monday, hotel near the river, museum visit on Tuesday.",
        "",
        "",
        "",
        True,
        80,
    ),
    (
        "d-secrets",
        "default",
        "document",
        "engineering/security",
        "Secrets policy",
        "Rotate the API keys every ninety days and store secrets in the vault.",
        "",
        "",
        "",
        True,
        90,
    ),
    (
        "d-garden",
        "default",
        "document",
        "home/garden",
        "Tomatoes",
        "Tomatoes need six hours of sun and regular watering during the summer.",
        "",
        "",
        "",
        True,
        100,
    ),
    (
        "d-zeppelin",
        "default",
        "document",
        "archive",
        "Scanned memo",
        "Legacy memo about the zeppelin hangar inventory.",
        "",
        "",
        "",
        False,
        110,
    ),
    (
        "d-reports-old",
        "default",
        "document",
        "reports_old",
        "Old report",
        "Annual turbine maintenance report.",
        "",
        "",
        "",
        True,
        120,
    ),
    (
        "d-reports",
        "default",
        "document",
        "reports/2024",
        "Report",
        "Annual turbine maintenance report for the wind farm.",
        "",
        "",
        "",
        True,
        130,
    ),
    (
        "i-beach",
        "default",
        "image",
        "photos/2023/summer",
        "",
        "",
        "A golden retriever running on a sandy beach at sunset",
        "dog, beach, sunset",
        "",
        True,
        140,
    ),
    (
        "i-alps",
        "default",
        "image",
        "photos/2022/alps",
        "",
        "",
        "Snow covered mountain peaks under a clear blue sky",
        "mountain, snow, landscape",
        "",
        True,
        150,
    ),
    (
        "i-receipt",
        "default",
        "image",
        "scans",
        "",
        "",
        "Photo of a paper receipt",
        "receipt",
        "ACME HARDWARE TOTAL 42.17 THANK YOU",
        True,
        160,
    ),
    (
        "i-cat",
        "default",
        "image",
        "photos/pets",
        "",
        "",
        "A grey cat sleeping on a windowsill",
        "cat, window",
        "",
        True,
        170,
    ),
    (
        "a-quokka",
        "acme",
        "document",
        "wildlife/australia",
        "Expedition",
        "Quokka sighting report from the expedition to the island.",
        "",
        "",
        "",
        True,
        5,
    ),
    (
        "a-beach",
        "acme",
        "image",
        "photos",
        "",
        "",
        "A golden retriever on a beach",
        "dog, beach",
        "",
        True,
        6,
    ),
]

RUN_DOC, RUN_IMG, RUN_MV = "run-doc-1", "run-img-1", "run-mv-1"


def _evidence(kind, title, body, caption, tags, ocr):
    ev = []
    if kind == "document":
        ev.append(
            {
                "kind": "title",
                "field": "title",
                "ordinal": 0,
                "text": title,
                "confidence": 1.0,
                "run_id": RUN_DOC,
            }
        )
        ev.append(
            {
                "kind": "chunk",
                "field": "body",
                "ordinal": 0,
                "text": body,
                "confidence": 1.0,
                "run_id": RUN_DOC,
            }
        )
    else:
        ev.append(
            {
                "kind": "caption",
                "field": "caption",
                "ordinal": 0,
                "text": caption,
                "confidence": 0.8,
                "run_id": RUN_IMG,
            }
        )
        for i, tag in enumerate(t.strip() for t in tags.split(",") if t.strip()):
            ev.append(
                {
                    "kind": "tag",
                    "field": "tags",
                    "ordinal": i,
                    "text": tag,
                    "confidence": 0.7,
                    "run_id": RUN_IMG,
                }
            )
        if ocr:
            ev.append(
                {
                    "kind": "ocr",
                    "field": "ocr",
                    "ordinal": 0,
                    "text": ocr,
                    "confidence": 0.6,
                    "run_id": RUN_IMG,
                }
            )
    return ev


def build_snapshot(root: Path, mv_model_dir: str) -> tuple[Path, Path]:
    """Write a snapshot table + manifest + CURRENT under ``root``; returns (snapshots, lance)."""
    snapshots_dir, lance_dir = root / "snapshots", root / "lance"
    encoder = TextEncoder.load(mv_model_dir)
    spec = model_spec_for(mv_model_dir)
    schema = snapshot_arrow_schema(encoder.dim)
    embed_texts = [". ".join(p for p in (d[4], d[5], d[6], d[7], d[8]) if p) for d in DOCS]
    vectors = encoder.encode(embed_texts)
    rows = []
    for (uid, tenant, kind, folder, title, body, caption, tags, ocr, has_mv, days), vec in zip(
        DOCS, vectors, strict=True
    ):
        run_doc = RUN_DOC if kind == "document" else RUN_IMG
        runs = {
            ("doc_text" if kind == "document" else "image_meta"): {
                "run_id": run_doc,
                "model_key": "builtin:rules@1#none",
                "model_id": "rules",
                "revision": "1",
                "backend": "builtin",
            }
        }
        if has_mv:
            runs["mv_embed"] = {
                "run_id": RUN_MV,
                "model_key": spec.key,
                "model_id": spec.model_id,
                "revision": spec.revision,
                "backend": spec.backend,
            }
        chunk = (
            int(uid.rsplit("-", 1)[1])
            if uid.startswith("d-scale")
            else (0 if kind == "document" else -1)
        )
        ext = ".md" if kind == "document" else ".jpg"
        rows.append(
            {
                "unit_id": uid,
                "tenant_id": tenant,
                "asset_id": f"{abs(hash(uid)):064x}"[:64],
                "version_id": f"v-{uid}",
                "uri": f"/data/{tenant}/{folder}/{uid}{ext}",
                "uris": [f"/data/{tenant}/{folder}/{uid}{ext}"],
                "source": f"{tenant}-files",
                "path": f"{folder}/{uid}{ext}",
                "locations": [f"{tenant}-files/{folder}/{uid}{ext}"],
                "acl_groups": ["all"],
                "folder": folder,
                "kind": kind,
                "media_type": "text/markdown" if kind == "document" else "image/jpeg",
                "chunk_index": chunk,
                "locator": json.dumps({"char_start": 0, "char_end": len(body)}),
                "title": title,
                "body": body,
                "caption": caption,
                "tags": tags,
                "ocr": ocr,
                "metadata": f"folder {folder}",
                "mtime": T0 + timedelta(days=days),
                "taken_at": None,
                "size": 1000 + days,
                "has_mv": has_mv,
                # like the snapshot writer: rows without an MV vector carry zeros and has_mv = false
                "vector_mv": vec.tolist() if has_mv else [0.0] * encoder.dim,
                "evidence": json.dumps(_evidence(kind, title, body, caption, tags, ocr)),
                "runs": json.dumps(runs),
            }
        )
    db = lancedb.connect(str(lance_dir))
    table_name = "snapshot_test_0001"
    tbl = db.create_table(table_name, pa.Table.from_pylist(rows, schema=schema), mode="overwrite")
    for field in FTS_FIELDS:
        tbl.create_index(field, config=FTS(), replace=True)
    fw = FieldWeights().model_dump()
    manifest = SnapshotManifest(
        snapshot_id="snap-0001",
        table_name=table_name,
        created_at=datetime.now(UTC),
        tenants=["acme", "default"],
        n_units=len(rows),
        n_documents=sum(d[2] == "document" for d in DOCS),
        n_images=sum(d[2] == "image" for d in DOCS),
        axes={
            "fts": AxisInfo(available=True),
            "mv": AxisInfo(
                available=True,
                model=spec.model_copy(update={"dim": encoder.dim}),
                model_dir=str(mv_model_dir),
                dim=encoder.dim,
            ),
            "vv": AxisInfo(available=False, reason="no visual model configured"),
        },
        field_weights=fw,
    )
    write_manifest(snapshots_dir, manifest)
    write_atomic(current_pointer(snapshots_dir), manifest.snapshot_id + "\n")
    return snapshots_dir, lance_dir


def write_manifest(snapshots_dir: Path, manifest: SnapshotManifest) -> None:
    write_atomic(manifest_path(snapshots_dir, manifest.snapshot_id), manifest.model_dump_json())


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, mv_model_dir) -> tuple[Path, Path]:
    return build_snapshot(tmp_path_factory.mktemp("snap"), mv_model_dir)


@pytest.fixture(scope="module")
def searcher(snapshot) -> Searcher:
    s = Searcher.open(*snapshot)
    yield s
    s.close()


def _ids(resp: SearchResponse) -> list[str]:
    return [h.unit_id for h in resp.hits]


# --- ranking -----------------------------------------------------------------------------------


def test_keyword_query_finds_rare_word_first(searcher):
    resp = searcher.search("quokka", WHO, k=5)
    assert resp.query_type == "keyword"
    assert resp.snapshot_id == "snap-0001"
    assert set(resp.axes_used) == {"fts", "mv"}
    assert resp.axes_unavailable == {"vv": "no visual model configured"}
    top = resp.hits[0]
    assert isinstance(top, Hit)
    assert top.unit_id == "d-quokka"
    assert top.axes["fts"].rank == 1 and top.axes["fts"].score > 0
    assert "quokka" in top.snippet.lower()
    assert top.title == "Quokka field notes"
    assert "a-quokka" not in _ids(resp)  # other tenant
    for key in ("fts", "mv", "mv_encode", "fuse", "total"):
        assert resp.timings_ms[key] >= 0


def test_paraphrase_found_via_mv(searcher):
    query = "how can I make a loaf myself?"  # shares no word with the bread recipe
    resp = searcher.search(query, WHO, k=3)
    assert resp.query_type == "semantic"
    top = resp.hits[0]
    assert top.unit_id == "d-bread"
    assert "mv" in top.axes and "fts" not in top.axes
    assert top.axes["mv"].rank == 1 and 0 < top.axes["mv"].score <= 1
    mv_only = searcher.search(query, WHO, k=3, axes=["mv"])
    assert mv_only.axes_used == ["mv"] and _ids(mv_only)[0] == "d-bread"


def test_bm25_only_and_rows_without_mv(searcher):
    resp = searcher.search("zeppelin hangar", WHO, axes=["fts"], k=5)
    assert resp.axes_used == ["fts"]
    assert _ids(resp)[0] == "d-zeppelin"
    assert all(set(h.axes) == {"fts"} for h in resp.hits)
    assert resp.hits[0].explanation.fusion.weights == {"fts": 1.0}
    mv = searcher.search("zeppelin hangar", WHO, axes=["mv"], k=20)
    assert "d-zeppelin" not in _ids(mv)  # has_mv = false is never a vector candidate
    both = searcher.search("zeppelin hangar", WHO, k=5)
    # Keyword queries weigh BM25 and MV equally: the BM25-only #1 ties with the MV-only #1.
    assert "d-zeppelin" in _ids(both)[:2]
    zeppelin = next(h for h in both.hits if h.unit_id == "d-zeppelin")
    assert set(zeppelin.axes) == {"fts"} and zeppelin.axes["fts"].rank == 1


def test_stopword_only_and_odd_queries_do_not_fail(searcher):
    resp = searcher.search("the of and", WHO, k=3)
    assert all("fts" not in h.axes for h in resp.hits)
    assert searcher.search("the of and", WHO, axes=["fts"], k=3).hits == []
    for q in ['"quokka"', "quokka* OR (", "a:b -c +d", "'; DROP TABLE x; --", "ü ñ 日本"]:
        searcher.search(q, WHO, k=3)


# --- filters and tenants -----------------------------------------------------------------------


def test_kind_and_folder_filters(searcher):
    resp = searcher.search("dog on the beach", WHO, k=10, filters=SearchFilters(kind="image"))
    assert resp.hits and all(h.kind == "image" for h in resp.hits)
    assert resp.hits[0].unit_id == "i-beach"

    resp = searcher.search("photo", WHO, k=20, filters={"folder_prefix": "photos/2023"})
    assert _ids(resp) == ["i-beach"]
    resp = searcher.search("photo", WHO, k=20, filters={"folder_prefix": "photos"})
    assert set(_ids(resp)) == {"i-beach", "i-alps", "i-cat"}  # not scans/, not acme

    # path-segment prefix: "reports" is reports/ and below, not reports_old
    resp = searcher.search(
        "turbine maintenance report", WHO, k=20, filters={"folder_prefix": "/reports/"}
    )
    assert _ids(resp) == ["d-reports"]
    resp = searcher.search("turbine maintenance report", WHO, k=20)
    assert {"d-reports", "d-reports-old"} <= set(_ids(resp))


def test_time_media_and_source_filters(searcher):
    resp = searcher.search(
        "report",
        WHO,
        k=20,
        filters={
            "modified_after": T0 + timedelta(days=125),
            "modified_before": T0 + timedelta(days=145),
        },
    )
    assert set(_ids(resp)) == {"d-reports", "i-beach"}
    resp = searcher.search("beach", WHO, k=20, filters={"media_type": "image/*"})
    assert resp.hits and all(h.media_type == "image/jpeg" for h in resp.hits)
    assert searcher.search("beach", WHO, k=20, filters={"source": "/nowhere"}).hits == []
    named = searcher.search("beach", WHO, k=20, filters={"source": "default-files"})
    assert named.hits and all(h.source == "default-files" for h in named.hits)


def test_tenant_isolation(searcher):
    acme = searcher.search("quokka", ACME, k=10)
    assert _ids(acme)[0] == "a-quokka"
    assert set(_ids(acme)) <= {"a-quokka", "a-beach"}
    default = searcher.search("golden retriever beach", WHO, k=20)
    assert "a-beach" not in _ids(default) and "i-beach" in _ids(default)
    # a tenant name the Principal model refuses is still escaped if one gets through
    odd = Principal.model_construct(tenant="o'brien", groups=frozenset({"all"}), key_id=None)
    assert searcher.search("quokka", odd).hits == []
    with pytest.raises(ValueError):
        Principal(tenant="o'brien")


def test_build_filter_escapes_values():
    odd = Principal.model_construct(tenant="o'brien", groups=frozenset({"h'r", "all"}))
    sql = build_filter(odd, SearchFilters(kind="x' OR '1'='1", folder_prefix="a'b/"))
    assert "tenant_id = 'o''brien'" in sql
    assert "array_has_any(acl_groups, ['all', 'h''r'])" in sql
    assert "kind = 'x'' OR ''1''=''1'" in sql
    assert "starts_with(folder, 'a''b/')" in sql
    # no group: no row
    assert build_filter(Principal(tenant="a", groups=[]), None, sole_tenant="a") == "(false)"
    # the tenant clause is dropped when the table holds only that tenant's rows, the group
    # clause when every row of the tenant is readable by the principal
    a, b = Principal(tenant="a"), Principal(tenant="b")
    assert build_filter(a, None, sole_tenant="a", all_readable=True) is None
    assert build_filter(b, None, sole_tenant="a", all_readable=True) == "(tenant_id = 'b')"
    assert (
        build_filter(a, SearchFilters(kind="image"), sole_tenant="a", all_readable=True)
        == "(kind = 'image')"
    )
    assert build_filter(a, None, sole_tenant="a") == "(array_has_any(acl_groups, ['all']))"


def test_one_tenant_snapshot_drops_clauses_every_row_passes(snapshot, searcher):
    assert searcher._sole_tenant is None and searcher.mv_clause == "has_mv = true"
    snapshots_dir, lance_dir = snapshot
    db = lancedb.connect(str(lance_dir))
    rows = searcher.dataset.to_table(filter="tenant_id = 'acme'")
    tbl = db.create_table("snapshot_acme", rows, mode="overwrite")
    for field in FTS_FIELDS:
        tbl.create_index(field, config=FTS(), replace=True)
    m = searcher.manifest.model_copy(
        update={"snapshot_id": "snap-acme", "table_name": "snapshot_acme", "tenants": ["acme"]}
    )
    write_manifest(snapshots_dir, m)
    s = Searcher.open(snapshots_dir, lance_dir, snapshot_id="snap-acme")
    assert s._sole_tenant == "acme" and s.mv_clause is None
    assert _ids(s.search("quokka", ACME, k=5))[0] == "a-quokka"
    assert s.search("quokka", WHO, k=5).hits == []  # tenant "default" has no rows here
    assert _ids(s.search("dog", ACME, k=5, filters={"kind": "image"})) == ["a-beach"]
    assert lancedb_hybrid(s, "quokka", ACME, k=5)[0] == "a-quokka"
    assert lancedb_hybrid(s, "quokka", WHO, k=5) == []
    s.close()


# --- explanation -------------------------------------------------------------------------------


def test_explanation_lists_matched_evidence_and_runs(searcher):
    top = searcher.search("quokka island", WHO, k=3).hits[0]
    assert top.unit_id == "d-quokka"
    ex = top.explanation
    assert ex.matched_evidence, "expected matched evidence"
    first = ex.matched_evidence[0]
    assert first.kind == "chunk" and first.field == "body"
    assert first.matched_terms == ["quokka", "island"]
    assert first.run_id == RUN_DOC
    assert {e.run_id for e in ex.matched_evidence} == {RUN_DOC}
    assert ex.runs["doc_text"]["run_id"] == RUN_DOC
    assert ex.runs["mv_embed"]["run_id"] == RUN_MV
    assert ex.file_version.version_id == "v-d-quokka"
    assert top.source == "default-files" and top.path == "wildlife/australia/d-quokka.md"
    assert ex.file_version.path == top.path
    assert ex.file_version.locations == [f"{top.source}/{top.path}"]
    assert "/data/" not in top.model_dump_json()  # never the server's absolute path
    assert ex.file_version.mtime == T0 + timedelta(days=1)
    assert ex.fusion.query_type == "keyword" and ex.fusion.rrf_k == 60
    assert abs(sum(ex.fusion.weights.values()) - 1.0) < 1e-9
    assert top.locator == {"char_start": 0, "char_end": len(DOCS[0][5])}

    img = searcher.search("golden retriever", WHO, k=1, filters={"kind": "image"}).hits[0]
    assert img.unit_id == "i-beach" and img.chunk_index == -1
    assert img.explanation.matched_evidence[0].kind == "caption"
    assert img.explanation.matched_evidence[0].run_id == RUN_IMG
    assert "golden retriever" in img.snippet.lower()


# --- axes and model checks ---------------------------------------------------------------------


def test_unavailable_axis_is_refused(searcher):
    with pytest.raises(AxisUnavailable, match="no visual model configured"):
        searcher.search("dog", WHO, axes=["vv"])
    with pytest.raises(AxisUnavailable, match="'vv'"):
        searcher.search(SearchRequest(query="dog", axes=["fts", "vv"]), WHO)
    with pytest.raises(ValueError):  # unknown axis name: a validation error
        searcher.search("dog", WHO, axes=["bogus"])


def test_snapshot_without_mv_axis(snapshot, searcher):
    snapshots_dir, lance_dir = snapshot
    m = searcher.manifest.model_copy(
        update={
            "snapshot_id": "snap-nomv",
            "axes": {
                "fts": searcher.manifest.axes["fts"],
                "mv": AxisInfo(available=False, reason="mv_embed run failed"),
                "vv": searcher.manifest.axes["vv"],
            },
        }
    )
    write_manifest(snapshots_dir, m)
    s = Searcher.open(snapshots_dir, lance_dir, snapshot_id="snap-nomv")
    assert s.encoder is None
    resp = s.search("quokka", WHO)
    assert resp.axes_used == ["fts"] and resp.axes_unavailable["mv"] == "mv_embed run failed"
    assert _ids(resp)[0] == "d-quokka"
    with pytest.raises(AxisUnavailable, match="mv_embed run failed"):
        s.search("quokka", WHO, axes=["mv"])
    assert s.health()["axes"]["mv"] == {"available": False, "reason": "mv_embed run failed"}


def test_model_mismatch_is_refused(snapshot, searcher, tmp_path):
    snapshots_dir, lance_dir = snapshot
    mv = searcher.manifest.axes["mv"]
    bad_spec = mv.model.model_copy(update={"weights_checksum": "0" * 64})
    bad = mv.model_copy(update={"model": bad_spec})
    m = searcher.manifest.model_copy(
        update={"snapshot_id": "snap-badmv", "axes": {**searcher.manifest.axes, "mv": bad}}
    )
    write_manifest(snapshots_dir, m)
    with pytest.raises(ModelMismatch, match="refusing to serve snapshot snap-badmv"):
        Searcher.open(snapshots_dir, lance_dir, snapshot_id="snap-badmv")
    # a different query-model directory than the one that built the snapshot
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"not the same weights")
    with pytest.raises(ModelMismatch, match="weights"):
        Searcher.open(snapshots_dir, lance_dir, mv_model_dir=str(other))
    with pytest.raises(ModelMismatch, match="not found"):
        Searcher.open(snapshots_dir, lance_dir, mv_model_dir=str(tmp_path / "missing"))


def test_health_and_from_settings(snapshot, searcher, mv_model_dir):
    h = searcher.health()
    assert h["snapshot_id"] == "snap-0001" and h["n_units"] == len(DOCS)
    assert h["table_rows"] == len(DOCS)
    assert h["axes"]["fts"]["available"] and h["axes"]["mv"]["available"]
    assert h["axes"]["vv"] == {"available": False, "reason": "no visual model configured"}
    snapshots_dir, _ = snapshot
    s = Searcher.from_settings(Settings(data_dir=snapshots_dir.parent, mv_model_dir=mv_model_dir))
    assert s.manifest.snapshot_id == "snap-0001"


def test_lancedb_hybrid_baseline(searcher):
    ids = lancedb_hybrid(searcher, "quokka", WHO, k=5)
    assert ids[0] == "d-quokka" and "a-quokka" not in ids
    assert "a-quokka" in lancedb_hybrid(searcher, "quokka", ACME, k=5)
    assert lancedb_hybrid(searcher, "the of", WHO, k=3)  # no FTS terms: vector side only
    images = lancedb_hybrid(searcher, "quokka", WHO, k=5, filters=SearchFilters(kind="image"))
    assert images and all(i.startswith("i-") for i in images)  # same filters as search


# --- HTTP --------------------------------------------------------------------------------------


def test_http_api(snapshot):
    """The old HTTP front's cases on the FastAPI app (more in test_http_api.py)."""
    from rag_pipeline_tests.http_support import api_client, auth, make_key

    settings = Settings(data_dir=snapshot[0].parent)
    key = auth(make_key(settings, "default"))
    with api_client(settings) as client:
        resp = client.get("/health", headers=key)
        assert resp.status_code == 200 and resp.json()["snapshot"]["snapshot_id"] == "snap-0001"
        resp = client.get("/v1/search?q=quokka&k=3", headers=key)
        body = resp.json()
        assert resp.status_code == 200 and body["hits"][0]["unit_id"] == "d-quokka"
        assert body["hits"][0]["explanation"]["matched_evidence"][0]["run_id"] == RUN_DOC
        resp = client.get(
            "/v1/search?q=golden+retriever&kind=image&folder=photos&axes=fts,mv&type=visual",
            headers=key,
        )
        body = resp.json()
        assert resp.status_code == 200 and body["query_type"] == "visual"
        assert body["hits"][0]["unit_id"] == "i-beach"
        assert all(h["kind"] == "image" for h in body["hits"])
        resp = client.get("/v1/search?q=dog&axes=vv", headers=key)
        assert resp.status_code == 422 and resp.json()["code"] == "axis_unavailable"
        assert "vv" in resp.json()["message"]
        for bad in (
            "k=5",
            "q=dog&k=abc",
            "q=dog&k=0",
            "q=%20%20",
            "q=dog&bogus=1",
            "q=dog&q=cat",
            "q=dog&axes=nope",
            "q=dog&type=fancy",
            "q=dog&modified_after=yesterday",
            "q=dog&tenant=acme",
        ):
            resp = client.get(f"/v1/search?{bad}", headers=key)
            assert resp.status_code == 422, (bad, resp.status_code, resp.text)
            assert resp.json()["code"] == "invalid_request" and resp.json()["message"]
        resp = client.get("/nope", headers=key)
        assert resp.status_code == 404 and resp.json()["code"] == "not_found"


# --- import hygiene ----------------------------------------------------------------------------


def test_serving_imports_no_dagster_or_writers():
    code = textwrap.dedent("""
        import sys
        import serving, serving.app, serving.auth, serving.keys, serving.server
        import serving.axes, serving.errors, serving.filters, serving.hits, serving.models
        import serving.searcher, serving.tags, serving.visual
        forbidden = ("dagster", "rag_pipeline.storage.catalog", "rag_pipeline.storage.persister",
                     "rag_pipeline.snapshot.build", "rag_pipeline.defs", "rag_pipeline.definitions")
        bad = sorted(m for m in sys.modules
                     if any(m == f or m.startswith(f + ".") for f in forbidden))
        print(bad)
        sys.exit(1 if bad else 0)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fts_combine_max_vs_sum(snapshot, searcher):
    # LanceDB's MultiMatchQuery keeps the best boosted field per row ("max"): the one-word title
    # "Marsupials" (boost 2) beats a row matching both terms in its body and one in its title.
    snapshots_dir, lance_dir = snapshot
    title2 = searcher.manifest.model_copy(
        update={
            "snapshot_id": "snap-title2",
            "field_weights": {**searcher.manifest.field_weights, "title": 2.0},
        }
    )
    write_manifest(snapshots_dir, title2)
    best = Searcher.open(*snapshot, snapshot_id="snap-title2")
    assert _ids(best.search("quokka marsupial", WHO, axes=["fts"], k=2)) == [
        "d-marsupial",
        "d-quokka",
    ]
    summed = Searcher.open(*snapshot, snapshot_id="snap-title2", fts_combine="sum")
    assert _ids(summed.search("quokka marsupial", WHO, axes=["fts"], k=2)) == [
        "d-quokka",
        "d-marsupial",
    ]
    assert lancedb_hybrid(summed, "quokka", WHO, k=3)[0] == "d-quokka"
    with pytest.raises(ValueError):
        Searcher.open(*snapshot, fts_combine="avg")


def test_unit_thumbnail_and_similar_take_the_principal(searcher):
    hit = searcher.unit("d-quokka", WHO)
    assert hit is not None and hit.unit_id == "d-quokka" and hit.explanation.runs
    assert searcher.unit("d-quokka", ACME) is None  # another tenant's unit
    assert searcher.unit("d-quokka", Principal(tenant="default", groups=[])) is None
    assert searcher.unit("nope", WHO) is None
    asset = hit.asset_id
    assert searcher.similar(asset, WHO, k=3).hits
    with pytest.raises(KeyError):
        searcher.similar(asset, ACME, k=3)
    with pytest.raises(TypeError):
        searcher.search("quokka", "default")  # a tenant name is not a principal
    op = searcher.operator_principal("default")
    assert op.tenant == "default" and "all" in op.groups
