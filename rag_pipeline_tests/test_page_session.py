"""The search page's server side in process (FastAPI's TestClient): the page and its static
files under a strict CSP, sign-in into an HttpOnly cookie, the cookie as a credential, CSRF on
cookie-authenticated changes, sign-out, dev mode. The page in a browser: test_search_page.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from rag_pipeline.settings import Settings
from rag_pipeline_tests.http_support import api_client
from rag_pipeline_tests.test_serving_snapshot import build_snapshot
from serving.auth import SESSION_COOKIE
from serving.keys import KeyStore

CSRF = {"X-Requested-With": "rag-page"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory, mv_model_dir) -> Settings:
    root = tmp_path_factory.mktemp("page") / "data"
    build_snapshot(root, mv_model_dir)
    return Settings(data_dir=root, key_cache_s=0.0)


@pytest.fixture(scope="module")
def keys(settings) -> dict[str, str]:
    store = KeyStore.from_settings(settings)
    past = datetime.now(UTC) - timedelta(minutes=1)
    out = {
        "read": store.create("default", scopes=["read"], name="page")[0],
        "write_only": store.create("default", scopes=["write"])[0],
        "expired": store.create("default", scopes=["read"], expires_at=past)[0],
    }
    store.close()
    return out


@pytest.fixture
def client(settings, keys):
    with api_client(settings) as c:
        yield c


def test_page_and_static_files_are_served_under_a_strict_csp(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp  # no inline code, no other host
    assert "<script>" not in page.text and 'type="module" src="/static/app.js"' in page.text
    for name, kind in [("app.js", "javascript"), ("page.css", "css"), ("render.js", "javascript")]:
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name
        assert r.headers["content-security-policy"] == csp
    # text from documents becomes DOM text nodes: no script assigns markup
    for name in ("app.js", "render.js", "api.js", "export.js"):
        code = client.get(f"/static/{name}").text
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", code)
    assert client.get("/static/../app.py").status_code == 404
    # the API keeps its own, stricter policy
    assert client.get("/health/live").headers["content-security-policy"] == (
        "default-src 'none'; frame-ancestors 'none'"
    )


def test_sign_in_sets_an_httponly_strict_cookie_that_authenticates(client, keys):
    assert client.get("/session").json() == {
        "signed_in": False,
        "message": None,
        "tenant": None,
        "key_id": None,
        "scopes": [],
        "dev": False,
        "query_types": [],
        "axes": [],
    }
    assert client.get("/v1/search", params={"q": "quokka"}).status_code == 401

    # login CSRF: the custom header is required
    r = client.post("/session", json={"key": keys["read"]})
    assert r.status_code == 403 and SESSION_COOKIE not in r.cookies

    r = client.post("/session", json={"key": keys["read"]}, headers=CSRF)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["signed_in"] and info["tenant"] == "default" and not info["dev"]
    assert "keyword" in info["query_types"] and "fts" in info["axes"]
    cookie = r.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; https gets Secure

    # the cookie is a credential for reads...
    assert client.get("/session").json()["key_id"] == info["key_id"]
    r = client.get("/v1/search", params={"q": "quokka", "k": 3})
    assert r.status_code == 200 and r.json()["hits"][0]["unit_id"] == "d-quokka"
    query_id = r.json()["query_id"]
    # ...and for changes only with the CSRF header (a cross-site form cannot add it)
    body = {"query_id": query_id, "unit_id": "d-quokka", "judgement": "relevant"}
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 403 and "X-Requested-With" in r.json()["message"]
    assert client.post("/v1/search", json={"query": "quokka"}).status_code == 403
    assert client.post("/v1/feedback", json=body, headers=CSRF).status_code == 201
    assert client.post("/v1/search", json={"query": "quokka"}, headers=CSRF).status_code == 200

    # sign out clears it
    assert client.delete("/session").status_code == 403
    r = client.delete("/session", headers=CSRF)
    assert r.status_code == 204 and 'rag_session=""' in r.headers["set-cookie"]
    assert client.get("/session").json()["signed_in"] is False
    assert client.get("/v1/search", params={"q": "quokka"}).status_code == 401


def test_wrong_expired_and_scopeless_keys_do_not_sign_in(client, keys):
    for key, status in [
        ("rag_" + "x" * 43, 401),
        ("not a key", 401),
        (keys["expired"], 401),
        (keys["write_only"], 403),
    ]:
        r = client.post("/session", json={"key": key}, headers=CSRF)
        assert r.status_code == status, (key, r.text)
        assert SESSION_COOKIE not in r.cookies and key not in r.text
    assert "expired" in client.post("/session", json={"key": keys["expired"]}, headers=CSRF).text
    assert client.post("/session", json={"key": ""}, headers=CSRF).status_code == 422
    assert (
        client.post("/session", json={"key": "k", "tenant": "x"}, headers=CSRF).status_code == 422
    )


def test_a_session_whose_key_expired_is_signed_out_with_the_reason(client, keys):
    client.cookies.set(SESSION_COOKIE, keys["expired"])
    r = client.get("/session")
    info = r.json()
    assert info["signed_in"] is False and "expired" in info["message"]
    assert 'rag_session=""' in r.headers["set-cookie"]  # dropped
    client.cookies.set(SESSION_COOKIE, keys["expired"])
    r = client.get("/v1/search", params={"q": "quokka"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_a_header_key_wins_over_the_cookie(client, keys):
    client.cookies.set(SESSION_COOKIE, "rag_" + "x" * 43)
    r = client.post(
        "/v1/search",
        json={"query": "quokka", "k": 1},
        headers={"Authorization": f"Bearer {keys['read']}"},
    )
    assert r.status_code == 200  # an API client is not subject to the page's CSRF rule


def test_dev_mode_page_is_signed_in_by_itself(settings):
    with api_client(settings, dev=True) as c:
        info = c.get("/session").json()
        assert info["signed_in"] and info["dev"] and info["tenant"] == settings.tenant_id
        assert info["key_id"] is None


def test_tags_lists_the_callers_tags(client, keys):
    r = client.get("/v1/tags", headers={"X-API-Key": keys["read"]})
    assert r.status_code == 200 and set(r.json()) == {"snapshot_id", "tags"}
    assert client.get("/v1/tags").status_code == 401
    assert client.get("/v1/tags?limit=0", headers={"X-API-Key": keys["read"]}).status_code == 422


def test_unit_names_its_snapshot(client, keys):
    r = client.get("/v1/units/d-quokka", headers={"X-API-Key": keys["read"]})
    assert r.status_code == 200
    assert (
        r.json()["explanation"]["snapshot_id"]
        == client.get(
            "/v1/search", params={"q": "quokka"}, headers={"X-API-Key": keys["read"]}
        ).json()["snapshot_id"]
    )


def test_demo_ends_with_the_page_address_and_a_working_key(tmp_path):
    from rag_pipeline.cli import demo_page_instructions
    from serving.keys import KEY_PATTERN

    settings = Settings(data_dir=tmp_path / "data")
    text = demo_page_instructions(settings)
    assert "http://127.0.0.1:8080/" in text and "rag-pipeline serve --port 8080" in text
    (key,) = re.findall(r"^  key:  (\S+)$", text, re.MULTILINE)
    assert KEY_PATTERN.match(key)
    store = KeyStore.from_settings(settings)
    try:
        info = store.lookup(key)
    finally:
        store.close()
    assert info is not None and info.tenant == settings.tenant_id and "read" in info.scopes
    assert info.state(datetime.now(UTC)) == "active"


def test_taken_dates_are_a_prefilter_on_taken_at():
    from serving.filters import build_filter
    from serving.models import SearchFilters
    from serving.principal import Principal

    where = build_filter(
        Principal(tenant="default"),
        SearchFilters(
            taken_after=datetime(2024, 1, 1, tzinfo=UTC),
            taken_before=datetime(2024, 2, 1, 12, tzinfo=UTC),
        ),
        sole_tenant="default",
        all_readable=True,
    )
    assert where == (
        "(taken_at >= TIMESTAMP '2024-01-01T00:00:00.000000Z') AND "
        "(taken_at < TIMESTAMP '2024-02-01T12:00:00.000000Z')"
    )
