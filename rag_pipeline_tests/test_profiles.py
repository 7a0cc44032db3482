"""Model profiles side by side: backfill a second profile next to the first, switch the snapshot
between them and back with no recompute; refuse a model that is not the pinned one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from rag_pipeline.settings import Settings, packaged_file
from rag_pipeline.storage.catalog.catalog import open_settings_catalog
from rag_pipeline.storage.vector_store import VectorStore
from rag_pipeline_tests.conftest import run_all
from rag_pipeline_tests.tiny_models import build_tiny_sentence_model
from serving.principal import Principal

WHO = Principal(tenant="default")  # the test corpus is one tenant, every unit tenant-wide

REPO = Path(__file__).resolve().parents[1]


def _models_file(path: Path, extra: list[dict] | None = None, mv: str = "minilm-l6-fit") -> Path:
    doc = yaml.safe_load(packaged_file("models.yaml").read_text())
    doc["profiles"] += extra or []
    doc["policy"]["mv"] = mv
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "rag_pipeline.cli", *args],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


def _run_counts(settings: Settings) -> dict[str, int]:
    with open_settings_catalog(settings) as cat:
        return {
            r["profile"]: r["n"]
            for r in cat.rows("SELECT profile, count(*) AS n FROM analysis_runs GROUP BY profile")
        }


def _searcher(settings: Settings):
    from serving import Searcher

    return Searcher.from_settings(settings)


@pytest.mark.slow
def test_two_profiles_side_by_side_switch_and_roll_back(demo_env, tmp_path, monkeypatch):
    settings, corpus = demo_env
    models = _models_file(tmp_path / "models.yaml")
    monkeypatch.setenv("RAG_MODELS_FILE", str(models))
    first = run_all()
    runs_a = _run_counts(Settings.from_env())
    assert set(runs_a) == {"text-v2", "minilm-l6-fit", "ocr-tesseract"}

    # Profile B: another model. Backfilling it runs only B's partitions.
    tiny = build_tiny_sentence_model(tmp_path / "tiny-b")
    _models_file(
        models,
        extra=[
            {
                "name": "tiny-b",
                "analyzer": "mv_embed",
                "model": {"model_dir": str(tiny)},
                "config": {"text_profile": "text-v2"},
            }
        ],
    )
    settings = Settings.from_env()
    second = run_all()
    assert second["partitions"] and all(p.startswith("tiny-b|") for p in second["partitions"])
    assert second["published"] is False, "policy unchanged: the served snapshot stays"
    runs_ab = _run_counts(settings)
    assert {k: v for k, v in runs_ab.items() if k != "tiny-b"} == runs_a
    vs = VectorStore(settings.lance_dir)
    n_a = vs._table("mv", 384, create=False).count_rows()
    n_b = vs._table("mv", 32, create=False).count_rows()
    assert n_a == n_b > 0, "both profiles' evidence, side by side"

    # Promote B: a new snapshot from B's vectors, nothing recomputed.
    out = _cli("policy", "set", "mv", "tiny-b", "--note", "A/B candidate")
    assert "mv -> tiny-b" in out.stdout
    promoted = run_all()
    assert promoted["published"] and promoted["partitions"] == []
    searcher = _searcher(settings)
    assert searcher.manifest.axes["mv"].dim == 32
    assert searcher.manifest.axes["mv"].model.weights_checksum != first_manifest_checksum(
        first, settings
    )
    assert searcher.search("varroa mites", WHO, k=3, axes=["mv"]).hits
    assert _run_counts(settings) == runs_ab

    # Roll back to A: again no recompute, and A's snapshot content is back.
    _cli("policy", "set", "mv", "minilm-l6-fit", "--note", "rollback")
    back = run_all()
    assert back["published"] and back["partitions"] == []
    assert _run_counts(settings) == runs_ab
    searcher = _searcher(settings)
    assert searcher.manifest.axes["mv"].dim == 384
    assert (
        searcher.manifest.stats["fingerprint"] == _manifest(settings, first)["stats"]["fingerprint"]
    )
    history = _cli("policy", "show").stdout
    assert "A/B candidate" in history and "rollback" in history


def _manifest(settings: Settings, summary: dict) -> dict:
    import json

    return json.loads((settings.snapshots_dir / f"{summary['snapshot_id']}.json").read_text())


def first_manifest_checksum(summary: dict, settings: Settings) -> str:
    return _manifest(settings, summary)["axes"]["mv"]["model"]["weights_checksum"]


@pytest.mark.slow
def test_model_mismatch_is_refused_and_writes_nothing(demo_env, tmp_path, monkeypatch):
    settings, _ = demo_env
    doc = yaml.safe_load(packaged_file("models.yaml").read_text())
    for p in doc["profiles"]:
        if p["name"] == "minilm-l6-fit":
            p["model"]["weights_checksum"] = "0" * 64  # not the weights on this machine
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("RAG_MODELS_FILE", str(tmp_path / "models.yaml"))
    settings = Settings.from_env()

    from rag_pipeline.definitions import defs
    from rag_pipeline.defs.partitions import sync_profiles

    with dg.DagsterInstance.get() as instance:
        sync_profiles(instance, settings)
        defs.resolve_job_def("discover_job").execute_in_process(instance=instance)
        result = defs.resolve_job_def("gpu_job").execute_in_process(
            partition_key="minilm-l6-fit|00", instance=instance, raise_on_error=False
        )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1, "refused once: a mismatch is never retried"
    meta = failures[0].step_failure_data.user_failure_data.metadata
    assert meta["status"].value == "model_mismatch"
    assert "weights_checksum" in failures[0].step_failure_data.user_failure_data.description
    with open_settings_catalog(settings) as cat:
        assert cat.scalar("SELECT count(*) FROM results WHERE task_type = 'mv_embed'") == 0
        assert cat.scalar("SELECT count(*) FROM analysis_runs") == 0
    assert not list(settings.staging_dir.rglob("*.parquet")), "nothing staged"
    assert VectorStore(settings.lance_dir)._table("mv", 384, create=False) is None


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"policy": {"text": "text-v2", "mv": "nope"}}, "no such profile"),
        ({"profiles": [{"name": "Bad Name", "analyzer": "text"}]}, "name"),
        ({"policy": {"text": "minilm-l6-fit", "mv": "minilm-l6-fit"}}, "serves the 'mv' axis"),
    ],
)
def test_models_file_errors_are_clear(tmp_path, bad, message):
    from rag_pipeline.analysis.profiles import ProfileError, load_models_file

    doc = yaml.safe_load(packaged_file("models.yaml").read_text())
    doc.update(bad)
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileError, match=message):
        load_models_file(path)


def test_planner_keys_equal_the_tasks_dedupe_keys(pipeline_env):
    """The planner checks versions against results by key without building tasks: its key must
    be the task's own, for every task type of the packaged profiles (document, image with a
    sidecar hash, and an MV task keyed on its text task)."""
    from rag_pipeline.analysis.profiles import load_profiles
    from rag_pipeline.planning.planner import _Keys, _task

    profiles = load_profiles(pipeline_env)
    key_of = _Keys()
    seen = set()
    for media_type, sidecar in (("text/markdown", ""), ("image/jpeg", "a1b2c3")):
        v = {
            "asset_id": "f" * 64,
            "version_id": "v1",
            "uri": "/src/x",
            "media_type": media_type,
            "size": 10,
            "sidecar_hash": sidecar,
        }
        for prof in profiles.by_name.values():
            for tp in prof.tasks.values():
                inputs = sidecar if tp.task_type == "image_meta" else ""
                task = _task(tp, prof.name, v, "03", "acme", inputs_hash=inputs)
                assert key_of(tp, "acme", v["asset_id"], inputs) == task.dedupe_key
                seen.add(tp.task_type)
                mv = _task(tp, prof.name, v, "03", "acme", inputs_hash=task.dedupe_key)
                assert key_of(tp, "acme", v["asset_id"], task.dedupe_key) == mv.dedupe_key
    assert {"doc_text", "image_meta", "mv_embed"} <= seen
