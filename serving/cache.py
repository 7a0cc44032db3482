"""Caches of the HTTP API: query embeddings and search results.

* the **embedding cache**: (query model key, query text) -> the query vector, around the
  searcher's MV / VV query encoders (``Searcher(query_cache=...)``);
* the **result cache**: (snapshot id, tenant, sorted ACL groups, the normalized request) -> the
  response's JSON bytes. The snapshot id is part of the key, so a newly served snapshot never
  answers with an older one's results; the key is stored under the snapshot that actually
  answered (the response's ``snapshot_id``), so a swap between lookup and search cannot file a
  result under the wrong snapshot.

Backends (the ``Cache`` protocol, bytes in and out): ``InProcessTTLCache`` (thread-safe LRU
with a TTL, per worker process; the default) and ``RedisCache`` (``RAG_REDIS_URL``: shared by
every replica). Redis is used with short socket timeouts and a circuit breaker
(``RedisHealth``): on an error the cache marks Redis down for ``RAG_REDIS_RETRY_S`` seconds and
acts as a miss (lookups) or does nothing (stores) meanwhile. A Redis outage therefore costs the
cache, never a query; ``/health`` shows it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from rag_pipeline.settings import Settings

log = logging.getLogger("serving.cache")

# Socket timeouts of every Redis call the API makes: a slow Redis must not make slow queries.
REDIS_TIMEOUT_S = 0.25
KEY_PREFIX = "rag:"


class Cache(Protocol):
    backend: str

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def healthy(self) -> bool: ...


class InProcessTTLCache:
    """A thread-safe LRU of at most ``max_entries``, each entry expiring ``ttl_s`` after it was
    stored. Values are kept as given (bytes here, but any object works)."""

    backend = "in-process"

    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max(1, int(max_entries))
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any | None:
        now = time.monotonic()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: Any, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        expires = time.monotonic() + ttl_s
        with self._lock:
            self._data[key] = (expires, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def healthy(self) -> bool:
        return True

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class RedisHealth:
    """Circuit breaker shared by everything that talks to one Redis: after an error, Redis is
    skipped for ``retry_s`` seconds (then the next call tries it again)."""

    def __init__(self, retry_s: float = 5.0):
        self.retry_s = retry_s
        self._down_until = 0.0
        self.last_error: str | None = None
        self.errors = 0

    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        first = self.usable()
        self._down_until = time.monotonic() + self.retry_s
        self.last_error = type(exc).__name__
        self.errors += 1
        if first:
            log.warning(
                "Redis unavailable (%s); serving without it for %.0f s",
                type(exc).__name__,
                self.retry_s,
            )

    def ok(self) -> None:
        if self.last_error is not None and self._down_until:
            log.info("Redis answers again")
        self._down_until = 0.0
        self.last_error = None


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry_on_timeout=False,
        health_check_interval=0,
    )


class RedisCache:
    """The same protocol on Redis (``SET key value PX ttl``); every error is a miss."""

    backend = "redis"

    def __init__(self, client: Any, health: RedisHealth, namespace: str = "c"):
        self.client = client
        self.health = health
        self.namespace = namespace

    def _key(self, key: str) -> str:
        return f"{KEY_PREFIX}{self.namespace}:{key}"

    def get(self, key: str) -> bytes | None:
        if not self.health.usable():
            return None
        try:
            value = self.client.get(self._key(key))
        except Exception as exc:
            self.health.failed(exc)
            return None
        self.health.ok()
        return value

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0 or not self.health.usable():
            return
        try:
            self.client.set(self._key(key), value, px=max(1, int(ttl_s * 1000)))
        except Exception as exc:
            self.health.failed(exc)
            return
        self.health.ok()

    def healthy(self) -> bool:
        return self.health.usable()

    def ping(self) -> bool:
        """Ask Redis now (``/health``): True when it answers; records the outcome."""
        if not self.health.usable():
            return False
        try:
            self.client.ping()
        except Exception as exc:
            self.health.failed(exc)
            return False
        self.health.ok()
        return True


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------------------------
# Query embeddings


def vector_bytes(vec: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(vec), allow_pickle=False)
    return buf.getvalue()


def vector_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class VectorCache:
    """(model key, text) -> query vector, over any ``Cache``. ``encode(model_key, text, fn)``
    returns the cached vector or ``fn(text)``, stored."""

    def __init__(self, cache: Cache, ttl_s: float):
        self.cache = cache
        self.ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    def encode(self, model_key: str, text: str, fn: Any) -> Any:
        if self.ttl_s <= 0:
            return fn(text)
        key = "v:" + digest(f"{model_key}\x00{text}")
        data = self.cache.get(key)
        if data is not None:
            try:
                self.hits += 1
                return vector_from_bytes(data)
            except (ValueError, OSError):
                log.warning("unreadable cached query vector; encoding again")
        self.misses += 1
        vec = fn(text)
        self.cache.set(key, vector_bytes(vec), self.ttl_s)
        return vec

    def encode_many(self, model_key: str, texts: list[str], fn: Any) -> list[Any]:
        """``encode`` for many texts: the cached ones read back, the others encoded in one
        batch (``fn(list of texts)`` -> rows) and stored (an answer's evidence sentences)."""
        if self.ttl_s <= 0:
            return list(fn(texts)) if texts else []
        keys = ["v:" + digest(f"{model_key}\x00{t}") for t in texts]
        out: list[Any] = [None] * len(texts)
        for i, key in enumerate(keys):
            data = self.cache.get(key)
            if data is not None:
                try:
                    out[i] = vector_from_bytes(data)
                except (ValueError, OSError):
                    out[i] = None
        missing = [i for i, v in enumerate(out) if v is None]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            for i, vec in zip(missing, fn([texts[i] for i in missing]), strict=True):
                out[i] = vec
                self.cache.set(keys[i], vector_bytes(vec), self.ttl_s)
        return out


def no_vector_cache() -> VectorCache:
    """A pass-through (every query encoded): for benchmarks that time the encoders."""
    return VectorCache(InProcessTTLCache(1), 0.0)


_default_vectors: VectorCache | None = None
_default_lock = threading.Lock()


def default_vector_cache() -> VectorCache:
    """The process-wide in-process embedding cache searchers use when given none."""
    global _default_vectors
    with _default_lock:
        if _default_vectors is None:
            _default_vectors = VectorCache(InProcessTTLCache(10_000), 86_400.0)
        return _default_vectors


# --------------------------------------------------------------------------------------------
# Search results


def result_key(
    snapshot_id: str,
    tenant: str,
    groups: Any,
    request: Any,
    *,
    route: str = "search",
    dev: bool = False,
) -> str:
    """The result cache key: snapshot, tenant, sorted groups and the validated request as JSON
    with a stable key order (pydantic dumps fields in declaration order)."""
    parts = [
        route,
        snapshot_id,
        tenant,
        ",".join(sorted(groups)),
        "dev" if dev else "key",
        request.model_dump_json(),
    ]
    return "r:" + digest("\x00".join(parts))


class Caches:
    """What the app uses: the result cache, the embedding cache, and their health."""

    def __init__(
        self,
        results: Cache,
        vectors: VectorCache,
        result_ttl_s: float,
        redis: RedisCache | None = None,
    ):
        self.results = results
        self.vectors = vectors
        self.result_ttl_s = result_ttl_s
        self.redis = redis
        self.hits = 0
        self.misses = 0

    @property
    def backend(self) -> str:
        return self.results.backend

    @classmethod
    def from_settings(cls, settings: Settings, *, health: RedisHealth | None = None) -> Caches:
        if settings.redis_url:
            health = health or RedisHealth(settings.redis_retry_s)
            client = redis_client(settings.redis_url)
            results: Cache = RedisCache(client, health, "r")
            vectors = VectorCache(RedisCache(client, health, "v"), settings.embed_cache_ttl_s)
            return cls(results, vectors, settings.cache_ttl_s, redis=results)  # type: ignore[arg-type]
        return cls(
            InProcessTTLCache(settings.cache_max_entries),
            VectorCache(InProcessTTLCache(settings.cache_max_entries), settings.embed_cache_ttl_s),
            settings.cache_ttl_s,
        )

    def get_result(self, key: str) -> bytes | None:
        if self.result_ttl_s <= 0:
            return None
        value = self.results.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put_result(self, key: str, body: bytes) -> None:
        self.results.set(key, body, self.result_ttl_s)

    @property
    def blocking(self) -> bool:
        """True when a lookup does network I/O (Redis): run it off the event loop."""
        return self.redis is not None

    def health(self, ping: bool = False) -> dict[str, Any]:
        """For ``/health``: backend, whether it works, hit counts (this process)."""
        ok = self.results.healthy()
        if ping and self.redis is not None:
            ok = self.redis.ping()
        out: dict[str, Any] = {
            "backend": self.backend,
            "healthy": ok,
            "result_ttl_s": self.result_ttl_s,
            "result_hits": self.hits,
            "result_misses": self.misses,
            "embedding_hits": self.vectors.hits,
            "embedding_misses": self.vectors.misses,
        }
        if self.redis is not None and not ok:
            out["error"] = self.redis.health.last_error
            out["degraded_to"] = "no cache"
        return out


# --------------------------------------------------------------------------------------------
# The search routes' use of it


class CachedSearch:
    """Search answers through the result cache, with single flight: ``answer(route, request,
    caller, compute)`` returns (JSON bytes, ``X-Cache`` value: ``hit``, ``miss`` or
    ``shared``, the latter for a request that waited for an identical one in flight).

    ``compute()`` is the uncached search: an awaitable of (JSON bytes, or None for a 404 that
    is not cached; the id of the snapshot that answered)."""

    def __init__(self, caches: Caches, live: Any):
        from serving.singleflight import SingleFlight

        self.caches = caches
        self.live = live
        self.flights: SingleFlight[tuple[Any, str]] = SingleFlight()

    async def _get(self, key: str) -> bytes | None:
        if self.caches.blocking and self.caches.results.healthy():
            import anyio

            return await anyio.to_thread.run_sync(self.caches.get_result, key)
        return self.caches.get_result(key)

    async def _put(self, key: str, body: bytes) -> None:
        if self.caches.blocking and self.caches.results.healthy():
            import anyio

            await anyio.to_thread.run_sync(self.caches.put_result, key, body)
        else:
            self.caches.put_result(key, body)

    async def answer(
        self, route: str, request: Any, caller: Any, compute: Any
    ) -> tuple[bytes, str]:
        principal, dev = caller.principal, caller.key_id is None
        snapshot = self.live.current_snapshot_id()
        if snapshot is None:
            body, _ = await compute()
            return body, "miss"

        def key_for(snapshot_id: str) -> str:
            return result_key(
                snapshot_id, principal.tenant, principal.groups, request, route=route, dev=dev
            )

        key = key_for(snapshot)
        if self.caches.result_ttl_s > 0:
            body = await self._get(key)
            if body is not None:
                return body, "hit"

        async def work() -> tuple[Any, str]:
            body, answered_by = await compute()
            if self.caches.result_ttl_s > 0 and body is not None:  # None: not found, not kept
                # filed under the snapshot that answered: a swap in between cannot mislabel it
                await self._put(key if answered_by == snapshot else key_for(answered_by), body)
            return body, answered_by

        (body, _), shared = await self.flights.do(key, work)
        return body, "shared" if shared else "miss"
