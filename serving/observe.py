"""Observability of the HTTP API, wired into ``create_app`` in one place: metrics
(``GET /metrics``, admin scope), the query log (``query_id`` on every search and similar
response), feedback (``POST /v1/feedback``, read scope) and spans (``serving.tracing``).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from rag_pipeline.settings import Settings
from serving.auth import Caller, require
from serving.http_errors import ApiError, ErrorBody
from serving.metrics import CONTENT_TYPE, Metrics, snapshot_status
from serving.querylog import QueryLog, QueryNotFound, hit_summary, new_query_id
from serving.tracing import stage_spans, tracer_for

log = logging.getLogger("serving.api")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    query_id: str = Field(pattern=r"^q_[0-9a-f]{32}$", description="from a search response")
    unit_id: str = Field(min_length=1, max_length=200, description="a unit among that query's hits")
    judgement: Literal["relevant", "not_relevant"]
    note: str | None = Field(None, max_length=2000)


class FeedbackResponse(BaseModel):
    feedback_id: str
    query_id: str


class Observer:
    """Per app: metrics, the query log (None: off, or no key store) and the tracer."""

    def __init__(self, settings: Settings, live: Any, keys: Any):
        self.settings = settings
        self.metrics = Metrics(snapshot_status(live))
        self.tracer = tracer_for(settings.otlp_endpoint)
        self.querylog: QueryLog | None = None
        if keys is not None and settings.query_log:
            self.querylog = QueryLog(
                keys.engine,
                retention_days=settings.query_log_days,
                on_drop=lambda n: self.metrics.query_log_dropped.inc(n),
            )

    def start(self) -> None:
        if self.querylog is not None:
            self.querylog.start()

    def close(self) -> None:
        if self.querylog is not None:
            self.querylog.close()

    def record(
        self, request_state: Any, op: str, caller: Caller, req: Any, resp: Any, query: str
    ) -> None:
        """After a search or similar (on its worker thread): stage metrics and spans, the
        request's log fields, and the query log row; sets ``resp.query_id``."""
        self.metrics.observe_stages(op, resp.timings_ms)
        request_state.snapshot_id = resp.snapshot_id
        span = getattr(request_state, "span", None)
        if span is not None and self.tracer is not None:
            span.set_attribute("rag.snapshot_id", resp.snapshot_id)
            stage_spans(self.tracer, span, op, resp.timings_ms)
        if self.querylog is None:
            return
        qid = new_query_id()
        resp.query_id = qid
        request_state.query_id = qid
        self.querylog.record(
            {
                "query_id": qid,
                "tenant": caller.principal.tenant,
                "key_id": caller.key_id,
                "request_id": getattr(request_state, "request_id", None),
                "op": op,
                "query": query,
                "query_type": getattr(resp, "query_type", None),
                "k": getattr(req, "k", None),
                "snapshot_id": resp.snapshot_id,
                "hits": hit_summary(resp.hits),
                "timings_ms": dict(resp.timings_ms),
                "latency_ms": resp.timings_ms.get("total"),
            }
        )


def install(app: FastAPI, observer: Observer) -> None:
    """``GET /metrics`` and ``POST /v1/feedback`` on ``app``."""
    app.state.observer = observer
    app.state.metrics = observer.metrics

    @app.get(
        "/metrics",
        response_class=Response,
        tags=["operations"],
        responses={
            200: {
                "content": {CONTENT_TYPE: {}},
                "description": "Prometheus text exposition format",
            },
            **{s: {"model": ErrorBody} for s in (401, 403)},
        },
        summary="Prometheus metrics (admin scope)",
    )
    async def metrics(caller: Annotated[Caller, Depends(require("admin"))]) -> Response:
        body = await anyio.to_thread.run_sync(observer.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE)

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        status_code=201,
        tags=["search"],
        responses={s: {"model": ErrorBody} for s in (401, 403, 404, 422, 503)},
        summary="Judge a hit of a logged query: relevant / not_relevant",
    )
    async def post_feedback(
        body: FeedbackRequest,
        request: Request,
        caller: Annotated[Caller, Depends(require("read"))],
    ) -> FeedbackResponse:
        qlog = observer.querylog
        if qlog is None:
            raise ApiError(503, "unavailable", "the query log is off (RAG_QUERY_LOG)")
        t0 = time.perf_counter()
        try:
            fid = await anyio.to_thread.run_sync(
                lambda: qlog.add_feedback(
                    tenant=caller.principal.tenant,
                    key_id=caller.key_id,
                    query_id=body.query_id,
                    unit_id=body.unit_id,
                    judgement=body.judgement,
                    note=body.note,
                )
            )
        except QueryNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        request.state.query_id = body.query_id
        log.debug("feedback %s in %.1f ms", fid, (time.perf_counter() - t0) * 1000)
        return FeedbackResponse(feedback_id=fid, query_id=body.query_id)


__all__ = ["FeedbackRequest", "FeedbackResponse", "Observer", "install"]
