"""Four shard runs at once (separate processes, multiprocess executor): no lock error, no row
lost or duplicated, the same rows as a sequential run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from rag_pipeline.catalog.catalog import open_settings_catalog
from rag_pipeline.demo_corpus import generate_demo_corpus
from rag_pipeline.settings import Settings, shard_key
from rag_pipeline.vector_store import VectorStore
from rag_pipeline_tests.conftest import run_all

DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _fingerprint(settings: Settings) -> dict:
    """What was persisted, independent of run ids and timestamps."""
    with open_settings_catalog(settings) as cat:
        # result_checksum covers the run id, so it differs between runs by design.
        results = sorted((r["dedupe_key"], r["status"], r["n_text"], r["n_vectors"])
                         for r in cat.rows("SELECT * FROM results"))
        evidence = sorted((r["evidence_id"], r["text"]) for r in cat.rows(
            "SELECT evidence_id, text FROM evidence_text"))
        n_evidence = cat.scalar("SELECT count(*) FROM evidence_text")
        runs = cat.rows("SELECT partition_key, status FROM analysis_runs")
    vt = VectorStore(settings.lance_dir)._table("mv", 384, create=False).to_arrow()
    vec_ids = vt.column("evidence_id").to_pylist()
    return {"results": results, "evidence": evidence, "n_evidence": n_evidence,
            "vector_ids": sorted(vec_ids), "n_vectors": len(vec_ids),
            "run_partitions": sorted({r["partition_key"] for r in runs}),
            "run_status": {r["status"] for r in runs}}


def test_four_shards_concurrently_match_a_sequential_run(tmp_path, monkeypatch, pipeline_env):
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
    procs = [subprocess.Popen(
        [DAGSTER, "asset", "materialize", "-m", "rag_pipeline.definitions",
         "--select", "inference_runs", "--partition", f"minilm-l6|{shard_key(i)}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(4)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
        assert "RUN_SUCCESS" in out
        for symptom in ("Could not set lock", "database is locked", "LockTimeout",
                        "CommitConflict"):
            assert symptom not in out, symptom
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert sum(r.status == dg.DagsterRunStatus.SUCCESS for r in runs) >= 5
        assert {r.tags.get("dagster/partition") for r in runs} >= {
            f"minilm-l6|{shard_key(i)}" for i in range(4)}

    after_concurrent = _fingerprint(settings)
    assert after_concurrent["run_partitions"] == [f"minilm-l6|{shard_key(i)}" for i in range(4)]
    assert after_concurrent["run_status"] == {"persisted"}
    assert after_concurrent["n_vectors"] == len(set(after_concurrent["vector_ids"])) > 0

    # The text partitions next; then nothing is left to do.
    first = run_all()
    assert set(first["partitions"]) == {f"text-v1|{shard_key(i)}" for i in range(4)}
    assert run_all()["partitions"] == []
    concurrent = _fingerprint(settings)
    assert concurrent["n_evidence"] == len(concurrent["evidence"])
    assert concurrent["vector_ids"] == after_concurrent["vector_ids"]

    # The same corpus indexed sequentially in a fresh data dir gives exactly the same rows.
    seq_data = tmp_path / "sequential"
    monkeypatch.setenv("RAG_DATA_DIR", str(seq_data))
    run_all()
    sequential = _fingerprint(Settings.from_env())
    for key in ("results", "evidence", "vector_ids"):
        assert concurrent[key] == sequential[key], key
