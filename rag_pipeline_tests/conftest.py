"""Shared fixtures: an isolated data dir, sources and Dagster instance per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Fewer shards keep end-to-end tests quick; set before rag_pipeline.defs is imported.
os.environ.setdefault("RAG_SHARDS", "4")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(os.environ.get("RAG_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_data_or_skip(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: under CI the shared data must be present")
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture
def pipeline_env(tmp_path, monkeypatch):
    """RAG_* and DAGSTER_HOME pointing into tmp_path; returns a Settings factory."""
    from rag_pipeline.settings import Settings

    data = tmp_path / "data"
    src = tmp_path / "src"
    src.mkdir()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.setenv("RAG_SOURCES", str(src))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return Settings.from_env()


@pytest.fixture
def demo_env(pipeline_env, tmp_path):
    """pipeline_env with the generated demo corpus as its source."""
    from rag_pipeline.demo_corpus import generate_demo_corpus

    corpus = generate_demo_corpus(pipeline_env.sources[0], tmp_path / "gold.jsonl")
    return pipeline_env, corpus


def run_all(**kw) -> dict:
    """Materialize the whole graph through Dagster on the test's DAGSTER_HOME instance."""
    import dagster as dg

    from rag_pipeline.definitions import defs
    from rag_pipeline.defs.runner import materialize_all

    with dg.DagsterInstance.get() as instance:
        return materialize_all(defs, instance=instance, log=lambda *_: None, **kw)
