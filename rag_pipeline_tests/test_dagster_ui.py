"""The real `dagster dev` (webserver + daemon): the asset graph shows the lineage, and one shard
re-materializes from the UI's GraphQL API the way the Materialize button launches it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rag_pipeline.demo.corpus import generate_demo_corpus
from rag_pipeline.storage.catalog.catalog import open_settings_catalog
from rag_pipeline_tests.conftest import run_all

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


def _wait_for(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = fn()
            if result:
                return result
        except Exception as exc:  # server still starting
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


@pytest.fixture
def dagster_dev(pipeline_env, tmp_path):
    generate_demo_corpus(pipeline_env.sources[0], tmp_path / "gold.jsonl")
    port = _free_port()
    log = open(tmp_path / "dagster_dev.log", "w")
    # A session of its own: the whole tree (webserver, daemon, code server) stops together.
    proc = subprocess.Popen(
        [DAGSTER, "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _gql(port, "{ version }"), 180, "dagster dev")
        yield port, pipeline_env
    finally:
        for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
        log.close()


def test_asset_graph_and_shard_rematerialization_from_the_ui(dagster_dev):
    port, settings = dagster_dev
    nodes = _wait_for(
        lambda: _gql(
            port,
            """
        { assetNodes { assetKey { path } dependencyKeys { path }
                       partitionDefinition { description } } }""",
        )["assetNodes"],
        120,
        "asset nodes",
    )
    graph = {
        "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
        for n in nodes
    }
    # assets -> asset_versions -> analysis_runs / inference_runs -> evidence -> search_snapshot
    assert graph["asset_versions"] == {"assets"}
    assert graph["analysis_runs"] == {"asset_versions"}
    assert graph["inference_runs"] == {"asset_versions"}
    assert graph["evidence"] == {"analysis_runs", "inference_runs"}
    assert graph["search_snapshot"] == {"evidence"}
    partitioned = {
        "/".join(n["assetKey"]["path"]): n["partitionDefinition"]["description"]
        for n in nodes
        if n["partitionDefinition"]
    }
    assert set(partitioned) == {"analysis_runs", "inference_runs"}
    assert "gpu_profiles" in partitioned["inference_runs"]
    assert "cpu_profiles" in partitioned["analysis_runs"]

    run_all()  # index once (registers the profiles); then reprocess shard 01 from the UI
    with open_settings_catalog(settings) as cat:
        before = cat.counts(settings.tenant_id)

    repos = _gql(
        port,
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name "
        "location { name } } } } }",
    )["repositoriesOrError"]["nodes"]
    repo = repos[0]
    launched = _gql(
        port,
        """
        mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
            __typename
            ... on LaunchRunSuccess { run { runId } }
            ... on PythonError { message }
            ... on RunConfigValidationInvalid { errors { message } } } }""",
        {
            "p": {
                "selector": {
                    "repositoryLocationName": repo["location"]["name"],
                    "repositoryName": repo["name"],
                    "jobName": "gpu_job",
                },
                "executionMetadata": {
                    "tags": [
                        {"key": "dagster/partition", "value": "minilm-l6-fit|01"},
                        {"key": "dagster/partition/profile", "value": "minilm-l6-fit"},
                        {"key": "dagster/partition/shard", "value": "01"},
                    ]
                },
                "runConfigData": {},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished():
        status = _gql(
            port,
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]["status"]
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    assert _wait_for(finished, 300, "shard run") == "SUCCESS"
    events = _gql(
        port,
        """query($id: ID!) { runOrError(runId: $id) { ... on Run {
        tags { key value } assetMaterializations { assetKey { path } partition } } } }""",
        {"id": run_id},
    )["runOrError"]
    mats = {
        ("/".join(m["assetKey"]["path"]), m["partition"]) for m in events["assetMaterializations"]
    }
    assert mats == {("inference_runs", "minilm-l6-fit|01")}
    with open_settings_catalog(settings) as cat:
        # Reprocessing an up-to-date shard changes nothing: same rows, no duplicates.
        assert cat.counts(settings.tenant_id) == before
