"""Ingest over HTTP: uploads and deletions (``POST|DELETE /v1/documents``, ``GET /v1/jobs``)
carried out by real Dagster runs of the project's jobs, started by ``ingest_sensor`` and the
existing sensor chain; and the CLI's JSON log line per search."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from rag_pipeline.media_types import OCTET_STREAM, upload_media_type
from rag_pipeline.settings import Settings
from rag_pipeline_tests.conftest import run_all
from rag_pipeline_tests.http_support import (
    REPO,
    Server,
    api_client,
    auth,
    make_key,
    request,
    server_env,
)

UPLOAD_LIMIT = 4096


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with one ``files`` part per (name, bytes)."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, data in files:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def post_files(base: str, key: str, files: list[tuple[str, bytes]]) -> tuple[int, Any]:
    body, ctype = multipart(files)
    req = urllib.request.Request(
        f"{base}/v1/documents",
        data=body,
        method="POST",
        headers={**auth(key), "Content-Type": ctype},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def audit_actions(settings: Settings) -> list[tuple[str, str | None]]:
    engine = sa.create_engine(f"sqlite:///{settings.serving_db_path}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT action, target FROM audit_log ORDER BY id")).all()
    finally:
        engine.dispose()
    return [(r.action, r.target) for r in rows]


# -- without Dagster: the rules of the routes -------------------------------------------------


def test_upload_media_type_needs_name_and_bytes_to_agree():
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    assert upload_media_type("a.png", png) == "image/png"
    assert upload_media_type("a.jpg", png) == "image/png"  # the bytes say which image
    assert upload_media_type("a.png", b"just text") == OCTET_STREAM
    assert upload_media_type("a.md", b"# Title\n") == "text/markdown"
    assert upload_media_type("a.md", png) == OCTET_STREAM
    assert upload_media_type("a.txt", b"bin\x00ary") == OCTET_STREAM
    assert upload_media_type("a.pdf", b"%PDF-1.7\n") == "application/pdf"
    assert upload_media_type("a.pdf", b"<html>") == OCTET_STREAM
    assert upload_media_type("tool.exe", b"MZ\x90\x00") == OCTET_STREAM
    assert upload_media_type("noext", png) == "image/png"


def test_upload_source_is_the_tenants_with_the_keys_groups(pipeline_env, tmp_path):
    from rag_pipeline import uploads
    from rag_pipeline.discovery.sources import SourcesFileError, load_sources

    settings = pipeline_env
    sha = "ab" * 32
    for groups in ({"all"}, {"staff", "hr"}):
        d = uploads.content_dir(settings, "acme", frozenset(groups), sha)
        d.mkdir(parents=True)
        (d / "a.md").write_text("x")
    sources = {s.name: s for s in load_sources(settings).sources}
    up = sources["uploads-acme"]
    assert up.tenant == "acme"
    assert up.groups_for(f"hr+staff/{sha}/a.md") == ["hr", "staff"]
    assert up.groups_for(f"all/{sha}/a.md") == ["all"]
    assert up.groups_for("stray.md") == []  # outside a group folder: readable by nobody
    assert uploads.safe_name("../../etc/.passwd") == "passwd"
    assert uploads.safe_name("") == "upload"
    # the upload folder may not overlap a configured source
    overlapping = Settings.from_env(upload_root=settings.sources[0] / "up")
    (overlapping.upload_dir / "acme").mkdir(parents=True)
    with pytest.raises(SourcesFileError, match="overlaps the upload folder"):
        load_sources(overlapping)


def test_upload_rules_over_the_api(pipeline_env, monkeypatch, capsys):
    from rag_pipeline.cli import main

    monkeypatch.setenv("RAG_UPLOAD_MAX_FILE_BYTES", str(UPLOAD_LIMIT))
    settings = Settings.from_env()
    assert main(["keys", "create", "--tenant", "default", "--scopes", "read,write"]) == 0
    writer = capsys.readouterr().out.strip().splitlines()[0]  # the CLI's key, printed once
    assert writer.startswith("rag_")
    reader = make_key(settings, "default", scopes=["read"])
    other = make_key(settings, "globex", scopes=["read", "write"])
    doc = b"# Moth traps\n\nLight traps for moth surveys at night.\n"
    sha = hashlib.sha256(doc).hexdigest()

    def post(key: str, files: list[tuple[str, bytes]]):
        body, ctype = multipart(files)
        return client.post(
            "/v1/documents", content=body, headers={**auth(key), "Content-Type": ctype}
        )

    with api_client(settings) as client:
        r = post(writer, [("moths.md", doc)])
        assert r.status_code == 202, r.text
        first = r.json()
        assert first["state"] == "queued" and first["run_id"] is None
        assert first["files"] == [
            {
                "asset_id": sha,
                "name": "moths.md",
                "size": len(doc),
                "media_type": "text/markdown",
                "duplicate": False,
                "job_id": first["job_id"],
            }
        ]
        stored = settings.upload_dir / "default" / "all" / sha / "moths.md"
        assert stored.read_bytes() == doc

        # the same bytes again (under another name): the existing job, nothing stored
        r = post(writer, [("copy.md", doc)])
        assert r.status_code == 200, r.text
        again = r.json()
        assert again["duplicate"] and again["job_id"] == first["job_id"]
        assert [p.name for p in (settings.upload_dir / "default").rglob("*.md")] == ["moths.md"]

        job = client.get(f"/v1/jobs/{first['job_id']}", headers=auth(writer)).json()
        assert job["state"] == "queued" and job["kind"] == "upload"
        assert job["created_at"].endswith(("Z", "+00:00")) and job["asset_ids"] is None
        assert job["files"][0]["source"] == "uploads-default"

        big = post(writer, [("big.md", b"a" * (UPLOAD_LIMIT + 1))])
        assert big.status_code == 413 and big.json()["code"] == "payload_too_large"
        fake = post(writer, [("photo.png", b"not a png at all")])
        assert fake.status_code == 415 and fake.json()["code"] == "unsupported_media_type"
        assert post(writer, [("tool.exe", b"MZ\x90\x00")]).status_code == 415
        # a refused request keeps nothing, not even its good files
        assert post(writer, [("ok.md", b"# fine\n"), ("bad.png", b"nope")]).status_code == 415
        assert len(list((settings.upload_dir / "default").rglob("*.md"))) == 1
        assert not list((settings.upload_dir / "default" / ".incoming").iterdir())

        assert post(reader, [("moths.md", doc)]).status_code == 403
        assert client.get(f"/v1/jobs/{first['job_id']}", headers=auth(reader)).status_code == 403
        assert client.get(f"/v1/jobs/{first['job_id']}", headers=auth(other)).status_code == 404
        assert client.delete(f"/v1/documents/{sha}", headers=auth(other)).status_code == 404
        assert client.post("/v1/documents", content=b"{}", headers=auth(writer)).status_code == 415

        gone = client.delete(f"/v1/documents/{sha}", headers=auth(writer))
        assert gone.status_code == 202, gone.text
        assert not stored.exists()
        assert client.delete(f"/v1/documents/{sha}", headers=auth(writer)).status_code == 404

    actions = [a for a, _ in audit_actions(settings)]
    assert actions.count("ingest.upload") == 2 and actions.count("ingest.delete") == 1


# -- through Dagster, over real HTTP -----------------------------------------------------------


def drive_dagster(instance: dg.DagsterInstance) -> list[str]:
    """What the daemon would do for ingest jobs, one step at a time: tick ``ingest_sensor``,
    run what it requests and what the chain's sensors request after each run, then tick the
    ingest sensor again so it records the outcome. Returns the run ids."""
    from rag_pipeline.definitions import defs
    from rag_pipeline.defs.analysis.sensors import analysis_done_sensor
    from rag_pipeline.defs.catalog.ingest import ingest_sensor
    from rag_pipeline.defs.catalog.sensors import discover_done_sensor
    from rag_pipeline.defs.resources import PipelineSettings

    resources = {"pipeline": PipelineSettings()}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

    def as_list(out: Any) -> list[dg.RunRequest]:
        if isinstance(out, dg.RunRequest):
            return [out]
        return [r for r in (out or []) if isinstance(r, dg.RunRequest)]

    def execute(job_name: str, req: dg.RunRequest) -> dg.ExecuteInProcessResult:
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            partition_key=req.partition_key,
            tags=dict(req.tags),
            run_config=quiet,
        )
        assert result.success, f"{job_name} failed"
        return result

    def status_ctx(name: str, result: dg.ExecuteInProcessResult):
        return dg.build_run_status_sensor_context(
            sensor_name=name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_success_event(),
            resources=resources,
        )

    runs = []
    tick = ingest_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    for req in as_list(tick):
        found = execute("discover_job", req)
        runs.append(found.run_id)
        chain = as_list(discover_done_sensor(status_ctx("discover_done_sensor", found)))
        publish = [r for r in chain if r.job_name == "publish_job"]
        analysis = [r for r in chain if r.job_name != "publish_job"]
        for r in analysis:
            done = execute(str(r.job_name), r)
            runs.append(done.run_id)
            publish += as_list(analysis_done_sensor(status_ctx("analysis_done_sensor", done)))
        # Runs here go one after another, so each one finds no sibling pending and asks to
        # publish; the requests share one run key, which the daemon launches once.
        publish = list({r.run_key: r for r in publish}.values())
        assert len(publish) == 1, "one publish run per chain"
        runs.append(execute("publish_job", publish[0]).run_id)
    ingest_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    return runs


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def catalog_counts(settings: Settings) -> dict[str, int]:
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    with open_settings_catalog(settings) as cat:
        return cat.counts()


@pytest.mark.slow
def test_upload_is_searchable_after_dagster_and_gone_after_delete(pipeline_env, tmp_path):
    settings = pipeline_env
    (settings.sources[0] / "bees.md").write_text("# Bees\n\nHoney bees and varroa mites.\n")
    run_all()  # the first promoted snapshot
    writer = make_key(settings, "default", scopes=["read", "write"])
    other = make_key(settings, "globex", scopes=["read", "write"])
    word = "zanzibarine"  # in no other document
    doc = f"# Lantern moths\n\nThe {word} lantern moth flies at dusk over salt marshes.\n".encode()
    sha = hashlib.sha256(doc).hexdigest()
    env = {
        "RAG_SOURCES": str(settings.sources[0]),
        "RAG_SHARDS": str(settings.shard_count),
        "RAG_SNAPSHOT_POLL_S": "0.5",
        "RAG_CACHE_TTL_S": "0",
        "RAG_UPLOAD_MAX_FILE_BYTES": str(UPLOAD_LIMIT),
    }
    server = Server(settings.data_dir, tmp_path / "server.log", env=env)

    def hits(query: str) -> list[dict]:  # lexical only: a vector axis always answers something
        status, _, body = request(
            f"{server.base}/v1/search?q={query}&k=5&axes=fts", headers=auth(writer)
        )
        assert status == 200, body
        return body["hits"]

    try:
        server.wait_live()
        # With an empty file, which discovery dead-letters: the job reports it.
        status, accepted = post_files(
            server.base, writer, [("lantern moths.md", doc), ("blank.md", b"")]
        )
        assert status == 202, accepted
        job_id = accepted["job_id"]
        assert not hits(word)

        with dg.DagsterInstance.get() as instance:
            runs = drive_dagster(instance)
            status, _, job = request(f"{server.base}/v1/jobs/{job_id}", headers=auth(writer))
            assert status == 200 and job["state"] == "succeeded", job
            assert job["run_id"] == runs[0]  # the discovery run the sensor requested
            discovery = instance.get_run_by_id(runs[0])
            assert discovery is not None and discovery.job_name == "discover_job"
            blank = hashlib.sha256(b"").hexdigest()
            assert job["asset_ids"] == sorted([sha, blank]) and job["promoted"]
            assert [
                (d["asset_id"], d["name"], d["stage"], d["error_class"])
                for d in job["dead_letters"]
            ] == [(blank, "blank.md", "discover", "EmptyFile")]

            found = wait_for(lambda: hits(word), what="the upload in the promoted snapshot")
            assert found[0]["source"] == "uploads-default"
            assert found[0]["path"].endswith("lantern moths.md")
            assert request(f"{server.base}/v1/jobs/{job_id}", headers=auth(other))[0] == 404

            # The same bytes again: the existing job, and nothing for Dagster to do.
            before = catalog_counts(settings)
            status, again = post_files(server.base, writer, [("again.md", doc)])
            assert status == 200 and again["duplicate"] and again["job_id"] == job_id
            assert drive_dagster(instance) == []
            summary = run_all()  # even a full materialization finds nothing new
            assert catalog_counts(settings) == before
            assert summary["partitions"] == [] and not summary["published"]
            assert len(hits(word)) == 1

            status, _, gone = request(
                f"{server.base}/v1/documents/{sha}", method="DELETE", headers=auth(writer)
            )
            assert status == 202, gone
            drive_dagster(instance)
            status, _, job = request(
                f"{server.base}/v1/jobs/{gone['job_id']}", headers=auth(writer)
            )
            assert job["state"] == "succeeded" and job["kind"] == "delete", job
            wait_for(lambda: not hits(word), what="the deleted upload to leave the snapshot")
            assert hits("varroa"), "the rest of the index is untouched"
    finally:
        server.stop()
    actions = audit_actions(settings)
    assert ("ingest.upload", job_id) in actions and ("ingest.delete", gone["job_id"]) in actions


@pytest.mark.slow
def test_cli_search_logs_one_json_line(pipeline_env):
    settings = pipeline_env
    (settings.sources[0] / "bees.md").write_text("# Bees\n\nHoney bees and varroa mites.\n")
    run_all()
    env = server_env(
        settings.data_dir,
        RAG_SOURCES=str(settings.sources[0]),
        RAG_SHARDS=str(settings.shard_count),
        RAG_LOG_FORMAT="json",
    )
    out = subprocess.run(
        [sys.executable, "-m", "rag_pipeline.cli", "search", "varroa secret words", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    access = [r for r in lines if r["logger"] == "rag_pipeline.cli.access"]
    assert len(access) == 1, out.stderr
    line = access[0]
    assert line["op"] == "search" and line["status"] == "ok" and line["tenant"] == "default"
    assert line["request_id"].startswith("cli-") and line["latency_ms"] > 0
    assert line["snapshot_id"] == json.loads(out.stdout)["snapshot_id"]
    assert line["hits"] >= 1
    assert "secret" not in out.stderr, "no query text unless RAG_LOG_QUERY_TEXT"
    assert Path(settings.data_dir).exists()


def test_concurrent_uploads_of_the_same_bytes_store_one_file(pipeline_env):
    import concurrent.futures

    from serving.ingest import Received, open_store, spool
    from serving.keys import KeyStore

    settings = pipeline_env
    KeyStore.from_settings(settings).close()  # the serving database and its tables
    store = open_store(settings)
    assert store is not None
    doc = b"# Same bytes\n\nPosted by two clients at once.\n"

    def one(name: str):
        got = spool(settings, "default", [doc], UPLOAD_LIMIT)
        assert got is not None
        tmp, sha, size = got
        rec = Received(tmp=tmp, name="same.md", sha256=sha, size=size, media_type="text/markdown")
        return store.store_upload(
            "default", frozenset({"all"}), [rec], key_id=None, request_id=name
        )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, [f"r{i}" for i in range(4)]))
    jobs = {job.job_id for job, _ in results if job is not None}
    assert len(jobs) == 1, "one request stored the file, the others were duplicates of it"
    assert all(files[0].job_id in jobs for _, files in results)
    assert sum(not files[0].duplicate for _, files in results) == 1
    stored = list((settings.upload_dir / "default").rglob("same.md"))
    assert len(stored) == 1 and stored[0].read_bytes() == doc
    assert not list((settings.upload_dir / "default" / ".incoming").iterdir())
    store.engine.dispose()
