"""Helpers for tests of the HTTP API: an app over a data dir with API keys, in process
(FastAPI's TestClient) or under uvicorn in a subprocess on a free port."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def make_key(settings: Any, tenant: str = "default", **kw: Any) -> str:
    from serving.keys import KeyStore

    store = KeyStore.from_settings(settings)
    try:
        key, _ = store.create(tenant, **kw)
    finally:
        store.close()
    return key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def api_client(settings: Any, **app_kw: Any) -> Iterator[Any]:
    """A TestClient over ``create_app(settings, **app_kw)``, lifespan included."""
    from starlette.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(settings, **app_kw), raise_server_exceptions=False) as client:
        yield client


def request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or bytes) over real HTTP."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            **({"Content-Type": "application/json"} if data is not None else {}),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, dict(e.headers), e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    shared = os.environ.get("RAG_SHARED_DATA")
    env.update(
        RAG_DATA_DIR=str(data_dir),
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        LANCEDB_LOG="error",
        **({"RAG_SHARED_DATA": shared} if shared else {}),
        **extra,
    )
    return env


class Server:
    """``rag-pipeline serve`` (or any ``python -m`` module with the same flags) in a
    subprocess; its log goes to ``log_path``."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        *,
        args: list[str] | None = None,
        module: str = "rag_pipeline.cli",
        env: dict[str, str] | None = None,
    ):
        from serving.server import free_port

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            module,
            *(["serve"] if module == "rag_pipeline.cli" else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *(args or []),
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=server_env(data_dir, **(env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_live(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                status, _, _ = request(f"{self.base}/health/live", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not live after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
