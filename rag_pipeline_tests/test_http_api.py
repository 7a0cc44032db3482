"""The HTTP API in process (FastAPI's TestClient): routes, API keys, errors, limits, probes.
Over real HTTP (uvicorn): test_http_server.py."""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest

from rag_pipeline.settings import Settings
from rag_pipeline_tests.http_support import api_client, auth
from rag_pipeline_tests.test_serving_snapshot import build_snapshot
from serving.keys import KeyStore, key_hash
from serving.searcher import Searcher


@pytest.fixture(scope="module")
def settings(tmp_path_factory, mv_model_dir) -> Settings:
    root = tmp_path_factory.mktemp("api") / "data"
    build_snapshot(root, mv_model_dir)
    return Settings(data_dir=root, key_cache_s=0.5, snapshot_poll_s=0.2)


@pytest.fixture(scope="module")
def keys(settings) -> dict[str, str]:
    store = KeyStore.from_settings(settings)
    past = datetime.now(UTC) - timedelta(minutes=1)
    out = {
        "read": store.create("default", scopes=["read"], name="reader")[0],
        "acme": store.create("acme", scopes=["read"])[0],
        "write_only": store.create("default", scopes=["write"])[0],
        "expired": store.create("default", scopes=["read"], expires_at=past)[0],
    }
    revoked, info = store.create("default", scopes=["read"])
    store.revoke(info.key_id)
    out["revoked"] = revoked
    store.close()
    return out


@pytest.fixture(scope="module")
def client(settings, keys):
    with api_client(settings) as c:
        yield c


def _ids(resp) -> list[str]:
    return [h["unit_id"] for h in resp.json()["hits"]]


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["code"] == code and body["message"]
    assert body["request_id"] == resp.headers["x-request-id"]
    return body


# --- routes ------------------------------------------------------------------------------------


def test_search_get_and_post(client, keys):
    h = auth(keys["read"])
    get = client.get("/v1/search", params={"q": "quokka", "k": 3}, headers=h)
    assert get.status_code == 200 and _ids(get)[0] == "d-quokka"
    post = client.post("/v1/search", json={"query": "quokka", "k": 3}, headers=h)
    assert post.status_code == 200 and _ids(post) == _ids(get)
    both = client.get(
        "/v1/search",
        params={"q": "photo", "kind": "image", "folder": "photos", "axes": "fts,mv", "k": 20},
        headers=h,
    )
    assert set(_ids(both)) == {"i-beach", "i-alps", "i-cat"}
    post = client.post(
        "/v1/search",
        headers=h,
        json={
            "query": "photo",
            "k": 20,
            "axes": ["fts", "mv"],
            "filters": {"kind": "image", "folder_prefix": "photos"},
        },
    )
    assert set(_ids(post)) == {"i-beach", "i-alps", "i-cat"}
    x = client.get("/v1/search?q=quokka", headers={"X-API-Key": keys["read"]})
    assert x.status_code == 200


def test_the_tenant_comes_from_the_key(client, keys):
    acme = client.get("/v1/search?q=quokka&k=10", headers=auth(keys["acme"]))
    assert set(_ids(acme)) <= {"a-quokka", "a-beach"} and _ids(acme)[0] == "a-quokka"
    default = client.get("/v1/search?q=quokka&k=10", headers=auth(keys["read"]))
    assert "a-quokka" not in _ids(default)
    # a request cannot name another tenant
    _error(
        client.get("/v1/search?q=quokka&tenant=acme", headers=auth(keys["read"])),
        422,
        "invalid_request",
    )
    _error(
        client.post(
            "/v1/search", json={"query": "quokka", "tenant": "acme"}, headers=auth(keys["read"])
        ),
        422,
        "invalid_request",
    )
    assert client.get("/v1/units/a-quokka", headers=auth(keys["read"])).status_code == 404
    assert client.get("/v1/units/a-quokka", headers=auth(keys["acme"])).status_code == 200


def test_units_similar_and_thumbnails(client, keys):
    h = auth(keys["read"])
    unit = client.get("/v1/units/d-quokka", headers=h)
    assert unit.status_code == 200
    hit = unit.json()
    assert hit["unit_id"] == "d-quokka" and hit["explanation"]["runs"]["doc_text"]["run_id"]
    _error(client.get("/v1/units/nope", headers=h), 404, "not_found")
    _error(client.get("/v1/units/a%20b", headers=h), 422, "invalid_request")
    asset = hit["asset_id"]
    sim = client.get(f"/v1/similar?asset_id={asset}&k=3", headers=h)
    assert sim.status_code == 200 and asset not in {x["asset_id"] for x in sim.json()["hits"]}
    post = client.post("/v1/similar", json={"asset_id": asset, "k": 3}, headers=h)
    assert _ids(post) == _ids(sim)
    _error(client.get(f"/v1/similar?asset_id={'0' * 64}", headers=h), 404, "not_found")
    _error(
        client.get(f"/v1/similar?asset_id={asset}", headers=auth(keys["acme"])), 404, "not_found"
    )
    _error(client.get("/v1/similar?asset_id=xyz", headers=h), 422, "invalid_request")
    _error(client.get(f"/v1/thumbnails/{asset}", headers=h), 404, "not_found")
    _error(client.get("/v1/thumbnails/../../etc", headers=h), 404, "not_found")


def test_unavailable_axes(client, keys, monkeypatch):
    h = auth(keys["read"])
    # an axis this snapshot was built without: the request's problem
    body = _error(client.get("/v1/search?q=dog&axes=vv", headers=h), 422, "axis_unavailable")
    assert "vv" in body["message"]
    # an axis the snapshot has that this server cannot serve now (its query model is gone):
    # the server's problem, 503, and /health says degraded
    with client.app.state.live.acquire() as searcher:
        monkeypatch.setitem(searcher.unavailable, "mv", "query model /models/x not found")
    resp = client.get("/v1/search?q=dog&axes=mv", headers=h)
    body = _error(resp, 503, "axis_unavailable")
    assert "/models" not in body["message"] and int(resp.headers["retry-after"]) > 0
    # (a query not answered before: a cached answer would keep the axes it was searched with)
    assert client.get("/v1/search?q=wallaby", headers=h).json()["axes_used"] == ["fts"]
    health = client.get("/health", headers=h)
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert "/models" not in health.text


def test_unicode_queries(client, keys):
    h = auth(keys["read"])
    for q in [
        "ü ñ 日本",
        "Quokka 🦘 sur l'île",
        "кенгуру",
        "مرحبا",
        "e\u0301te\u0301",
        "\u200b",
        "a\tb\nc",
        "'; DROP TABLE x; --",
        '"quokka*" OR (',
    ]:
        resp = client.get("/v1/search", params={"q": q, "k": 3}, headers=h)
        assert resp.status_code in (200, 422), (q, resp.text)
        if q.strip("\u200b"):
            assert resp.status_code == 200, (q, resp.text)
        post = client.post("/v1/search", json={"query": q, "k": 3}, headers=h)
        assert post.status_code == resp.status_code
    assert _ids(client.get("/v1/search", params={"q": "quokka 🦘"}, headers=h))[0] == "d-quokka"
    _error(client.get("/v1/search", params={"q": "dog\x00"}, headers=h), 422, "invalid_request")
    _error(
        client.post(
            "/v1/search",
            content=b'{"query": "dog \\ud800"}',
            headers={**h, "Content-Type": "application/json"},
        ),
        422,
        "invalid_request",
    )


# --- auth --------------------------------------------------------------------------------------


def test_auth_failures(client, keys):
    url = "/v1/search?q=quokka"
    for headers, message in [
        ({}, "required"),
        (auth("rag_" + "x" * 43), "invalid"),
        (auth("not-a-key"), "invalid"),
        (auth(keys["revoked"]), "revoked"),
        (auth(keys["expired"]), "expired"),
        ({"Authorization": f"Basic {keys['read']}"}, "required"),
        ({**auth(keys["read"]), "X-API-Key": keys["acme"]}, "two"),
    ]:
        resp = client.get(url, headers=headers)
        body = _error(resp, 401, "unauthorized")
        assert message in body["message"]
        assert resp.headers["www-authenticate"].startswith("Bearer")
    body = _error(client.get(url, headers=auth(keys["write_only"])), 403, "forbidden")
    assert "read" in body["message"]
    for path in (
        "/v1/units/d-quokka",
        f"/v1/thumbnails/{'0' * 64}",
        "/health",
        f"/v1/similar?asset_id={'0' * 64}",
    ):
        _error(client.get(path), 401, "unauthorized")
    assert client.get("/health/live").status_code == 200  # probes need no key
    assert client.get("/openapi.json").status_code == 200


def test_revocation_takes_effect_within_the_cache_bound(client, settings):
    admin = KeyStore.from_settings(settings)  # as `rag-pipeline keys revoke` would, elsewhere
    key, info = admin.create("default", scopes=["read"])
    assert client.get("/v1/search?q=quokka", headers=auth(key)).status_code == 200
    admin.revoke(info.key_id)
    t0 = time.monotonic()
    while client.get("/v1/search?q=quokka", headers=auth(key)).status_code == 200:
        assert time.monotonic() - t0 < settings.key_cache_s + 1.0
        time.sleep(0.05)
    assert time.monotonic() - t0 <= settings.key_cache_s + 1.0
    assert client.get("/v1/search?q=quokka", headers=auth(key)).status_code == 401
    admin.close()


def test_last_used_is_written_at_most_once_a_minute(client, settings):
    admin = KeyStore.from_settings(settings)
    key, info = admin.create("default", scopes=["read"])
    for _ in range(5):
        assert client.get("/v1/search?q=quokka", headers=auth(key)).status_code == 200
    deadline = time.monotonic() + 5
    while (
        used := next(k for k in admin.list() if k.key_id == info.key_id).last_used_at
    ) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert used is not None
    time.sleep(1.1)
    client.get("/v1/search?q=quokka", headers=auth(key))
    time.sleep(0.3)
    again = next(k for k in admin.list() if k.key_id == info.key_id).last_used_at
    assert again == used  # not rewritten within the minute
    admin.close()


def test_keys_never_reach_the_log(client, keys, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("read", "revoked", "expired", "write_only"):
        client.get("/v1/search?q=quokka", headers=auth(keys[name]))
        client.get("/v1/search?q=quokka", headers={"X-API-Key": keys[name]})
    client.get("/v1/search?q=quokka", headers=auth("rag_" + "y" * 43))
    text = caplog.text
    assert "serving.access" in {r.name for r in caplog.records}
    for key in (*keys.values(), "rag_" + "y" * 43):
        assert key not in text and key_hash(key) not in text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("serving"))
    assert "GET /v1/search 200" in ours and "quokka" not in ours  # no query text by default


def test_key_store_cli(settings, capsys):
    from rag_pipeline import cli

    env = {"RAG_DATA_DIR": str(settings.data_dir)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert (
            cli.main(
                [
                    "keys",
                    "create",
                    "--tenant",
                    "acme",
                    "--groups",
                    "staff,hr",
                    "--scopes",
                    "read,write",
                    "--name",
                    "cli test",
                    "--expires",
                    "30d",
                ]
            )
            == 0
        )
        out = capsys.readouterr()
        key = out.out.strip()
        assert key.startswith("rag_") and len(key) >= 4 + 43 and "shown once" in out.err
        assert cli.main(["keys", "list", "--json"]) == 0
        import json

        listed = json.loads(capsys.readouterr().out)
        mine = next(k for k in listed if k["name"] == "cli test")
        assert mine["groups"] == ["hr", "staff"] and mine["scopes"] == ["read", "write"]
        assert mine["state"] == "active" and mine["expires_at"]
        raw = json.dumps(listed)
        assert key not in raw and key_hash(key) not in raw
        assert cli.main(["keys", "list"]) == 0
        table = capsys.readouterr().out
        assert mine["key_id"] in table and key not in table and key_hash(key) not in table
        assert cli.main(["keys", "revoke", mine["key_id"]]) == 0
        assert "revoked" in capsys.readouterr().out
        assert cli.main(["keys", "revoke", "key_nope"]) == 2
        assert cli.main(["keys", "create", "--tenant", "acme", "--scopes", "root"]) == 2
        assert cli.main(["keys", "create", "--tenant", "a b"]) == 2


# --- errors and limits -------------------------------------------------------------------------


def test_an_internal_error_is_json_without_details_and_logged_with_its_id(
    client, keys, monkeypatch, caplog
):
    def broken(self, request, principal, **kw):
        raise RuntimeError("secret detail in /srv/private/file.db")

    monkeypatch.setattr(Searcher, "search", broken)
    caplog.set_level(logging.ERROR)
    # a query never asked before (a cached answer would not search)
    resp = client.get(
        "/v1/search?q=probe500", headers={**auth(keys["read"]), "X-Request-ID": "trace-42"}
    )
    body = _error(resp, 500, "internal")
    assert body["request_id"] == "trace-42"
    for leak in ("secret", "/srv", "RuntimeError", "Traceback", "file.db"):
        assert leak not in resp.text
    record = next(r for r in caplog.records if "trace-42" in r.getMessage())
    assert record.exc_info is not None and "secret detail" in caplog.text
    assert "Traceback" in caplog.text


def test_request_ids_and_security_headers(client, keys):
    h = auth(keys["read"])
    resp = client.get("/v1/search?q=quokka", headers={**h, "X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    resp = client.get("/v1/search?q=quokka", headers={**h, "X-Request-ID": "bad id\x7f"})
    assert resp.headers["x-request-id"] != "bad id\x7f" and len(resp.headers["x-request-id"]) == 32
    for name, value in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ]:
        assert resp.headers[name] == value
    assert resp.headers["content-security-policy"].startswith("default-src 'none'")
    assert (
        "access-control-allow-origin"
        not in client.get(
            "/v1/search?q=quokka", headers={**h, "Origin": "https://evil.example"}
        ).headers
    )
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn.jsdelivr.net" in docs.headers["content-security-policy"]


def test_cors_allowlist(settings, keys):
    with api_client(settings.model_copy(update={"cors_origins": "https://app.example"})) as c:
        ok = c.get(
            "/v1/search?q=quokka", headers={**auth(keys["read"]), "Origin": "https://app.example"}
        )
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get(
            "/v1/search?q=quokka", headers={**auth(keys["read"]), "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        pre = c.options(
            "/v1/search",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code == 200


def test_size_and_value_limits(client, keys):
    h = auth(keys["read"])
    big = {"query": "quokka " + "x" * 70_000}
    _error(client.post("/v1/search", json=big, headers=h), 413, "payload_too_large")

    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    _error(
        client.post(
            "/v1/search", content=chunks(), headers={**h, "Content-Type": "application/json"}
        ),
        413,
        "payload_too_large",
    )
    for params in (
        {"q": "x" * 2001},
        {"q": "dog", "k": 101},
        {"q": "dog", "candidates": 1001},
        {"q": "dog", "tags": ",".join(f"t{i}" for i in range(40))},
    ):
        _error(client.get("/v1/search", params=params, headers=h), 422, "invalid_request")
    for body in (
        {"query": "x" * 2001},
        {"query": "dog", "k": 0},
        {"query": "dog", "k": 101},
        {"query": "dog", "candidates": 1001},
        {"query": 5},
        {},
    ):
        _error(client.post("/v1/search", json=body, headers=h), 422, "invalid_request")
    _error(
        client.post(
            "/v1/search", content=b"{not json", headers={**h, "Content-Type": "application/json"}
        ),
        422,
        "invalid_request",
    )


def test_request_timeout_is_504(settings, keys, monkeypatch):
    real = Searcher.search

    def slow(self, request, principal, **kw):
        time.sleep(1.0)
        return real(self, request, principal, **kw)

    monkeypatch.setattr(Searcher, "search", slow)
    with api_client(settings.model_copy(update={"request_timeout_s": 0.3})) as c:
        t0 = time.monotonic()
        body = _error(c.get("/v1/search?q=quokka", headers=auth(keys["read"])), 504, "timeout")
        assert time.monotonic() - t0 < 0.9 and "0.3" in body["message"]


def test_full_concurrency_limit_is_503_with_retry_after(settings, keys, monkeypatch):
    real = Searcher.search

    def slow(self, request, principal, **kw):
        time.sleep(0.8)
        return real(self, request, principal, **kw)

    monkeypatch.setattr(Searcher, "search", slow)
    limited = settings.model_copy(update={"max_concurrent_requests": 1, "max_queued_requests": 1})
    with api_client(limited) as c, concurrent.futures.ThreadPoolExecutor(4) as pool:
        # four different queries: identical ones would share one search (single flight)
        futures = [
            pool.submit(c.get, f"/v1/search?q=quokka{i}", headers=auth(keys["read"]))
            for i in range(4)
        ]
        results = [f.result() for f in futures]
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 503, 503], codes  # one running, one waiting, two refused
    for r in results:
        if r.status_code == 503:
            _error(r, 503, "overloaded")
            assert int(r.headers["retry-after"]) >= 1


def test_parallel_requests_match_sequential_ones(client, keys):
    h = auth(keys["read"])
    queries = [
        "quokka",
        "budget review",
        "dog on the beach",
        "how can I make a loaf myself?",
        "turbine",
        "ü ñ 日本",
        "secrets",
        "autoscaling",
    ] * 4
    expected = {q: _ids(client.get("/v1/search", params={"q": q}, headers=h)) for q in queries}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(
            pool.map(lambda q: (q, client.get("/v1/search", params={"q": q}, headers=h)), queries)
        )
    for q, resp in got:
        assert resp.status_code == 200 and _ids(resp) == expected[q]


# --- probes and health -------------------------------------------------------------------------


def test_health_needs_a_key_and_shows_axes_models_snapshot(client, keys):
    resp = client.get("/health", headers=auth(keys["read"]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok" and body["snapshot"]["snapshot_id"] == "snap-0001"
    assert body["axes"]["mv"]["available"] and body["axes"]["mv"]["model"]["weights_checksum"]
    assert "tenants" not in body["snapshot"]  # an operator's (admin) business
    assert body["key_store"]["ok"] and body["limits"]["max_concurrent_requests"] >= 1


def test_ready_follows_the_snapshot_and_the_key_store(tmp_path, mv_model_dir):
    settings = Settings(data_dir=tmp_path / "data", snapshot_poll_s=0.2)
    KeyStore.from_settings(settings).close()
    with api_client(settings) as c:
        assert c.get("/health/live").status_code == 200
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        assert not ready.json()["checks"]["snapshot"]["ok"]
        assert ready.json()["checks"]["key_store"]["ok"]
        build_snapshot(settings.data_dir, mv_model_dir)  # published: the server follows it
        deadline = time.monotonic() + 60
        while (ready := c.get("/health/ready")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        assert ready.json()["checks"]["models"]["ok"]
        # the key store goes away
        db = settings.serving_db_path
        shutil.move(db, db.with_suffix(".moved"))
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and not ready.json()["checks"]["key_store"]["ok"]
        assert str(tmp_path) not in ready.text
        shutil.move(db.with_suffix(".moved"), db)
        assert c.get("/health/ready").status_code == 200


def test_openapi_describes_every_route(client):
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/search",
        "/v1/similar",
        "/v1/thumbnails/{asset_id}",
        "/v1/units/{unit_id}",
        "/v1/ask",
        "/health/live",
        "/health/ready",
        "/health",
    } <= set(spec["paths"])
    assert set(spec["paths"]["/v1/search"]) == {"get", "post"}
    assert set(spec["paths"]["/v1/similar"]) == {"get", "post"}
    search = spec["paths"]["/v1/search"]["post"]
    assert search["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "SearchResponse"
    )
    assert {"401", "403", "422", "503", "504"} <= set(search["responses"])
    ask = spec["paths"]["/v1/ask"]
    assert set(ask) == {"post"}
    answers = ask["post"]["responses"]["200"]["content"]
    assert answers["application/json"]["schema"]["$ref"].endswith("AskResponse")
    assert "text/event-stream" in answers
    asked = spec["components"]["schemas"]["AskRequest"]["properties"]
    assert {"question", "k", "filters", "mode", "stream"} == set(asked)
    assert {"bearer", "apiKey"} <= set(spec["components"]["securitySchemes"])
    assert client.get("/docs").status_code == 200
