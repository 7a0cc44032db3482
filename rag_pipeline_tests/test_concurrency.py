"""Four shard runs at once (separate processes, multiprocess executor): no lock error, no row
lost or duplicated, the same rows as a sequential run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from rag_pipeline.demo.corpus import generate_demo_corpus
from rag_pipeline.settings import shard_key
from rag_pipeline_tests.conftest import persisted_rows, run_all

pytestmark = pytest.mark.slow

DAGSTER = str(Path(sys.executable).with_name("dagster"))


# Four Dagster processes on a machine with fewer cores: ~5 min seen on a loaded 2-core box; the
# processes themselves are given 900 s (communicate below).
@pytest.mark.timeout(900)
def test_four_shards_concurrently_match_a_sequential_run(tmp_path, pipeline_env, built_demo_index):
    settings = pipeline_env
    generate_demo_corpus(settings.sources[0], tmp_path / "gold.jsonl")
    assert settings.shard_count == 4

    with dg.DagsterInstance.get() as instance:
        from rag_pipeline.definitions import defs
        from rag_pipeline.defs.partitions import sync_profiles

        sync_profiles(instance, settings)
        defs.resolve_job_def("discover_job").execute_in_process(instance=instance)

    # Four inference partitions at once, each analysing, embedding and persisting its shard.
    env = os.environ.copy()
    procs = [
        subprocess.Popen(
            [
                DAGSTER,
                "asset",
                "materialize",
                "-m",
                "rag_pipeline.definitions",
                "--select",
                "inference_runs",
                "--partition",
                f"minilm-l6-fit|{shard_key(i)}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
        assert "RUN_SUCCESS" in out
        for symptom in (
            "Could not set lock",
            "database is locked",
            "LockTimeout",
            "CommitConflict",
        ):
            assert symptom not in out, symptom
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert sum(r.status == dg.DagsterRunStatus.SUCCESS for r in runs) >= 5
        assert {r.tags.get("dagster/partition") for r in runs} >= {
            f"minilm-l6-fit|{shard_key(i)}" for i in range(4)
        }

    after_concurrent = persisted_rows(settings)
    assert after_concurrent["run_partitions"] == [f"minilm-l6-fit|{shard_key(i)}" for i in range(4)]
    assert after_concurrent["run_status"] == {"persisted"}
    assert len(after_concurrent["vectors"]) == len(set(after_concurrent["vectors"])) > 0

    # The text partitions next; then nothing is left to do.
    first = run_all()
    # (and OCR for the shards that hold images)
    assert {pk for pk in first["partitions"] if not pk.startswith("ocr-tesseract|")} == {
        f"text-v2|{shard_key(i)}" for i in range(4)
    }
    assert any(pk.startswith("ocr-tesseract|") for pk in first["partitions"])
    assert run_all()["partitions"] == []
    concurrent = persisted_rows(settings)
    assert concurrent["n_evidence"] == len(concurrent["evidence"])
    assert concurrent["vectors"] == after_concurrent["vectors"]

    # The same corpus indexed sequentially in a fresh data dir (the session's demo index) gives
    # exactly the same rows.
    sequential = persisted_rows(built_demo_index.settings)
    for key in ("results", "evidence", "vectors"):
        assert concurrent[key] == sequential[key], key
