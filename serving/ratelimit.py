"""Rate limits and quotas of the HTTP API.

* a **token bucket per API key**: ``rate_per_min`` tokens a minute, at most ``burst`` saved up;
  a key's own values (``rag-pipeline keys create --rate N --burst M``, columns of the key) win
  over ``RAG_RATE_PER_MIN`` / ``RAG_RATE_BURST``; a rate of 0 is no limit;
* a **daily request quota per tenant** (UTC days): ``RAG_TENANT_QUOTAS`` (JSON map tenant ->
  requests) over the default ``RAG_TENANT_DAILY_QUOTA``; 0 is no quota.

Over a limit: 429 ``rate_limited`` / ``quota_exceeded`` with ``Retry-After``; every limited
answer carries ``X-RateLimit-Limit`` (the key's rate per minute) and ``X-RateLimit-Remaining``
(whole tokens left), and ``X-Quota-Limit`` / ``X-Quota-Remaining`` when a quota applies.

In-process (per worker process) by default; with ``RAG_REDIS_URL`` one Lua script per request
does the bucket and the quota atomically in Redis (on Redis' clock), so N replicas enforce one
limit. When Redis fails, limits fall back to the in-process ones (per replica) until it answers
again (``RAG_REDIS_RETRY_S``): an outage never fails a request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_pipeline.settings import Settings
from serving.auth import Caller, require
from serving.cache import KEY_PREFIX, RedisHealth, redis_client
from serving.http_errors import ApiError

log = logging.getLogger("serving.ratelimit")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # the rate per minute (0: none)
    remaining: int  # whole tokens left (-1: no rate limit)
    retry_after_s: float = 0.0
    reason: str = ""  # "rate" | "quota" when refused
    quota: int = 0  # the tenant's daily quota (0: none)
    quota_remaining: int = -1

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.limit:
            h["X-RateLimit-Limit"] = str(self.limit)
            h["X-RateLimit-Remaining"] = str(max(0, self.remaining))
        if self.quota:
            h["X-Quota-Limit"] = str(self.quota)
            h["X-Quota-Remaining"] = str(max(0, self.quota_remaining))
        if not self.allowed:
            h["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return h


def _day_end(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


class InProcessLimiter:
    """Token buckets and daily counters in this process."""

    backend = "in-process"

    def __init__(self, clock: Any = time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._days: dict[str, tuple[str, int]] = {}  # tenant -> (day, count)

    def check(self, key_id: str, tenant: str, rate: int, burst: int, quota: int) -> Decision:
        now = self.clock()
        with self._lock:
            tokens = float(burst)
            if rate:
                tokens, at = self._buckets.get(key_id, (float(burst), now))
                tokens = min(float(burst), tokens + (now - at) * rate / 60.0)
                if tokens < 1.0:
                    self._buckets[key_id] = (tokens, now)
                    return Decision(False, rate, 0, (1.0 - tokens) * 60.0 / rate, "rate", quota, -1)
            used = 0
            if quota:
                day = _day(now)
                d, used = self._days.get(tenant, (day, 0))
                if d != day:
                    used = 0
                if used >= quota:
                    return Decision(
                        False,
                        rate,
                        int(tokens) if rate else -1,
                        _day_end(now) - now,
                        "quota",
                        quota,
                        0,
                    )
                used += 1
                self._days[tenant] = (day, used)
            if rate:
                tokens -= 1.0
                self._buckets[key_id] = (tokens, now)
                if len(self._buckets) > 100_000:  # keys that went idle refill anyway
                    self._buckets.clear()
        return Decision(
            True, rate, int(tokens) if rate else -1, 0.0, "", quota, quota - used if quota else -1
        )


# KEYS: bucket, quota counter. ARGV: rate per minute, burst, quota, quota expiry (epoch s).
# Redis' own clock (TIME), so replicas' clocks need not agree. Lua numbers come back as
# integers: fractions travel as strings.
_LUA = """
local rate = tonumber(ARGV[1]); local burst = tonumber(ARGV[2]); local quota = tonumber(ARGV[3])
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = burst
if rate > 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
  tokens = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 60)
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 60000 / rate) + 1000)
    return {0, 'rate', 0, tostring((1 - tokens) * 60 / rate), -1}
  end
end
local used = 0
if quota > 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= quota then
    return {0, 'quota', math.floor(tokens), tostring(tonumber(ARGV[4]) - now), 0}
  end
  used = redis.call('INCR', KEYS[2])
  redis.call('EXPIREAT', KEYS[2], ARGV[4])
end
if rate > 0 then
  tokens = tokens - 1
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 60000 / rate) + 1000)
end
return {1, '', math.floor(tokens), '0', quota - used}
"""


class RedisLimiter:
    """The same limits in Redis, atomic per request (one script call); in-process when Redis
    fails."""

    backend = "redis"

    def __init__(self, client: Any, health: RedisHealth, fallback: InProcessLimiter):
        self.client = client
        self.health = health
        self.fallback = fallback
        self._script = client.register_script(_LUA)

    def check(self, key_id: str, tenant: str, rate: int, burst: int, quota: int) -> Decision:
        if not self.health.usable():
            return self.fallback.check(key_id, tenant, rate, burst, quota)
        now = time.time()
        # A day's counter lives a day past its end, so clocks a little apart share it.
        expire_at = int(_day_end(now)) + 86_400
        keys = [f"{KEY_PREFIX}rl:{key_id}", f"{KEY_PREFIX}q:{tenant}:{_day(now)}"]
        try:
            ok, reason, remaining, retry, quota_left = self._script(
                keys=keys, args=[rate, burst, quota, expire_at]
            )
        except Exception as exc:
            self.health.failed(exc)
            return self.fallback.check(key_id, tenant, rate, burst, quota)
        self.health.ok()
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        return Decision(
            bool(ok),
            rate,
            int(remaining) if rate else -1,
            float(retry),
            reason,
            quota,
            int(quota_left) if quota else -1,
        )


class RateLimits:
    """The limits of one app: settings' defaults, keys' own rates, tenants' quotas."""

    def __init__(
        self, settings: Settings, *, health: RedisHealth | None = None, client: Any = None
    ):
        self.default_rate = settings.rate_per_min
        self.default_burst = settings.rate_burst
        self.default_quota = settings.tenant_daily_quota
        self.quotas = dict(settings.tenant_quotas)
        self.local = InProcessLimiter()
        self.limiter: InProcessLimiter | RedisLimiter = self.local
        if settings.redis_url:
            health = health or RedisHealth(settings.redis_retry_s)
            self.limiter = RedisLimiter(
                client or redis_client(settings.redis_url), health, self.local
            )

    @property
    def backend(self) -> str:
        return self.limiter.backend

    def for_key(self, rate: int | None, burst: int | None) -> tuple[int, int]:
        r = self.default_rate if rate is None else rate
        b = (
            burst
            if burst is not None
            else (self.default_burst if rate is None and self.default_burst else 0)
        )
        return r, (b or r) if r else 0

    def quota(self, tenant: str) -> int:
        return int(self.quotas.get(tenant, self.default_quota))

    def check(self, caller: Caller, rate: int | None, burst: int | None) -> Decision | None:
        r, b = self.for_key(rate, burst)
        q = self.quota(caller.principal.tenant)
        if not r and not q:
            return None
        return self.limiter.check(caller.key_id or "dev", caller.principal.tenant, r, b, q)

    @property
    def blocking(self) -> bool:
        return isinstance(self.limiter, RedisLimiter) and self.limiter.health.usable()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "rate_per_min": self.default_rate,
            "rate_burst": self.default_burst or self.default_rate,
            "tenant_daily_quota": self.default_quota,
            "tenant_quotas": len(self.quotas),
        }


STATE_HEADERS = "ratelimit_headers"


def limited(scope: str):
    """A dependency like ``require(scope)`` that also charges the caller's key and tenant: 429
    with ``Retry-After`` when over a limit."""
    inner = require(scope)

    async def dependency(request: Request, caller: Caller = Depends(inner)) -> Caller:  # noqa: B008
        limits: RateLimits | None = getattr(request.app.state, "rate_limits", None)
        if limits is None:
            return caller
        rate = burst = None
        keys = getattr(request.app.state, "keys", None)
        if caller.key_id is not None and keys is not None:
            rate, burst = keys.limits_of(caller.key_id)
        if limits.blocking:
            decision = await anyio.to_thread.run_sync(limits.check, caller, rate, burst)
        else:
            decision = limits.check(caller, rate, burst)
        if decision is None:
            return caller
        headers = decision.headers()
        if not decision.allowed:
            if decision.reason == "quota":
                raise ApiError(
                    429,
                    "quota_exceeded",
                    f"the tenant's daily quota of {decision.quota} requests is used up",
                    headers=headers,
                )
            raise ApiError(
                429,
                "rate_limited",
                f"over this API key's limit of {decision.limit} requests a minute",
                headers=headers,
            )
        request.scope.setdefault("state", {})[STATE_HEADERS] = headers
        return caller

    dependency.__name__ = f"limited_{scope}"
    return dependency


class RateLimitHeaders:
    """Pure ASGI: adds the limit headers a request's check left in its state to the response
    (routes return their own ``Response`` objects, which a dependency cannot reach)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get(STATE_HEADERS)
                if extra:
                    raw = list(message.get("headers", []))
                    names = {k.lower() for k, _ in raw}
                    raw.extend(
                        (k.lower().encode(), v.encode())
                        for k, v in extra.items()
                        if k.lower().encode() not in names
                    )
                    message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with)
