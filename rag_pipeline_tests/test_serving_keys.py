"""The API key store on SQLite (the default) and on PostgreSQL (``RAG_SERVING_DB_URL``)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from rag_pipeline.settings import Settings
from rag_pipeline_tests.conftest import require
from serving.keys import KEY_PATTERN, KeyStore, KeyStoreError, key_hash, parse_expiry

PG = dict(
    host=os.environ.get("DAGSTER_PG_HOST", "127.0.0.1"),
    port=int(os.environ.get("DAGSTER_PG_PORT", "5432")),
    user=os.environ.get("DAGSTER_PG_USER", "postgres"),
    password=os.environ.get("DAGSTER_PG_PASSWORD", ""),
)


def _pg_admin():
    import psycopg2

    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except Exception as exc:
        require(False, f"PostgreSQL not reachable: {exc}")
    conn.autocommit = True
    return conn


def _drop(admin, db: str) -> None:
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [db],
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{db}"')


@pytest.fixture
def pg_url():
    admin = _pg_admin()
    db = f"rag_keys_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql+psycopg2://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}/{db}"
    try:
        yield url, admin, db
    finally:
        _drop(admin, db)
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request, tmp_path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", key_cache_s=0.3)
    if request.param == "postgresql":
        url, _, _ = request.getfixturevalue("pg_url")
        settings = settings.model_copy(update={"serving_db_url": url})
    return settings


def test_keys_create_lookup_list_revoke(store_settings):
    store = KeyStore.from_settings(store_settings)
    key, info = store.create("acme", groups=["staff", "hr"], scopes=["read", "write"], name="ci")
    assert KEY_PATTERN.match(key) and len(key) >= len("rag_") + 43
    assert key != store.create("acme")[0]  # random
    found = store.lookup(key)
    assert found is not None and found.key_id == info.key_id and found.state() == "active"
    p = found.principal()
    assert p.tenant == "acme" and p.groups == {"staff", "hr"} and p.key_id == info.key_id
    assert store.lookup("rag_" + "a" * 43) is None
    # only the hash is stored
    import sqlalchemy as sa

    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM api_keys"))]
    assert all(key not in str(r) for r in rows)
    assert any(r["key_hash"] == key_hash(key) for r in rows)
    listed = {k.key_id: k.public() for k in store.list()}
    assert listed[info.key_id]["scopes"] == ["read", "write"]
    assert "key_hash" not in listed[info.key_id]
    assert store.active_count() == 2
    # revocation: visible at once here (the cache is cleared), within cache_s elsewhere
    other = KeyStore.from_settings(store_settings)
    assert other.lookup(key).state() == "active"
    assert store.revoke(info.key_id) and store.revoke(info.key_id)  # idempotent
    assert store.lookup(key).state() == "revoked"
    assert other.lookup(key).state() == "active"  # cached
    time.sleep(store_settings.key_cache_s + 0.05)
    assert other.lookup(key).state() == "revoked"
    assert not store.revoke("key_nope")
    # expiry and last use
    past = datetime.now(UTC) - timedelta(seconds=1)
    old, old_info = store.create("acme", expires_at=past)
    assert store.lookup(old).state() == "expired"
    assert store.needs_touch(old_info.key_id) and not store.needs_touch(old_info.key_id)
    store.touch(old_info.key_id)
    assert next(k for k in store.list() if k.key_id == old_info.key_id).last_used_at
    with pytest.raises(ValueError):
        store.create("acme", scopes=["root"])
    store.ping()
    other.close()
    store.close()


def test_parse_expiry():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2027-02-03") == datetime(2027, 2, 3, tzinfo=UTC)
    assert parse_expiry(None) is None and parse_expiry("never") is None
    with pytest.raises(ValueError):
        parse_expiry("soon")


def test_sqlite_store_that_vanished_fails_instead_of_starting_empty(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    store = KeyStore.from_settings(settings)
    settings.serving_db_path.unlink()
    with pytest.raises(KeyStoreError):
        store.ping()
    assert not settings.serving_db_path.exists()
    assert oct(KeyStore.from_settings(settings)._sqlite_path.stat().st_mode)[-3:] == "600"


def test_api_on_postgresql_and_ready_when_the_store_goes_away(pg_url, tmp_path):
    from rag_pipeline_tests.http_support import api_client, auth
    from rag_pipeline_tests.test_serving_snapshot import build_snapshot

    url, admin, db = pg_url
    d = Settings().mv_model_dir
    settings = Settings(data_dir=tmp_path / "data", serving_db_url=url, key_cache_s=0.3)
    build_snapshot(settings.data_dir, d)
    store = KeyStore.from_settings(settings)
    key, _ = store.create("default")
    store.close()
    with api_client(settings) as client:
        assert client.get("/health/ready").status_code == 200
        resp = client.get("/v1/search?q=quokka", headers=auth(key))
        assert resp.status_code == 200 and resp.json()["hits"][0]["unit_id"] == "d-quokka"
        assert not settings.serving_db_path.exists()  # no SQLite file beside PostgreSQL
        _drop(admin, db)  # the key store goes away
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and not ready.json()["checks"]["key_store"]["ok"]
        assert "password" not in ready.text and db not in ready.text
        time.sleep(0.35)  # past the cache: a lookup needs the store
        resp = client.get("/v1/search?q=quokka", headers=auth(key))
        assert resp.status_code == 503 and resp.json()["code"] == "key_store_unavailable"
