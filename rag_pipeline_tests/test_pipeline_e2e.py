"""End to end through Dagster: demo corpus -> catalog -> snapshot -> served queries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from rag_pipeline.settings import Settings
from rag_pipeline.storage.catalog.catalog import open_settings_catalog
from rag_pipeline.storage.vector_store import VectorStore, table_name
from rag_pipeline_tests.conftest import run_all
from serving.principal import Principal

WHO = Principal(tenant="default")  # the test corpus is one tenant, every unit tenant-wide

pytestmark = pytest.mark.slow


def _gold(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rel(uri: str, root: Path) -> str:
    return Path(uri).relative_to(root).as_posix()


def _snapshot_counts(settings: Settings) -> dict:
    with open_settings_catalog(settings) as cat:
        counts = cat.counts(settings.tenant_id)
        counts["distinct_evidence"] = cat.scalar(
            "SELECT count(DISTINCT evidence_id) FROM evidence_text"
        )
        counts["distinct_results"] = cat.scalar("SELECT count(DISTINCT dedupe_key) FROM results")
    tbl = VectorStore(settings.lance_dir)._table("mv", 384, create=False)
    counts["vectors"] = tbl.count_rows() if tbl is not None else 0
    counts["distinct_vectors"] = (
        len(set(tbl.to_arrow().column("evidence_id").to_pylist())) if tbl is not None else 0
    )
    return counts


def _searcher(settings: Settings):
    from serving import Searcher

    return Searcher.from_settings(settings)


def test_demo_corpus_end_to_end(demo_index):
    settings, corpus, summary, _ = demo_index
    assert summary["published"] is True

    # Every stage materialized in the instance, so the UI shows the lineage.
    with dg.DagsterInstance.get() as instance:
        for key in ("assets", "asset_versions", "analysis_runs", "evidence", "search_snapshot"):
            assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
        evals = {}
        for asset, check in (
            ("evidence", "envelopes_verified"),
            ("search_snapshot", "covers_current_assets"),
        ):
            recs = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(asset), check), limit=1
            )
            evals[check] = recs[0].event.asset_check_evaluation
        # Chunks fit the MV model's window: no inference run embedded a truncated text.
        mv_runs = [
            r.asset_materialization.metadata
            for r in instance.fetch_materializations(
                dg.AssetKey("inference_runs"), limit=100
            ).records
        ]
        assert mv_runs and all(m["truncated_chunks"].value == 0 for m in mv_runs)
    assert evals["envelopes_verified"].passed
    assert evals["envelopes_verified"].metadata["rejected_unresolved"].value == 0
    assert evals["covers_current_assets"].passed
    assert evals["covers_current_assets"].metadata["expected"].value > 0

    counts = _snapshot_counts(settings)
    assert counts["current_versions"] == corpus.n_documents + corpus.n_images
    assert counts["dead_letters"] == 0
    assert counts["evidence_text"] == counts["distinct_evidence"]
    assert counts["vectors"] == counts["distinct_vectors"] > 0

    searcher = _searcher(settings)
    root = corpus.corpus_dir
    reciprocal_ranks = []
    for q in _gold(corpus.gold_path):
        resp = searcher.search(q["query"], WHO, k=10)
        ranked = [h.path for h in resp.hits]
        answers = {p for p, grade in q["relevant"].items() if grade >= 2}
        first = next((i for i, p in enumerate(ranked, 1) if p in answers), None)
        assert first is not None and first <= 5, (q["query"], ranked[:5], answers)
        reciprocal_ranks.append(1.0 / first)
        top = resp.hits[0]
        # Lineage of a hit: file version, runs and models, matched evidence.
        assert (root / top.path).exists() and top.source == root.name
        assert str(root) not in top.model_dump_json()  # never the server's absolute path
        assert top.explanation.file_version.version_id == top.version_id
        assert top.explanation.runs, "a hit names the runs behind its evidence"
        for run in top.explanation.runs.values():
            assert run["run_id"] and run["model_id"]
    mrr = sum(reciprocal_ranks) / len(reciprocal_ranks)
    assert mrr >= 0.8, f"demo gold MRR {mrr:.3f}"


def test_rerun_is_idempotent(demo_index):
    settings, _, first, _ = demo_index
    before = _snapshot_counts(settings)
    second = run_all()
    after = _snapshot_counts(settings)
    assert second["published"] is False, "unchanged input publishes no new snapshot"
    assert second["snapshot_id"] == first["snapshot_id"]
    assert second["shards"] == [], "nothing planned on unchanged input"
    for key in (
        "assets",
        "asset_versions",
        "analysis_runs",
        "results",
        "evidence_text",
        "dead_letters",
        "vectors",
    ):
        assert after[key] == before[key], key


def test_changed_moved_and_deleted_files(demo_env):
    settings, corpus = demo_env
    run_all()
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
    new_home = root / "moved_here"
    new_home.mkdir()
    moved_to = new_home / moved.name
    shutil.move(moved, moved_to)
    deleted.unlink()

    with open_settings_catalog(settings) as cat:
        runs_before = cat.scalar("SELECT count(*) FROM analysis_runs")
        moved_asset = cat.scalar("SELECT asset_id FROM asset_versions WHERE uri = ?", [str(moved)])
        old_changed_asset = cat.scalar(
            "SELECT asset_id FROM asset_versions WHERE uri = ?", [str(changed)]
        )
    run_all()
    with open_settings_catalog(settings) as cat:
        versions = {
            r["uri"]: r
            for r in cat.rows(
                "SELECT uri, asset_id, is_current, tombstoned_at, superseded_at FROM asset_versions "
                "WHERE is_current"
            )
        }
        # Moved: a new version of the same asset, and no new analysis of it.
        assert versions[str(moved_to)]["asset_id"] == moved_asset
        assert cat.scalar("SELECT count(*) FROM results WHERE asset_id = ?", [moved_asset]) == 2
        assert cat.scalar(
            "SELECT tombstoned_at IS NOT NULL FROM asset_versions WHERE uri = ?", [str(moved)]
        )
        # Changed: a new asset with its own evidence; the old evidence stays in the catalog.
        new_asset = versions[str(changed)]["asset_id"]
        assert new_asset != old_changed_asset
        assert (
            cat.scalar("SELECT count(*) FROM evidence_text WHERE asset_id = ?", [old_changed_asset])
            > 0
        )
        assert cat.scalar("SELECT count(*) FROM evidence_text WHERE asset_id = ?", [new_asset]) > 0
        assert cat.scalar(
            "SELECT superseded_at IS NOT NULL FROM asset_versions WHERE uri = ? AND asset_id = ?",
            [str(changed), old_changed_asset],
        )
        # Deleted: tombstoned, not current.
        assert str(deleted) not in versions
        assert (
            cat.scalar(
                "SELECT count(*) FROM asset_versions WHERE uri = ? AND tombstoned_at IS NOT NULL",
                [str(deleted)],
            )
            == 1
        )
        assert cat.scalar("SELECT count(*) FROM analysis_runs") > runs_before

    searcher = _searcher(settings)
    resp = searcher.search("Zanzibar quokka", WHO, k=3)
    assert resp.hits and resp.hits[0].path == _rel(str(changed), corpus.corpus_dir)
    tbl = searcher.table.to_arrow()  # the served snapshot
    all_uris = set(tbl.column("uri").to_pylist())
    assert str(deleted) not in all_uris
    assert str(moved) not in all_uris and str(moved_to) in all_uris


def test_snapshot_readers_keep_their_version(demo_env):
    settings, corpus = demo_env
    run_all()
    old = _searcher(settings)
    old_id = old.manifest.snapshot_id
    n_old = old.table.count_rows()
    extra = corpus.corpus_dir / "docs" / "new_note.md"
    extra.write_text("# Glacier lanterns\n\nA note on glacier lantern festivals in winter.\n")
    run_all()
    new = _searcher(settings)
    assert new.manifest.snapshot_id != old_id
    assert new.table.count_rows() > n_old
    # The old reader still answers from its own, untouched table.
    assert old.table.count_rows() == n_old
    assert old.search("glacier lantern festivals", WHO, k=5).snapshot_id == old_id


@pytest.mark.parametrize("table", [table_name("mv", 384)])
def test_vector_evidence_lives_in_lancedb(demo_index, table):
    settings = demo_index.settings
    import lancedb

    db = lancedb.connect(str(settings.lance_dir))
    assert table in db
    t = db.open_table(table).to_arrow()
    assert set(t.column("axis").to_pylist()) == {"mv"}
    with open_settings_catalog(settings) as cat:
        persisted = {
            r["run_id"]
            for r in cat.rows(
                "SELECT run_id FROM analysis_runs WHERE analyzer = 'mv_embed' AND "
                "status = 'persisted'"
            )
        }
    assert set(t.column("run_id").to_pylist()) <= persisted


def test_hits_are_files_by_default_and_chunks_on_request(demo_index):
    searcher = _searcher(demo_index.settings)
    query = "municipal water treatment chlorine filtration"
    files = searcher.search(query, WHO, k=10).hits
    assert len({h.asset_id for h in files}) == len(files)
    chunks = searcher.search(query, WHO, k=10, collapse=False).hits
    long_doc = [h for h in chunks if h.path.endswith("municipal_water_treatment.md")]
    assert len(long_doc) >= 2, "the long document has several chunks"
    assert len({h.chunk_index for h in long_doc}) == len(long_doc)
    assert all(h.locator for h in long_doc), "a chunk says where it is in the file"
