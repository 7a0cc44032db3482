"""OpenTelemetry spans for requests and search stages, only when ``RAG_OTLP_ENDPOINT`` is set
and the ``otel`` extra (``opentelemetry-sdk`` and the OTLP/HTTP exporter) is installed.
Otherwise ``tracer_for`` returns None and callers skip tracing entirely: no cost.

Stage spans are reconstructed from the searcher's ``timings_ms`` (the encoders run one after
another, the axis searches side by side, then fusion, fetch and build), children of the
request's span.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("serving.tracing")

_providers: dict[str, Any] = {}


def tracer_for(endpoint: str | None) -> Any | None:
    """A tracer exporting to ``endpoint`` (OTLP/HTTP), or None (no endpoint, no extra)."""
    if not endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "RAG_OTLP_ENDPOINT is set but the otel extra is not installed "
            "(pip install 'rag_pipeline[otel]'): no tracing"
        )
        return None
    provider = _providers.get(endpoint)
    if provider is None:
        provider = TracerProvider(resource=Resource.create({"service.name": "rag-serving"}))
        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        _providers[endpoint] = provider
    return provider.get_tracer("serving")


def stage_spans(
    tracer: Any, parent: Any, op: str, timings_ms: Mapping[str, float], end_ns: int | None = None
) -> None:
    """Child spans of ``parent`` for each stage in ``timings_ms``, laid out backwards from
    ``end_ns`` (now)."""
    from opentelemetry import trace

    end_ns = end_ns or time.time_ns()
    ms = {k: float(v) for k, v in timings_ms.items()}
    total = ms.get("total", sum(ms.values()))
    t0 = end_ns - int(total * 1e6)
    ctx = trace.set_span_in_context(parent)

    def span(name: str, start: int, dur_ms: float) -> int:
        end = start + int(dur_ms * 1e6)
        s = tracer.start_span(f"{op}.{name}", context=ctx, start_time=start)
        s.set_attribute("rag.stage", name)
        s.end(end_time=end)
        return end

    cursor = t0
    encodes = [k for k in ms if k.endswith("_encode")]
    for k in encodes:
        cursor = span(k, cursor, ms[k])
    axes = [
        k
        for k in ms
        if k not in encodes and k not in ("axes_wall", "fuse", "fetch", "build", "total")
    ]
    for k in axes:
        span(k, cursor, ms[k])
    cursor = t0 + int(ms.get("axes_wall", 0.0) * 1e6)
    for k in ("fuse", "fetch", "build"):
        if k in ms:
            cursor = span(k, cursor, ms[k])


__all__ = ["stage_spans", "tracer_for"]
