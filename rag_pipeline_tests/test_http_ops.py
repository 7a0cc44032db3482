"""Caches, single flight, rate limits and quotas of the HTTP API (issue #11), against a real
Redis: a private ``redis-server`` on its own port (so a test can stop it), or the machine's on
127.0.0.1:6379 (started by ``.ci/run``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from rag_pipeline.settings import Settings
from rag_pipeline.snapshot.schema import read_manifest, write_atomic
from rag_pipeline_tests.conftest import require
from rag_pipeline_tests.http_support import Server, api_client, auth, make_key, request
from rag_pipeline_tests.test_serving_snapshot import build_snapshot, write_manifest
from serving.cache import (
    CachedSearch,
    Caches,
    InProcessTTLCache,
    RedisCache,
    RedisHealth,
    VectorCache,
    redis_client,
    result_key,
)
from serving.models import SearchRequest
from serving.principal import Principal
from serving.ratelimit import InProcessLimiter, RedisLimiter
from serving.searcher import Searcher
from serving.singleflight import SingleFlight


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """``redis-server`` on a free port, no persistence; ``stop()`` really stops it."""

    def __init__(self, tmp: Path):
        exe = shutil.which("redis-server")
        require(exe is not None, "redis-server is not installed")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_client(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path):
    r = PrivateRedis(tmp_path)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def shared_redis_url() -> str:
    url = "redis://127.0.0.1:6379/0"
    try:
        redis_client(url).ping()
    except Exception as exc:
        require(False, f"no Redis on 127.0.0.1:6379 (.ci/run starts one): {exc}")
    return url


# --- units ---------------------------------------------------------------------------------


def test_in_process_cache_is_an_lru_with_ttl():
    c = InProcessTTLCache(max_entries=2)
    c.set("a", b"1", 60)
    c.set("b", b"2", 60)
    assert c.get("a") == b"1"  # a is now the most recent
    c.set("c", b"3", 60)
    assert c.get("b") is None and c.get("a") == b"1" and c.get("c") == b"3"
    c.set("short", b"x", 0.05)
    time.sleep(0.1)
    assert c.get("short") is None
    c.set("never", b"x", 0)
    assert c.get("never") is None


def test_vector_cache_round_trips_and_keys_by_model():
    calls = []

    def enc(text):
        calls.append(text)
        return np.arange(4, dtype=np.float32) + len(calls)

    vc = VectorCache(InProcessTTLCache(), 60)
    a = vc.encode("mv:m1", "hello", enc)
    b = vc.encode("mv:m1", "hello", enc)
    assert calls == ["hello"] and b.dtype == np.float32 and np.array_equal(a, b)
    vc.encode("mv:m2", "hello", enc)
    assert calls == ["hello", "hello"]


def test_result_key_covers_snapshot_tenant_groups_and_request():
    req = SearchRequest(query="quokka", k=3)
    key = result_key("s1", "default", {"b", "a"}, req)
    assert key == result_key("s1", "default", ["a", "b"], SearchRequest(query=" quokka ", k=3))
    assert key != result_key("s2", "default", {"a", "b"}, req)
    assert key != result_key("s1", "acme", {"a", "b"}, req)
    assert key != result_key("s1", "default", {"a"}, req)
    assert key != result_key("s1", "default", {"a", "b"}, SearchRequest(query="quokka", k=4))


def test_single_flight_runs_identical_calls_once():
    calls = 0

    async def main():
        flights: SingleFlight[int] = SingleFlight()

        async def work():
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return 42

        out = await asyncio.gather(*(flights.do("k", work) for _ in range(20)))
        assert [r for r, _ in out] == [42] * 20
        assert sum(1 for _, shared in out if not shared) == 1
        assert len(flights) == 0

        async def boom():
            raise ValueError("x")

        res = await asyncio.gather(
            *(flights.do("e", boom) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, ValueError) for r in res)

    asyncio.run(main())
    assert calls == 1


class FakeCaller:
    def __init__(self, tenant="default", groups=("all",), key_id="key_x"):
        self.principal = Principal(tenant=tenant, groups=frozenset(groups))
        self.key_id = key_id


class FakeLive:
    def __init__(self, sid):
        self.sid = sid

    def current_snapshot_id(self):
        return self.sid


def test_cached_search_never_serves_an_older_snapshot():
    live = FakeLive("s1")
    cs = CachedSearch(Caches(InProcessTTLCache(), VectorCache(InProcessTTLCache(), 60), 60), live)
    req = SearchRequest(query="q")
    calls = []

    async def compute():
        calls.append(live.sid)
        return f'{{"snapshot_id":"{live.sid}"}}'.encode(), live.sid

    async def main():
        assert (await cs.answer("search", req, FakeCaller(), compute))[1] == "miss"
        body, how = await cs.answer("search", req, FakeCaller(), compute)
        assert how == "hit" and b"s1" in body
        # another tenant, other groups: not this entry
        assert (await cs.answer("search", req, FakeCaller("acme"), compute))[1] == "miss"
        assert (await cs.answer("search", req, FakeCaller(groups=("x",)), compute))[1] == "miss"
        live.sid = "s2"
        body, how = await cs.answer("search", req, FakeCaller(), compute)
        assert how == "miss" and b"s2" in body

    asyncio.run(main())
    assert calls == ["s1", "s1", "s1", "s2"]


def test_in_process_token_bucket_and_daily_quota():
    now = [1_000_000.0]
    lim = InProcessLimiter(clock=lambda: now[0])
    got = [lim.check("k", "t", 60, 3, 0) for _ in range(4)]
    assert [d.allowed for d in got] == [True, True, True, False]
    assert got[0].remaining == 2 and got[3].reason == "rate"
    assert got[3].headers()["Retry-After"] == "1" and got[3].headers()["X-RateLimit-Limit"] == "60"
    now[0] += 1.0  # one token back (60 a minute)
    assert lim.check("k", "t", 60, 3, 0).allowed
    assert not lim.check("k", "t", 60, 3, 0).allowed
    # quota: per tenant, all keys together, reset at the UTC day's end
    q = [lim.check(f"key{i}", "acme", 0, 0, 2) for i in range(3)]
    assert [d.allowed for d in q] == [True, True, False] and q[2].reason == "quota"
    assert int(q[2].headers()["Retry-After"]) > 0
    now[0] += 86_400
    assert lim.check("key9", "acme", 0, 0, 2).allowed


def test_redis_token_bucket_is_atomic_and_shared(shared_redis_url):
    health = RedisHealth(5)
    a = RedisLimiter(redis_client(shared_redis_url), health, InProcessLimiter())
    b = RedisLimiter(redis_client(shared_redis_url), RedisHealth(5), InProcessLimiter())
    key, tenant = f"key_{uuid.uuid4().hex}", f"t{uuid.uuid4().hex[:8]}"
    # two "replicas", 16 threads: exactly the burst gets through
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        out = list(pool.map(lambda i: (a if i % 2 else b).check(key, tenant, 6, 10, 0), range(40)))
    assert sum(d.allowed for d in out) == 10
    refused = [d for d in out if not d.allowed]
    assert all(d.reason == "rate" and 0 < d.retry_after_s <= 10 for d in refused)
    q = [a.check(f"k{i}", tenant, 0, 0, 3) for i in range(4)]
    assert [d.allowed for d in q] == [True, True, True, False]
    assert q[0].quota_remaining == 2 and q[3].reason == "quota"


def test_redis_outage_is_a_miss_and_limits_fall_back(private_redis):
    health = RedisHealth(retry_s=0.5)
    client = redis_client(private_redis.url)
    cache = RedisCache(client, health)
    cache.set("k", b"v", 60)
    assert cache.get("k") == b"v" and cache.healthy()
    lim = RedisLimiter(client, health, InProcessLimiter())
    assert lim.check("key", "t", 60, 2, 0).allowed
    private_redis.stop()
    t0 = time.perf_counter()
    assert cache.get("k") is None  # an error: a miss, quickly
    assert not cache.healthy() and not cache.ping()
    assert cache.get("k") is None and time.perf_counter() - t0 < 2
    d = lim.check("key", "t", 60, 2, 0)  # in-process now
    assert d.allowed


# --- the API -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory, mv_model_dir) -> Path:
    root = tmp_path_factory.mktemp("ops") / "data"
    build_snapshot(root, mv_model_dir)
    return root


@pytest.fixture
def data_dir(tmp_path, template) -> Path:
    d = tmp_path / "data"
    shutil.copytree(template, d)
    return d


def _count_searches(monkeypatch, delay: float = 0.0) -> list[str]:
    calls: list[str] = []
    real = Searcher.search

    def counted(self, request, principal, **kw):
        query = request.query if not isinstance(request, str) else request
        if not query.startswith("warm"):  # the warm-up search of a newly opened snapshot
            calls.append(query)
        if delay:
            time.sleep(delay)
        return real(self, request, principal, **kw)

    monkeypatch.setattr(Searcher, "search", counted)
    return calls


@pytest.mark.parametrize("backend", ["in-process", "redis"])
def test_result_cache_hit_miss_and_new_snapshot(backend, data_dir, monkeypatch, request):
    extra = {}
    if backend == "redis":
        extra["redis_url"] = request.getfixturevalue("private_redis").url
    settings = Settings(data_dir=data_dir, snapshot_poll_s=0.05, key_cache_s=0.5, **extra)
    key = make_key(settings)
    calls = _count_searches(monkeypatch)
    with api_client(settings) as client:
        h = auth(key)
        first = client.get("/v1/search", params={"q": "quokka", "k": 3}, headers=h)
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        second = client.get("/v1/search", params={"q": "quokka", "k": 3}, headers=h)
        assert second.headers["x-cache"] == "hit" and second.json() == first.json()
        # the same request as a JSON body: the same entry
        post = client.post("/v1/search", json={"query": "quokka", "k": 3}, headers=h)
        assert post.headers["x-cache"] == "hit"
        assert (
            client.get("/v1/search", params={"q": "quokka", "k": 4}, headers=h).headers["x-cache"]
            == "miss"
        )
        assert calls == ["quokka", "quokka"]
        health = client.get("/health", headers=h).json()
        assert health["cache"]["backend"] == backend and health["cache"]["healthy"]

        # a new snapshot is promoted: the next request searches it, never the cached answer
        m = read_manifest(settings.snapshots_dir, "snap-0001")
        write_manifest(settings.snapshots_dir, m.model_copy(update={"snapshot_id": "snap-0002"}))
        write_atomic(settings.snapshots_dir / "PROMOTED", "snap-0002")
        deadline = time.monotonic() + 30
        while client.app.state.live.current_snapshot_id() != "snap-0002":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        third = client.get("/v1/search", params={"q": "quokka", "k": 3}, headers=h)
        assert third.headers["x-cache"] == "miss"
        assert third.json()["snapshot_id"] == "snap-0002"
        assert (
            client.get("/v1/search", params={"q": "quokka", "k": 3}, headers=h).headers["x-cache"]
            == "hit"
        )
        assert calls == ["quokka", "quokka", "quokka"]


def test_single_flight_over_http(data_dir, monkeypatch):
    settings = Settings(data_dir=data_dir, max_concurrent_requests=8)
    key = make_key(settings)
    calls = _count_searches(monkeypatch, delay=0.5)
    n = 12
    with api_client(settings) as client:
        barrier = threading.Barrier(n)

        def one(_):
            barrier.wait()
            r = client.get("/v1/search", params={"q": "koala habitat", "k": 5}, headers=auth(key))
            return r.status_code, r.headers["x-cache"], r.json()["hits"]

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            out = list(pool.map(one, range(n)))
    assert calls == ["koala habitat"]
    assert all(s == 200 for s, _, _ in out) and len({str(h) for _, _, h in out}) == 1
    assert sorted(c for _, c, _ in out).count("miss") == 1


def test_redis_stopped_mid_run_queries_still_answer(data_dir, private_redis):
    settings = Settings(
        data_dir=data_dir, redis_url=private_redis.url, redis_retry_s=0.5, rate_per_min=100_000
    )
    key = make_key(settings)
    with api_client(settings) as client:
        h = auth(key)
        assert client.get("/v1/search", params={"q": "quokka"}, headers=h).status_code == 200
        assert (
            client.get("/v1/search", params={"q": "quokka"}, headers=h).headers["x-cache"] == "hit"
        )
        private_redis.stop()  # a real stop, mid-run
        for q in ("quokka", "koala", "photo", "quokka"):
            t0 = time.perf_counter()
            r = client.get("/v1/search", params={"q": q}, headers=h)
            assert r.status_code == 200 and r.headers["x-cache"] == "miss", r.text
            assert r.json()["hits"] is not None
            assert time.perf_counter() - t0 < 5
        health = client.get("/health", headers=h)
        body = health.json()
        assert health.status_code == 503 and body["status"] == "degraded"
        assert body["cache"] == {
            **body["cache"],
            "backend": "redis",
            "healthy": False,
            "degraded_to": "no cache",
        }
        assert client.get("/health/ready").status_code == 200  # still serving


def test_rate_limit_429_shared_by_two_servers(data_dir, tmp_path, private_redis):
    settings = Settings(data_dir=data_dir)
    rate = 6  # a minute: one token back every 10 s, so none comes back during the test
    key = make_key(settings, rate_per_min=rate, burst=rate)
    other = make_key(settings)  # the defaults: no limit
    env = {"RAG_REDIS_URL": private_redis.url}
    servers = [Server(data_dir, tmp_path / f"s{i}.log", env=env) for i in range(2)]
    try:
        for s in servers:
            s.wait_live()
        for s in servers:
            deadline = time.monotonic() + 120
            while request(f"{s.base}/health/ready")[0] != 200:
                assert time.monotonic() < deadline, s.log()
                time.sleep(0.2)
        statuses = []
        for i in range(rate + 2):
            status, headers, body = request(
                f"{servers[i % 2].base}/v1/search?q=quokka", headers=auth(key)
            )
            headers = {k.lower(): v for k, v in headers.items()}
            statuses.append(status)
            assert headers["x-ratelimit-limit"] == str(rate), headers
            if status == 200:
                assert int(headers["x-ratelimit-remaining"]) == rate - 1 - i
            else:
                assert status == 429 and body["code"] == "rate_limited"
                assert headers["x-ratelimit-remaining"] == "0"
                assert 1 <= int(headers["retry-after"]) <= 10
        assert statuses == [200] * rate + [429, 429]
        # another key is not limited by this one's bucket
        assert request(f"{servers[0].base}/v1/search?q=quokka", headers=auth(other))[0] == 200
    finally:
        for s in servers:
            s.stop()


def test_tenant_daily_quota_over_http(data_dir, monkeypatch):
    monkeypatch.setenv("RAG_TENANT_QUOTAS", '{"default": 3}')
    monkeypatch.setenv("RAG_TENANT_DAILY_QUOTA", "1000")
    settings = Settings.from_env(data_dir=data_dir)
    assert settings.tenant_quotas == {"default": 3}
    keys = [make_key(settings), make_key(settings)]
    acme = make_key(settings, "acme")
    with api_client(settings) as client:
        got = [
            client.get("/v1/search", params={"q": "quokka"}, headers=auth(keys[i % 2]))
            for i in range(4)
        ]
        assert [r.status_code for r in got] == [200, 200, 200, 429]  # both keys: one tenant
        assert got[0].headers["x-quota-limit"] == "3"
        assert got[2].headers["x-quota-remaining"] == "0"
        assert got[3].json()["code"] == "quota_exceeded"
        assert int(got[3].headers["retry-after"]) >= 1
        # another tenant has the default quota
        r = client.get("/v1/search", params={"q": "quokka"}, headers=auth(acme))
        assert r.status_code == 200 and r.headers["x-quota-limit"] == "1000"
        health = client.get("/health", headers=auth(acme)).json()
        assert health["limits"]["rate_limits"]["backend"] == "in-process"


def test_keys_create_with_rate_and_burst(data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_DATA_DIR=str(data_dir))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rag_pipeline.cli",
            "keys",
            "create",
            "--tenant",
            "acme",
            "--rate",
            "120",
            "--burst",
            "10",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    from serving.keys import KeyStore

    store = KeyStore.from_settings(Settings(data_dir=data_dir))
    try:
        info = store.lookup(out.stdout.strip())
        assert info is not None and (info.rate_per_min, info.burst) == (120, 10)
        assert store.limits_of(info.key_id) == (120, 10)
    finally:
        store.close()


def test_similar_is_cached_and_not_found_is_not(data_dir):
    settings = Settings(data_dir=data_dir)
    key = make_key(settings)
    with api_client(settings) as client:
        h = auth(key)
        asset = client.get("/v1/search", params={"q": "quokka", "k": 1}, headers=h).json()["hits"][
            0
        ]["asset_id"]
        first = client.get("/v1/similar", params={"asset_id": asset, "k": 3}, headers=h)
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        again = client.post("/v1/similar", json={"asset_id": asset, "k": 3}, headers=h)
        assert again.headers["x-cache"] == "hit" and again.json() == first.json()
        for _ in range(2):
            r = client.get("/v1/similar", params={"asset_id": "0" * 64}, headers=h)
            assert r.status_code == 404
