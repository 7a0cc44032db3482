"""Operations (issue #11, 3-5): /metrics, JSON request logs, request ids, the query log
(SQLite and PostgreSQL), retention, feedback (tenant-bound), the audit log, and feedback ->
``eval labels --from-feedback`` -> ``eval run`` on the demo corpus."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from rag_pipeline.jsonlog import JsonFormatter
from rag_pipeline.settings import Settings
from rag_pipeline_tests.http_support import api_client, auth
from rag_pipeline_tests.test_serving_keys import pg_url  # noqa: F401 (fixture)
from rag_pipeline_tests.test_serving_snapshot import build_snapshot
from serving.keys import KeyStore
from serving.querylog import QueryLog, query_log


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory, mv_model_dir) -> Path:
    root = tmp_path_factory.mktemp("obs") / "data"
    build_snapshot(root, mv_model_dir)
    return root


def _settings(data_dir: Path, **kw) -> Settings:
    return Settings(data_dir=data_dir, key_cache_s=0.5, snapshot_poll_s=0.2, **kw)


def _keys(settings: Settings) -> dict[str, str]:
    store = KeyStore.from_settings(settings)
    try:
        return {
            "read": store.create("default", scopes=["read"])[0],
            "admin": store.create("default", scopes=["read", "admin"])[0],
            "acme": store.create("acme", scopes=["read"])[0],
        }
    finally:
        store.close()


@pytest.fixture(scope="module")
def api(snapshot_dir):
    settings = _settings(snapshot_dir)
    keys = _keys(settings)
    with api_client(settings) as client:
        yield client, keys, settings


def _metrics(client, key) -> dict[str, list]:
    resp = client.get("/metrics", headers=auth(key))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(resp.text):
        out.setdefault(fam.name, []).extend(fam.samples)
    return out


def _value(fams, sample_name: str, **labels) -> float:
    fam = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_bucket")
    fam = fam.removesuffix("_sum")
    total = 0.0
    for s in fams.get(fam, []):
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def test_metrics_parse_and_move(api):
    client, keys, _ = api
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=auth(keys["read"])).status_code == 403
    before = _metrics(client, keys["admin"])
    n0 = _value(before, "rag_http_requests_total", route="/v1/search", outcome="ok")
    for _ in range(3):
        assert (
            client.get("/v1/search", params={"q": "quokka"}, headers=auth(keys["read"])).status_code
            == 200
        )
    assert client.get("/v1/units/nope", headers=auth(keys["read"])).status_code == 404
    after = _metrics(client, keys["admin"])
    assert _value(after, "rag_http_requests_total", route="/v1/search", outcome="ok") == n0 + 3
    assert (
        _value(
            after, "rag_http_requests_total", route="/v1/units/{unit_id}", outcome="client_error"
        )
        >= 1
    )
    assert _value(after, "rag_http_request_duration_seconds_count", route="/v1/search") >= 3
    # per-stage search latency: encode, each axis, fusion, fetch
    stages = {
        s.labels["stage"] for s in after["rag_search_stage_seconds"] if s.name.endswith("_count")
    }
    assert {"fts", "mv", "mv_encode", "fuse", "fetch", "total"} <= stages
    info = [s for s in after["rag_snapshot_info"]]
    assert len(info) == 1 and info[0].labels["snapshot_id"] and info[0].value == 1
    assert after["rag_snapshot_units"][0].value > 0
    assert after["rag_snapshot_age_seconds"][0].value >= 0
    axes = {s.labels["axis"]: s.value for s in after["rag_axis_available"]}
    assert axes["fts"] == 1 and axes["mv"] == 1
    assert "rag_http_requests_in_flight" in after
    assert "rag_rate_limited" in after and "rag_quota_exceeded" in after
    # 429s: told apart by their error code
    from serving.http_errors import ApiError

    def limited(kind: str):
        raise ApiError(429, kind, "slow down", headers={"Retry-After": "1"})

    client.app.add_api_route("/test/limited/{kind}", limited)
    for kind in ("rate_limited", "quota_exceeded", "quota_exceeded"):
        assert client.get(f"/test/limited/{kind}").status_code == 429
    m = _metrics(client, keys["admin"])
    assert _value(m, "rag_rate_limited_total", reason="rate_limited") == 1
    assert _value(m, "rag_quota_exceeded_total") == 2
    assert _value(m, "rag_http_requests_total", outcome="quota_exceeded") == 2
    # the cache hook the caches call
    client.app.state.metrics.cache_event("search", hit=True)
    client.app.state.metrics.cache_event("search", hit=False)
    m = _metrics(client, keys["admin"])
    assert _value(m, "rag_cache_requests_total", cache="search", outcome="hit") == 1


def test_one_json_log_line_per_request_without_the_key(api, caplog):
    client, keys, _ = api
    key = keys["read"]
    with caplog.at_level(logging.INFO, logger="serving.access"):
        resp = client.get(
            "/v1/search",
            params={"q": "secret quokka words"},
            headers={**auth(key), "X-Request-ID": "my-req-1"},
        )
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "my-req-1"
    records = [r for r in caplog.records if r.name == "serving.access"]
    assert len(records) == 1
    line = JsonFormatter().format(records[0])
    assert "\n" not in line and key not in line and "secret" not in line
    obj = json.loads(line)
    assert obj["request_id"] == "my-req-1" and obj["route"] == "/v1/search"
    assert obj["status"] == 200 and obj["latency_ms"] > 0 and obj["tenant"] == "default"
    assert obj["key_id"].startswith("key_") and obj["snapshot_id"]
    assert obj["query_id"] == resp.json()["query_id"]
    # a request id the server made
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="serving.access"):
        resp = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    rid = resp.headers["x-request-id"]
    assert rid != "bad id with spaces" and len(rid) == 32


def test_query_log_and_feedback_bound_to_the_tenant(api):
    client, keys, _ = api
    resp = client.post("/v1/search", json={"query": "quokka", "k": 3}, headers=auth(keys["read"]))
    body = resp.json()
    qid, unit = body["query_id"], body["hits"][0]["unit_id"]
    sim = client.get(
        "/v1/similar", params={"asset_id": body["hits"][0]["asset_id"]}, headers=auth(keys["read"])
    )
    assert sim.status_code in (200, 422) and (sim.status_code != 200 or sim.json()["query_id"])
    qlog = client.app.state.observer.querylog
    assert qlog.flush(5)
    with qlog.engine.connect() as conn:
        row = conn.execute(sa.select(query_log).where(query_log.c.query_id == qid)).one()
    assert row.tenant == "default" and row.op == "search" and row.query == "quokka"
    assert row.snapshot_id == body["snapshot_id"] and row.hits[0]["unit_id"] == unit
    assert row.timings_ms["total"] > 0 and row.query_type == body["query_type"]

    fb = {"query_id": qid, "unit_id": unit, "judgement": "relevant", "note": "yes"}
    ok = client.post("/v1/feedback", json=fb, headers=auth(keys["read"]))
    assert ok.status_code == 201 and ok.json()["query_id"] == qid
    # another tenant's key cannot judge this query; unknown queries and units are 404 too
    assert client.post("/v1/feedback", json=fb, headers=auth(keys["acme"])).status_code == 404
    other = {**fb, "query_id": "q_" + "0" * 32}
    assert client.post("/v1/feedback", json=other, headers=auth(keys["read"])).status_code == 404
    assert (
        client.post(
            "/v1/feedback", json={**fb, "unit_id": "nope"}, headers=auth(keys["read"])
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/v1/feedback", json={**fb, "judgement": "meh"}, headers=auth(keys["read"])
        ).status_code
        == 422
    )
    assert client.post("/v1/feedback", json=fb).status_code == 401
    rows = list(qlog.feedback_rows("default"))
    assert any(r["query_id"] == qid and r["path"] and r["judgement"] == "relevant" for r in rows)
    assert not list(qlog.feedback_rows("acme"))


def test_query_log_write_is_cheap(tmp_path):
    """The request pays for an enqueue, not a commit."""
    store = KeyStore.from_settings(_settings(tmp_path / "d"))
    qlog = QueryLog(store.engine)
    qlog.start()
    try:
        times = []
        for i in range(200):
            t0 = time.perf_counter()
            qlog.record(
                {
                    "query_id": f"q_{i:032x}",
                    "tenant": "t",
                    "op": "search",
                    "query": "x",
                    "hits": [],
                    "timings_ms": {},
                }
            )
            times.append((time.perf_counter() - t0) * 1000)
        # the median: a GIL hand-off to the writer thread (up to 5 ms) may land on a few
        per_record_ms = sorted(times)[len(times) // 2]
        assert qlog.flush(10)
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(query_log)).scalar() == 200
        assert per_record_ms < 1.0, per_record_ms
    finally:
        qlog.close()
        store.close()


def _query_log_roundtrip(settings: Settings) -> None:
    store = KeyStore.from_settings(settings)
    try:
        qlog = QueryLog(store.engine, retention_days=7)
        old = datetime.now(UTC) - timedelta(days=10)
        for qid, when in (("q_" + "1" * 32, old), ("q_" + "2" * 32, None)):
            row = {
                "query_id": qid,
                "tenant": "t",
                "op": "search",
                "query": "bees",
                "query_type": "keyword",
                "hits": [{"unit_id": "u1", "path": "a.md", "source": "s", "rank": 1}],
                "timings_ms": {"total": 1.0},
            }
            if when is not None:
                row["created_at"] = when
            qlog.record(row)
        qlog.add_feedback(
            tenant="t", key_id=None, query_id="q_" + "1" * 32, unit_id="u1", judgement="relevant"
        )
        qlog.add_feedback(
            tenant="t",
            key_id=None,
            query_id="q_" + "2" * 32,
            unit_id="u1",
            judgement="not_relevant",
        )
        assert len(list(qlog.feedback_rows())) == 2
        assert qlog.purge() == {"query_log": 1, "feedback": 1}
        assert [r["query_id"] for r in qlog.feedback_rows()] == ["q_" + "2" * 32]
        assert qlog.purge(days=0, now=datetime.now(UTC) + timedelta(seconds=1)) == {
            "query_log": 1,
            "feedback": 1,
        }
        # audit: key create / revoke, append-only, untouched by the purge
        _, info = store.create("t", scopes=["read"], actor="key_admin1")
        store.revoke(info.key_id, actor="key_admin1")
        store.revoke(info.key_id)  # idempotent: no second row
        rows = [r for r in qlog.audit_rows() if r["target"] == info.key_id]
        assert [r["action"] for r in rows] == ["key.create", "key.revoke"]
        assert rows[0]["actor"] == "key_admin1" and rows[0]["tenant"] == "t"
        assert rows[0]["details"]["scopes"] == ["read"]
    finally:
        store.close()


def test_query_log_purge_and_audit_sqlite(tmp_path):
    _query_log_roundtrip(_settings(tmp_path / "d"))


def test_query_log_purge_and_audit_postgresql(pg_url, tmp_path):  # noqa: F811
    url, _, _ = pg_url
    _query_log_roundtrip(_settings(tmp_path / "d", serving_db_url=url))


def test_querylog_purge_cli(tmp_path, monkeypatch, capsys):
    from rag_pipeline.cli import main

    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "d"))
    assert main(["keys", "create", "--tenant", "t"]) == 0
    assert main(["querylog", "purge", "--days", "3"]) == 0
    assert "purged 0 queries" in capsys.readouterr().out
    assert main(["querylog", "audit"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["action"] == "key.create"


def test_feedback_to_labels_unit():
    from evals.label_builder import LabelBuilder

    rows = [
        {
            "op": "search",
            "query": "Bees  wax",
            "query_type": "keyword",
            "path": "a.md",
            "judgement": "relevant",
        },
        {
            "op": "search",
            "query": "bees wax",
            "query_type": "keyword",
            "path": "b.md",
            "judgement": "not_relevant",
        },
        {
            "op": "search",
            "query": "only no",
            "query_type": "semantic",
            "path": "c.md",
            "judgement": "not_relevant",
        },
        {"op": "similar", "query": "ab" * 32, "path": "d.md", "judgement": "relevant"},
    ]
    gold = LabelBuilder().add_feedback(rows).gold_queries()
    assert len(gold) == 1
    assert gold[0].relevant == {"a.md": 2, "b.md": 0} and gold[0].query_type == "keyword"
    assert gold[0].query_id.startswith("fb-")


@pytest.mark.slow
def test_feedback_to_labels_to_eval_run_on_the_demo_corpus(demo_env, tmp_path, monkeypatch, capsys):
    """Users judge hits over HTTP; `eval labels --from-feedback` makes a gold set of them that
    `eval run` (and the smoke gate's loader) accepts: the loop from users to the promotion
    gate."""
    from evals.goldsets import load_gold_jsonl
    from rag_pipeline.cli import main
    from rag_pipeline.goldset_schema import parse_gold_jsonl
    from rag_pipeline.settings import packaged_file

    settings, _ = demo_env
    monkeypatch.setenv("RAG_MODELS_FILE", str(packaged_file("models.yaml")))
    corpus_dir = settings.sources[0]
    demo_gold = tmp_path / "gold.jsonl"
    work = tmp_path / "work"
    assert (
        main(
            [
                "eval",
                "run",
                "--dataset",
                str(corpus_dir),
                "--gold",
                str(demo_gold),
                "--workdir",
                str(work),
                "--out",
                str(tmp_path / "base.json"),
            ]
        )
        == 0
    )
    gold = parse_gold_jsonl(demo_gold.read_text(), "demo")

    serve_settings = _settings(work / "data")
    store = KeyStore.from_settings(serve_settings)
    key = store.create(serve_settings.tenant_id, scopes=["read"])[0]
    store.close()
    judged = 0
    with api_client(serve_settings) as client:
        for q in gold:
            body = client.post(
                "/v1/search", json={"query": q.query, "k": 5}, headers=auth(key)
            ).json()
            for hit in body["hits"][:3]:
                good = q.relevant.get(hit["path"], 0) > 0
                resp = client.post(
                    "/v1/feedback",
                    headers=auth(key),
                    json={
                        "query_id": body["query_id"],
                        "unit_id": hit["unit_id"],
                        "judgement": "relevant" if good else "not_relevant",
                    },
                )
                assert resp.status_code == 201, resp.text
                judged += good
    assert judged > 0

    capsys.readouterr()
    labels = tmp_path / "feedback_gold.jsonl"
    monkeypatch.setenv("RAG_DATA_DIR", str(work / "data"))
    assert main(["eval", "labels", "--from-feedback", "--out", str(labels)]) == 0
    made = parse_gold_jsonl(labels.read_text(), str(labels))
    assert made and all(q.query_type for q in made)
    assert all(g in (0, 2) for q in made for g in q.relevant.values())
    assert len(load_gold_jsonl(labels).queries) == len(made)  # what the smoke gate loads
    out = tmp_path / "fb.json"
    assert (
        main(
            [
                "eval",
                "run",
                "--dataset",
                str(corpus_dir),
                "--gold",
                str(labels),
                "--workdir",
                str(work),
                "--no-index",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["n_queries"] == len(made) and res["metrics"]["error_rate"] == 0.0
    assert res["metrics"]["ndcg@10"] > 0.5


def test_tracing_is_off_without_endpoint_or_extra():
    import importlib.util

    from serving.tracing import stage_spans, tracer_for

    assert tracer_for(None) is None and tracer_for("") is None
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        assert tracer_for("http://127.0.0.1:4318") is None  # no extra: no tracing, a warning
    pytest.importorskip("opentelemetry.trace")
    from opentelemetry.trace import INVALID_SPAN

    spans = []

    class FakeSpan:
        def __init__(self, name, start):
            self.name, self.start, self.end_time = name, start, None

        def set_attribute(self, *_):
            pass

        def end(self, end_time=None):
            self.end_time = end_time

    class FakeTracer:
        def start_span(self, name, context=None, start_time=None):
            spans.append(FakeSpan(name, start_time))
            return spans[-1]

    stage_spans(
        FakeTracer(),
        INVALID_SPAN,
        "search",
        {
            "mv_encode": 5.0,
            "fts": 2.0,
            "mv": 3.0,
            "axes_wall": 8.0,
            "fuse": 0.5,
            "fetch": 1.0,
            "build": 0.5,
            "total": 10.0,
        },
        end_ns=10_000_000_000,
    )
    by = {s.name: s for s in spans}
    assert set(by) == {
        "search.mv_encode",
        "search.fts",
        "search.mv",
        "search.fuse",
        "search.fetch",
        "search.build",
    }
    assert by["search.mv_encode"].start == 10_000_000_000 - 10_000_000
    assert by["search.fts"].start == by["search.mv_encode"].end_time
    assert by["search.fuse"].start <= by["search.fetch"].start <= by["search.build"].start
