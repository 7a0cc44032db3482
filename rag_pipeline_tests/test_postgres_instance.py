"""The production instance profile on the machine's PostgreSQL: a materialization in process and
a backfill launched from the CLI, queued and executed by the real daemon."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from rag_pipeline.demo.corpus import generate_demo_corpus
from rag_pipeline.storage.catalog.catalog import open_settings_catalog
from rag_pipeline_tests.conftest import require, run_all

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG = {
    "DAGSTER_PG_HOST": os.environ.get("DAGSTER_PG_HOST", "127.0.0.1"),
    "DAGSTER_PG_PORT": os.environ.get("DAGSTER_PG_PORT", "5432"),
    "DAGSTER_PG_USER": os.environ.get("DAGSTER_PG_USER", "postgres"),
    "DAGSTER_PG_PASSWORD": os.environ.get("DAGSTER_PG_PASSWORD", ""),
}


def _connect(dbname: str = "postgres"):
    import psycopg2

    return psycopg2.connect(
        host=PG["DAGSTER_PG_HOST"],
        port=int(PG["DAGSTER_PG_PORT"]),
        user=PG["DAGSTER_PG_USER"],
        password=PG["DAGSTER_PG_PASSWORD"],
        dbname=dbname,
        connect_timeout=5,
    )


@pytest.fixture
def pg_instance(pipeline_env, monkeypatch):
    try:
        admin = _connect()
    except Exception as exc:
        require(False, f"PostgreSQL is not reachable: {exc}")
    admin.autocommit = True
    db = f"rag_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    for k, v in PG.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAGSTER_PG_DB", db)
    home = Path(os.environ["DAGSTER_HOME"])
    shutil.copyfile(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    try:
        yield pipeline_env, db
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [db],
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{db}"')
        admin.close()


# A daemon-run backfill: ~3 min seen on a loaded 2-core box; its own deadlines (CLI 300 s,
# backfill 600 s) are longer than the global 300 s.
@pytest.mark.timeout(900)
def test_materialization_and_backfill_on_postgres(pg_instance, tmp_path):
    settings, db = pg_instance
    generate_demo_corpus(settings.sources[0], tmp_path / "gold.jsonl")

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        from rag_pipeline.definitions import defs
        from rag_pipeline.defs.partitions import sync_profiles

        # 1. A real materialization in process: discovery only, so the backfill has work.
        sync_profiles(instance, settings)
        defs.resolve_job_def("discover_job").execute_in_process(instance=instance)
        all_keys = defs.resolve_job_def("cpu_job").partitions_def.get_partition_keys(
            dynamic_partitions_store=instance
        )
        assert sorted(all_keys) == sorted(
            f"{p}|{i:02d}" for p in ("text-v2", "ocr-tesseract") for i in range(4)
        )
        keys = [k for k in all_keys if k.startswith("text-v2|")]  # backfill one profile

    # 2. A backfill over every shard from the CLI, executed by the daemon through the queue.
    daemon_log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=daemon_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out = subprocess.run(
            [
                str(BIN / "dagster"),
                "job",
                "backfill",
                "-w",
                str(REPO / "workspace.yaml"),
                "-j",
                "cpu_job",
                "--partitions",
                ",".join(keys),
                "--noprompt",
            ],
            cwd=REPO,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        deadline = time.monotonic() + 600
        with dg.DagsterInstance.get() as instance:
            while time.monotonic() < deadline:
                backfills = instance.get_backfills()
                runs = instance.get_runs()
                done = [r for r in runs if r.job_name == "cpu_job" and r.is_finished]
                if backfills and len(done) == len(keys):
                    break
                time.sleep(2)
            assert len(backfills) == 1
            shard_runs = [r for r in instance.get_runs() if r.job_name == "cpu_job"]
            assert len(shard_runs) == len(keys)
            assert {r.status for r in shard_runs} == {dg.DagsterRunStatus.SUCCESS}, (
                tmp_path / "daemon.log"
            ).read_text()[-3000:]
            assert {r.tags["dagster/partition"] for r in shard_runs} == set(keys)
            assert all(
                r.tags.get("dagster/backfill") == backfills[0].backfill_id for r in shard_runs
            )
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon_log.close()

    with open_settings_catalog(settings) as cat:
        persisted = {
            r["partition_key"]
            for r in cat.rows(
                "SELECT DISTINCT partition_key FROM analysis_runs WHERE status = 'persisted'"
            )
        }
    assert persisted == set(keys)
    summary = run_all()  # the gpu partitions and the snapshot, on the same Postgres instance
    assert summary["published"]
    # The rest: MV for every shard, OCR for the shards holding images.
    rest = set(summary["partitions"])
    assert {k.replace("text-v2", "minilm-l6-fit") for k in keys} <= rest
    assert {k.split("|")[0] for k in rest} == {"minilm-l6-fit", "ocr-tesseract"}
    conn = _connect(db)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs")
        assert cur.fetchone()[0] >= len(keys) + 3  # the run history really is in Postgres
    conn.close()
