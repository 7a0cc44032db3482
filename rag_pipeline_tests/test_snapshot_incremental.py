"""Incremental snapshots: a publish applies only the change since the last snapshot, and the
result equals a full rebuild; a reader's leased tag survives retention (real Dagster runs of the
demo corpus, real LanceDB tags and version cleanup)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from unittest import mock

import lance
import lancedb
import pytest
import yaml

from rag_pipeline.analysis.profiles import load_profiles
from rag_pipeline.demo.corpus import read_gold
from rag_pipeline.settings import Settings, packaged_file
from rag_pipeline.snapshot.build import build_snapshot
from rag_pipeline.snapshot.leases import Lease
from rag_pipeline.snapshot.policy import set_policy
from rag_pipeline.snapshot.schema import (
    FTS_FIELDS,
    SNAPSHOT_TABLE,
    SnapshotManifest,
    open_snapshot_table,
)
from rag_pipeline.storage.catalog.catalog import open_settings_catalog
from rag_pipeline_tests.conftest import run_all
from rag_pipeline_tests.tiny_models import build_tiny_sentence_model
from serving import Searcher
from serving.principal import Principal

WHO = Principal(tenant="default")

pytestmark = pytest.mark.slow


def _rows(settings: Settings, m: SnapshotManifest) -> list[dict]:
    db = lancedb.connect(str(settings.lance_dir))
    rows = open_snapshot_table(db, m).to_arrow().to_pylist()
    for r in rows:  # float32 vectors compare exactly; as lists for a readable diff
        for col in ("vector_mv", "vector_vv"):
            if col in r and r[col] is not None:
                r[col] = [round(x, 6) for x in r[col]]
    return sorted(rows, key=lambda r: r["unit_key"])


def _ranked(settings: Settings, snapshot_id: str, queries: list[str]) -> list[list]:
    # A generous rerank budget: on a loaded machine the stage's time ceiling would otherwise
    # skip reranking for one snapshot and not the other, and the orders would differ.
    s = Searcher.open(
        settings.snapshots_dir, settings.lance_dir, snapshot_id=snapshot_id, rerank_budget_ms=60_000
    )
    try:
        out = []
        for q in queries:
            for axes in (["fts"], ["mv"], None):
                resp = s.search(q, WHO, k=10, axes=axes)
                out.append([(h.unit_id, round(h.score, 5)) for h in resp.hits])
        return out
    finally:
        s.close()


def _text_storage(settings: Settings, m: SnapshotManifest) -> tuple[dict, dict]:
    """At the manifest's version: per fragment, the data files holding the text columns (FTS
    fields, evidence, filters), and the uuid of every index that is not a vector index."""
    ds = lance.dataset(
        str(settings.lance_dir / f"{SNAPSHOT_TABLE}.lance"), version=m.stats["table_version"]
    )
    text = {*FTS_FIELDS, "evidence", "unit_id", "tenant_id", "acl_groups", "path", "uri"}
    fields = [ds.lance_schema.field(n) for n in text]
    ids = {f.id() for f in fields if f is not None}
    assert len(ids) == len(text)
    files = {
        f.fragment_id: sorted(d.path for d in f.metadata.files if ids & set(d.fields))
        for f in ds.get_fragments()
    }
    indexes = {
        d.name: sorted(seg.uuid for seg in d.segments)
        for d in ds.describe_indices()
        if not {"vector_mv", "vector_vv"} & set(d.field_names)
    }
    return files, indexes


def _switch(
    settings: Settings, profiles, profile: str, note: str, queries: list[str]
) -> SnapshotManifest:
    """Promote ``profile`` to the MV axis and publish; the MV-only change rewrites the vector
    column alone: same text files and text indexes, new vectors (serving reads them), no row
    written or deleted."""
    with open_settings_catalog(settings) as cat:
        before = build_snapshot(settings, cat).manifest  # nothing changed: the current one
        set_policy(profiles, cat, "mv", profile, note)
    storage, old_rows = _text_storage(settings, before), _rows(settings, before)
    assert all(storage[0].values()) and len(storage[1]) == len(FTS_FIELDS) + 2  # + tenant, acl
    old_ranked = _ranked(settings, before.snapshot_id, queries)
    m = SnapshotManifest.model_validate_json(
        (settings.snapshots_dir / f"{run_all()['snapshot_id']}.json").read_text()
    )
    st = m.stats
    assert m.policy["mv"] == profile
    assert st["publish_mode"] == "columns: vector_mv", st["publish_mode"]
    assert st["columns_rewritten"] == ["vector_mv"]
    assert st["rows_upserted"] == st["rows_deleted"] == 0
    assert _text_storage(settings, m) == storage
    rows = _rows(settings, m)
    vec = "vector_mv"
    assert [{k: v for k, v in r.items() if k not in {vec, "runs", "mv_hash", "group_hash"}}
            for r in rows] == [
        {k: v for k, v in r.items() if k not in {vec, "runs", "mv_hash", "group_hash"}}
        for r in old_rows
    ]  # fmt: skip
    n_new = sum(a[vec] != b[vec] for a, b in zip(rows, old_rows, strict=True))
    assert 0 < n_new <= st["rows_column_rewritten"] <= m.n_units
    assert _ranked(settings, m.snapshot_id, queries) != old_ranked
    return m


def _same_as_full(settings: Settings, m: SnapshotManifest, queries: list[str]) -> None:
    """A full rebuild of the same catalog and policy: same rows, same ranked results."""
    lease = Lease.acquire(settings.snapshots_dir, m.snapshot_id)  # retention keeps one
    # Within the same second as ``m``, with the same fingerprint: the id must still be new
    # (it is a table tag).
    same_second = datetime.strptime(m.snapshot_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    with (
        open_settings_catalog(settings) as cat,
        mock.patch("rag_pipeline.snapshot.build.utcnow", return_value=same_second),
    ):
        full = build_snapshot(settings, cat, full=True).manifest
    assert full.snapshot_id != m.snapshot_id
    assert full.snapshot_id.startswith(m.snapshot_id[:24]), "same second, same fingerprint"
    assert full.stats["publish_mode"] == "full"
    assert full.stats["fingerprint"] == m.stats["fingerprint"]
    assert _rows(settings, m) == _rows(settings, full)
    assert _ranked(settings, m.snapshot_id, queries) == _ranked(settings, full.snapshot_id, queries)
    lease.release()


def _tags(settings: Settings) -> set[str]:
    return set(lancedb.connect(str(settings.lance_dir)).open_table(SNAPSHOT_TABLE).tags.list())


@pytest.mark.timeout(1800)  # five Dagster materializations of the demo corpus on a loaded box
def test_incremental_publish_equals_full_rebuild(demo_env, tmp_path, monkeypatch):
    settings, corpus = demo_env
    # A second MV profile of the same dimension: switching to it and back goes through the
    # incremental path (a different dimension is a schema change, hence a rebuild).
    tiny = build_tiny_sentence_model(tmp_path / "tiny-384", hidden=384)
    doc = yaml.safe_load(packaged_file("models.yaml").read_text())
    doc["profiles"].append(
        {
            "name": "tiny-384",
            "analyzer": "mv_embed",
            "model": {"model_dir": str(tiny)},
            "config": {"text_profile": "text-v2"},
        }
    )
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("RAG_MODELS_FILE", str(models))
    monkeypatch.setenv("RAG_SNAPSHOTS_KEPT", "1")  # retention drops all it may, every publish
    # The test's lease is not heartbeated (a LiveSearcher's is): fresh for the whole test.
    monkeypatch.setenv("RAG_LEASE_TTL_S", "7200")
    settings = Settings.from_env()

    first = run_all()
    s1 = first["snapshot_id"]
    m1 = SnapshotManifest.model_validate_json((settings.snapshots_dir / f"{s1}.json").read_text())
    assert m1.table_name == SNAPSHOT_TABLE and m1.stats["publish_mode"].startswith("full")
    # A reader holds the first snapshot through every publish below.
    lease = Lease.acquire(settings.snapshots_dir, s1)
    reader = Searcher.open(settings.snapshots_dir, settings.lance_dir, snapshot_id=s1)
    rows_s1 = reader.table.count_rows()
    hits_s1 = [h.unit_id for h in reader.search("quokka", WHO, k=5).hits]

    root = corpus.corpus_dir
    docs = sorted(
        p
        for p in root.rglob("*")
        if p.suffix in {".md", ".txt"}
        and p.is_file()
        and not p.name.endswith((".jpg.txt", ".png.txt"))
    )
    changed, moved, deleted = docs[0], docs[1], docs[2]
    changed.write_text(changed.read_text() + "\n\nZanzibar quokka appendix paragraph.\n")
    (root / "moved_here").mkdir()
    shutil.move(moved, root / "moved_here" / moved.name)
    deleted.unlink()
    (root / "docs" / "added_note.md").write_text(
        "# Glacier lanterns\n\nA note on glacier lantern festivals in winter.\n"
    )
    second = run_all()
    m2 = SnapshotManifest.model_validate_json(
        (settings.snapshots_dir / f"{second['snapshot_id']}.json").read_text()
    )
    st = m2.stats
    assert st["publish_mode"] == "incremental"
    # only the touched files' units were written: a handful, not the corpus
    assert 0 < st["rows_upserted"] < m2.n_units / 2 and st["rows_deleted"] > 0
    assert st["groups_changed"] == 3  # changed, moved (new locations), added

    # A policy switch of the MV profile (same text profile, same dimension) keeps every unit:
    # only the vector column is rewritten, and serving reads the new vectors. Then the rollback.
    profiles = load_profiles(settings)
    queries = [q.query for q in read_gold(corpus.gold_path)]
    _same_as_full(settings, _switch(settings, profiles, "tiny-384", "switch", queries), queries)
    _same_as_full(
        settings, _switch(settings, profiles, "minilm-l6-fit", "rollback", queries), queries
    )
    # Both in one publish: a switch and an edited file. The file's units are written whole, the
    # others get only their vector column.
    with open_settings_catalog(settings) as cat:
        set_policy(profiles, cat, "mv", "tiny-384", "again")
    changed.write_text(changed.read_text() + "\n\nA second appendix on quokka burrows.\n")
    m5 = SnapshotManifest.model_validate_json(
        (settings.snapshots_dir / f"{run_all()['snapshot_id']}.json").read_text()
    )
    assert m5.stats["publish_mode"] == "incremental + columns: vector_mv"
    assert 0 < m5.stats["rows_upserted"] < m5.stats["rows_column_rewritten"]
    _same_as_full(settings, m5, queries)

    # The leased reader kept reading its tag through every retention (snapshots_kept = 1).
    assert s1 in _tags(settings)
    assert reader.table.count_rows() == rows_s1
    assert [h.unit_id for h in reader.search("quokka", WHO, k=5).hits] == hits_s1
    again = Searcher.open(settings.snapshots_dir, settings.lance_dir, snapshot_id=s1)
    assert again.table.count_rows() == rows_s1
    again.close()
    reader.close()
    lease.release()
    with open_settings_catalog(settings) as cat:
        last = build_snapshot(settings, cat, force=True).manifest
    assert s1 not in _tags(settings)
    assert not (settings.snapshots_dir / f"{s1}.json").exists()
    # untagged versions were cleaned up: the dropped one cannot be checked out any more
    table = lancedb.connect(str(settings.lance_dir)).open_table(SNAPSHOT_TABLE)
    versions = {v["version"] for v in table.list_versions()}
    assert m1.stats["table_version"] not in versions
    assert last.stats["table_version"] in versions
