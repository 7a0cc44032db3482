"""Prometheus metrics of the HTTP API: one registry per app, served on ``GET /metrics`` (admin
scope) in the text exposition format.

* ``rag_http_requests_total{route,method,status,outcome}`` and
  ``rag_http_request_duration_seconds{route,outcome}``: every request, by route template (never
  the raw path: ids would explode the label set) and outcome (``ok``, ``client_error``,
  ``server_error``, ``rate_limited``, ``quota_exceeded``, ``overloaded``, ``timeout``);
* ``rag_http_requests_in_flight``;
* ``rag_search_stage_seconds{op,stage}``: the searcher's per-stage timings (``<axis>_encode``,
  each axis, ``axes_wall``, ``fuse``, ``fetch``, ``build``, ``total``);
* ``rag_cache_requests_total{cache,outcome}``: hits and misses by cache (``cache_event``);
* ``rag_rate_limited_total{reason}``, ``rag_quota_exceeded_total``: 429 answers, told apart
  by their error code (``quota_exceeded``: a quota; any other: a rate limit, by code);
* ``rag_query_log_dropped_total``: query-log records dropped (writer queue full, write failed);
* gauges read from the live snapshot at scrape time: ``rag_snapshot_info{snapshot_id}``,
  ``rag_snapshot_age_seconds``, ``rag_snapshot_units``, ``rag_snapshot_swaps_total``,
  ``rag_axis_available{axis}``.

With several workers (``serve --workers N``) each process has its own registry: scrape each
worker, or run one worker per container.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("serving.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a cached answer (sub-millisecond) to a request near its time limit.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# Search stages: the same scale, one finer step at the bottom (a BM25 search can take 0.3 ms).
STAGE_BUCKETS = (0.0005, *LATENCY_BUCKETS[:-1])


def outcome_of(status: int | None) -> str:
    if status is None or status >= 500:
        return {503: "overloaded", 504: "timeout"}.get(status or 500, "server_error")
    if status == 429:
        return "rate_limited"
    if status >= 400:
        return "client_error"
    return "ok"


class _SnapshotCollector:
    """Snapshot and axis gauges, read from the live searcher when Prometheus scrapes."""

    def __init__(self, status: Callable[[], Mapping[str, Any]]):
        self.status = status

    def describe(self) -> list[Metric]:
        return []  # dynamic: no registration-time collection

    def collect(self) -> Iterator[Metric]:
        try:
            st = dict(self.status())
        except Exception:  # a scrape never fails on the snapshot's account
            log.debug("snapshot status unavailable", exc_info=True)
            st = {}
        info = GaugeMetricFamily(
            "rag_snapshot_info", "the served snapshot (value 1)", labels=["snapshot_id"]
        )
        if st.get("open") and st.get("snapshot_id"):
            info.add_metric([str(st["snapshot_id"])], 1.0)
        yield info
        yield GaugeMetricFamily(
            "rag_snapshot_open", "1 when a snapshot is open", value=1.0 if st.get("open") else 0.0
        )
        for name, key, text in (
            ("rag_snapshot_age_seconds", "snapshot_age_s", "age of the served snapshot"),
            ("rag_snapshot_units", "units", "units (rows) in the served snapshot"),
            ("rag_snapshot_swaps", "swaps", "snapshot swaps since start"),
        ):
            value = st.get(key)
            if isinstance(value, (int, float)):
                yield GaugeMetricFamily(name, text, value=float(value))
        axes = GaugeMetricFamily(
            "rag_axis_available",
            "1 when the axis can be served, 0 when degraded or absent",
            labels=["axis"],
        )
        for axis, ok in sorted((st.get("axes") or {}).items()):
            axes.add_metric([axis], 1.0 if ok else 0.0)
        yield axes


class Metrics:
    """The app's metrics. ``snapshot_status`` returns the live snapshot's state (``open``,
    ``snapshot_id``, ``snapshot_age_s``, ``units``, ``swaps``, ``axes``: {axis: bool})."""

    def __init__(self, snapshot_status: Callable[[], Mapping[str, Any]] | None = None):
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "rag_http_requests",
            "HTTP requests",
            ["route", "method", "status", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "rag_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("rag_http_requests_in_flight", "requests being served", registry=r)
        self.stages = Histogram(
            "rag_search_stage_seconds",
            "search latency per stage",
            ["op", "stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "rag_cache_requests",
            "cache lookups by cache and outcome",
            ["cache", "outcome"],
            registry=r,
        )
        self.rate_limited = Counter(
            "rag_rate_limited", "requests refused by a rate limit", ["reason"], registry=r
        )
        self.quota_exceeded = Counter(
            "rag_quota_exceeded", "requests refused by a quota", registry=r
        )
        self.query_log_dropped = Counter(
            "rag_query_log_dropped", "query log records not written", registry=r
        )
        if snapshot_status is not None:
            r.register(_SnapshotCollector(snapshot_status))

    # -- hooks -----------------------------------------------------------------------------
    def request_started(self) -> None:
        self.in_flight.inc()

    def request_done(
        self,
        route: str,
        method: str,
        status: int | None,
        seconds: float,
        refusal: str | None = None,
    ) -> None:
        """One finished request. ``refusal``: the error code of a 429 (``quota_exceeded``
        counts as a quota refusal, any other code as a rate limit with that reason)."""
        self.in_flight.dec()
        outcome = outcome_of(status)
        if outcome == "rate_limited" and refusal == "quota_exceeded":
            outcome = "quota_exceeded"
        self.requests.labels(route, method, str(status or 500), outcome).inc()
        self.latency.labels(route, outcome).observe(seconds)
        if outcome == "quota_exceeded":
            self.quota_exceeded.inc()
        elif outcome == "rate_limited":
            self.rate_limited.labels(refusal or "rate_limit").inc()

    def observe_stages(self, op: str, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stages.labels(op, stage).observe(max(float(ms), 0.0) / 1000.0)

    def cache_event(self, cache: str, hit: bool) -> None:
        """For the caches: one lookup of ``cache``."""
        self.cache.labels(cache, "hit" if hit else "miss").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def snapshot_status(live: Any) -> Callable[[], dict[str, Any]]:
    """The collector's view of a ``LiveSearcher``: its status plus the open searcher's units
    and axes (without blocking on a swap)."""

    def status() -> dict[str, Any]:
        st = dict(live.status())
        if st.get("open"):
            try:
                with live.acquire() as searcher:
                    st["axes"] = {
                        a: bool(info.available) and a not in searcher.unavailable
                        for a, info in searcher.manifest.axes.items()
                    }
                    st["units"] = int(searcher.manifest.n_units)
            except Exception:
                log.debug("snapshot detail unavailable", exc_info=True)
        return st

    return status


__all__ = ["CONTENT_TYPE", "Metrics", "outcome_of", "snapshot_status"]
