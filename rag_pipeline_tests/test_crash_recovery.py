"""SIGKILL mid-partition leaves no partial rows visible; a rerun gives exactly the rows of a
clean run. Faults are injected with RAG_FAULT at the three dangerous points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from rag_pipeline_tests.conftest import persisted_rows, run_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean_rows(built_demo_index):
    """The rows a clean, uninterrupted run persists for the demo corpus (the session's)."""
    return persisted_rows(built_demo_index.settings)


@pytest.mark.parametrize("point", ["after_stage", "after_vectors", "mid_insert"])
def test_sigkill_then_rerun_gives_clean_rows(point, demo_env, clean_rows):
    settings, _ = demo_env
    env = os.environ.copy() | {"RAG_FAULT": point}
    proc = subprocess.run(
        [sys.executable, "-m", "rag_pipeline.cli", "materialize", "--in-process"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])

    crashed = persisted_rows(settings)
    # Nothing partial is visible: every evidence row belongs to a persisted run, and vectors of
    # an unpersisted run (written before the crash) are not in the catalog's results.
    assert crashed["orphans"] == 0
    assert len(crashed["results"]) < len(clean_rows["results"])
    unpersisted_vector_runs = crashed["vector_runs"] - crashed["persisted_runs"]
    if point == "after_vectors":
        assert unpersisted_vector_runs, "the crash hit between the LanceDB and DuckDB writes"

    summary = run_all()  # rerun without the fault
    assert summary["reaped_runs"], "the killed run was failed and its pool slots freed"
    rerun = persisted_rows(settings)
    for key in ("results", "evidence", "vectors"):
        assert rerun[key] == clean_rows[key], key
    assert rerun["vector_runs"] <= rerun["persisted_runs"], "leftover vectors were cleaned up"
    assert rerun["orphans"] == 0
