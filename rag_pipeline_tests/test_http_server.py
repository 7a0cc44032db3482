"""The HTTP API over real HTTP: uvicorn in a subprocess on a free port (``rag-pipeline serve``
and a copy with test hooks). Start-up refusals, idle connections, threads, parallel requests,
the 500 path in the server log, keys never logged, schemathesis, graceful shutdown, workers."""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rag_pipeline.settings import Settings
from rag_pipeline_tests.http_support import REPO, Server, auth, make_key, request, server_env
from rag_pipeline_tests.test_serving_snapshot import build_snapshot
from serving.keys import key_hash

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, mv_model_dir) -> Path:
    root = tmp_path_factory.mktemp("http") / "data"
    build_snapshot(root, mv_model_dir)
    return root


@pytest.fixture(scope="module")
def key(data_dir) -> str:
    return make_key(Settings(data_dir=data_dir), "default", scopes=["read"])


@pytest.fixture(scope="module")
def served(data_dir, key, tmp_path_factory):
    srv = Server(
        data_dir,
        tmp_path_factory.mktemp("log") / "server.log",
        module="rag_pipeline_tests.http_test_server",
        env={
            "RAG_KEEPALIVE_S": "1.5",
            "RAG_MAX_CONCURRENT_REQUESTS": "4",
            "RAG_SHUTDOWN_GRACE_S": "20",
        },
    )
    srv.wait_live()
    deadline = time.monotonic() + 60
    while request(f"{srv.base}/health/ready")[0] != 200:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.2)
    yield srv
    srv.stop()


def _serve(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rag_pipeline.cli", "serve", *args],
        cwd=REPO,
        env=server_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_refuses_anonymous_configurations(tmp_path):
    empty = tmp_path / "data"
    out = _serve(empty, "--port", "1")
    assert out.returncode == 2 and "no active API key" in out.stderr
    out = _serve(empty, "--dev", "--host", "0.0.0.0", "--port", "1")
    assert out.returncode == 2 and "loopback" in out.stderr
    out = _serve(empty, "--dev", "--workers", "2", "--port", "1")
    assert out.returncode == 2 and "one worker" in out.stderr
    # a revoked or expired key is no key
    settings = Settings(data_dir=empty)
    from serving.keys import KeyStore

    store = KeyStore.from_settings(settings)
    _, info = store.create("default")
    store.revoke(info.key_id)
    store.close()
    out = _serve(empty, "--port", "1")
    assert out.returncode == 2 and "no active API key" in out.stderr


def test_dev_mode_on_loopback_serves_keyless_and_says_so(data_dir, tmp_path):
    srv = Server(data_dir, tmp_path / "dev.log", args=["--dev"])
    try:
        srv.wait_live()
        status, _, body = request(f"{srv.base}/v1/search?q=quokka&k=3")
        assert status == 200 and body["hits"][0]["unit_id"] == "d-quokka"
        assert "DEV MODE" in srv.log() and "NOT required" in srv.log()
    finally:
        srv.stop()


def _get_search(base: str, key: str, q: str = "quokka") -> tuple[int, dict]:
    status, _, body = request(f"{base}/v1/search?q={q}&k=5", headers=auth(key), timeout=10)
    return status, body


def test_idle_connections_neither_block_requests_nor_add_threads(served, key):
    assert _get_search(served.base, key)[0] == 200
    threads_before = served.threads()
    idle = []
    for i in range(500):
        s = socket.create_connection(("127.0.0.1", served.port), timeout=5)
        if i % 5 == 0:  # a fifth of them start a request and never finish its head
            s.sendall(b"GET /v1/search?q=x HTTP/1.1\r\nHost: x\r\n")
        idle.append(s)
    try:
        t0 = time.perf_counter()
        status, body = _get_search(served.base, key)
        elapsed = time.perf_counter() - t0
        assert status == 200 and body["hits"][0]["unit_id"] == "d-quokka"
        assert elapsed < 1.0, f"a request beside 500 idle connections took {elapsed:.2f} s"
        threads_with_idle = served.threads()
        assert threads_with_idle <= threads_before + 4, (threads_before, threads_with_idle)
        assert threads_with_idle < 100
        # the server closes them: idle ones after the keep-alive time, unfinished heads too
        time.sleep(1.5 + 1.5)
        closed = 0
        for s in idle:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(idle)
    finally:
        for s in idle:
            s.close()
    print(
        f"\nidle connections: 500; request beside them {elapsed * 1000:.0f} ms; server threads "
        f"{threads_before} before, {threads_with_idle} with them"
    )


def test_parallel_requests(served, key):
    queries = [
        "quokka",
        "budget+review",
        "dog+on+the+beach",
        "turbine",
        "secrets",
        "autoscaling",
        "%C3%BC+%E6%97%A5%E6%9C%AC",
        "lisbon",
    ] * 8
    expected = {
        q: [h["unit_id"] for h in _get_search(served.base, key, q)[1]["hits"]] for q in set(queries)
    }
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda q: (q, _get_search(served.base, key, q)), queries))
    for q, (status, body) in results:
        assert status == 200 and [h["unit_id"] for h in body["hits"]] == expected[q]


def test_internal_error_over_http_is_logged_with_its_request_id(served, key):
    status, _, body = request(
        f"{served.base}/v1/search?q=boom", headers={**auth(key), "X-Request-ID": "req-boom-1"}
    )
    assert status == 500 and body == {
        "code": "internal",
        "request_id": "req-boom-1",
        "message": body["message"],
    }
    text = json.dumps(body)
    assert "srv" not in text and "RuntimeError" not in text and "boom" not in body["message"]
    deadline = time.monotonic() + 5
    while "Traceback" not in served.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = served.log()
    line = next(ln for ln in log.splitlines() if "req-boom-1" in ln and "failed" in ln)
    assert json.loads(line)["request_id"] == "req-boom-1"  # JSON log lines (RAG_LOG_FORMAT)
    tail = log[log.index(line) :]
    assert "Traceback" in tail and "boom in /srv/secret/path.db" in tail


def test_keys_and_queries_never_reach_the_server_log(served, key):
    request(f"{served.base}/v1/search?q=kangaroo", headers=auth(key))
    request(f"{served.base}/v1/search?q=kangaroo", headers={"X-API-Key": key})
    request(f"{served.base}/v1/search?q=kangaroo", headers=auth("rag_" + "z" * 43))
    log = served.log()
    assert "GET /v1/search 200" in log and "kangaroo" not in log
    for k in (key, "rag_" + "z" * 43):
        assert k not in log and key_hash(k) not in log


def test_schemathesis_finds_no_server_error_and_no_schema_violation(served, key, tmp_path):
    """Every route of /openapi.json, with a valid key: no 5xx (503 with a documented body is an
    answer, not an error, but none is expected here), every response matches its schema."""
    report = tmp_path / "junit.xml"
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{served.base}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance,"
        "negative_data_rejection",
        "--max-examples",
        "40",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--seed",
        "1",
    ]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    summary = out.stdout[-6000:]
    print(summary)
    assert out.returncode == 0, summary + out.stderr[-3000:]
    assert key not in served.log()
    m = re.search(r"(\d+) generated", summary)
    assert m is None or int(m.group(1)) > 100


def test_graceful_shutdown_drains_in_flight_requests(served, key):
    result: dict = {}

    def slow() -> None:
        result["resp"] = request(
            f"{served.base}/v1/search?q=sleep:2+quokka", headers=auth(key), timeout=30
        )

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.7)
    served.proc.terminate()  # SIGTERM while the request runs
    t.join(30)
    status, _, body = result["resp"]
    assert status == 200 and body["hits"] and body["query"] == "sleep:2 quokka"
    # uvicorn re-raises the signal once it has shut down cleanly
    assert served.proc.wait(30) in (0, -15)
    assert "Application shutdown complete" in served.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2)


def test_workers(data_dir, key, tmp_path):
    srv = Server(data_dir, tmp_path / "workers.log", args=["--workers", "2"])
    try:
        srv.wait_live(timeout=180)
        deadline = time.monotonic() + 120
        while request(f"{srv.base}/health/ready")[0] != 200:
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.3)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: _get_search(srv.base, key)[0], range(16)))
        assert statuses == [200] * 16
    finally:
        assert srv.stop() in (0, -15)
