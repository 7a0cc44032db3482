"""The HTTP API (FastAPI): search, similar, thumbnails and units over the live snapshot, behind
API keys, with bounded resources everywhere.

    GET|POST /v1/search              hybrid search (SearchRequest; GET: query parameters)
    GET|POST /v1/similar             units like an asset (SimilarRequest)
    GET      /v1/thumbnails/{asset}  an image's stored JPEG thumbnail
    GET      /v1/units/{unit_id}     one unit as a hit, with its full explanation
    POST     /v1/ask                 a cited answer from the hits, or a refusal (AskRequest;
                                     SSE with ``stream: true`` or ``Accept: text/event-stream``)
    GET      /v1/tags                the caller's content tags, most used first
    GET      /, /static/*, /session  the search page and its sign-in (serving.page)
    POST     /v1/feedback            judge a hit of a logged query (serving.observe)
    POST     /v1/documents           upload files to index (write scope; serving.uploads)
    GET      /v1/jobs/{job_id}       an ingest job's state, Dagster run, assets, dead letters
    DELETE   /v1/documents/{asset}   remove an upload from the next promoted snapshot
    GET      /metrics                Prometheus metrics (admin scope; serving.metrics)
    GET      /health/live            the process answers (no key)
    GET      /health/ready           200 when a snapshot is open, its query models passed
                                     parity and the key store answers; else 503 (no key)
    GET      /health                 axes, models, snapshot (a read key; 503 when degraded)
    GET      /openapi.json, /docs    the schema and its interactive page

Every route but the probes and the docs needs an API key with the route's scope (read; write
for uploads; admin for metrics). The
principal (tenant + ACL groups) comes from the key, never from the request. Errors are JSON:
``{"code", "message", "request_id"}`` (``serving.http_errors``).

``create_app(settings, live=..., keys=...)`` builds an app; ``app_from_env`` is the factory
uvicorn imports (``serving.app:app_from_env``, ``factory=True``) when it runs several workers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rag_pipeline.answers import GenerationError, generator_from_settings, threshold_from_settings
from rag_pipeline.retrieval.fusion import AXES, QueryType
from rag_pipeline.settings import Settings
from serving import http_errors
from serving.ask import Asker, Prepared
from serving.auth import Authenticator, Caller
from serving.cache import CachedSearch, Caches, RedisHealth
from serving.errors import AxisUnavailable, SearchError
from serving.http_errors import ApiError, ErrorBody
from serving.ingest import IngestStore
from serving.keys import KeyStore, KeyStoreError
from serving.limits import Admission
from serving.live import LiveSearcher
from serving.middleware import ApiMiddleware
from serving.models import (
    AskRequest,
    AskResponse,
    Hit,
    SearchFilters,
    SearchRequest,
    SearchResponse,
    SimilarRequest,
    TagCount,
    TagsResponse,
)
from serving.observe import Observer
from serving.observe import install as install_observability
from serving.page import install as install_page
from serving.principal import Principal
from serving.querylog import new_query_id
from serving.ratelimit import RateLimitHeaders, RateLimits, limited
from serving.searcher import Searcher
from serving.uploads import install as install_uploads
from serving.uploads import upload_body_bytes

log = logging.getLogger("serving.api")

API_VERSION = "1"
ASSET_ID = r"^[0-9a-f]{64}$"
UNIT_ID = r"^[A-Za-z0-9._:-]{1,200}$"


# --------------------------------------------------------------------------------------------
# Query-string forms of the request models (GET). Unknown and repeated parameters are refused.


def _split_list(value: Any) -> Any:
    """``a,b`` and ``x=a&x=b`` alike."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()] or None


class _FilterParams(BaseModel):
    kind: Literal["document", "image"] | None = None
    folder: str | None = Field(None, max_length=1024, description="folder prefix in a source")
    source: str | None = Field(None, max_length=1024)
    media_type: str | None = Field(None, max_length=255)
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    taken_after: datetime | None = Field(None, description="an image's EXIF/XMP date, from")
    taken_before: datetime | None = Field(None, description="an image's EXIF/XMP date, before")
    tags: list[str] | None = Field(
        None, max_length=32, description="content tags, all required (comma-separated or repeated)"
    )

    _lists = field_validator("tags", mode="before")(classmethod(lambda cls, v: _split_list(v)))

    def filters(self) -> SearchFilters | None:
        f = {
            "kind": self.kind,
            "folder_prefix": self.folder,
            "source": self.source,
            "media_type": self.media_type,
            "modified_after": self.modified_after,
            "modified_before": self.modified_before,
            "taken_after": self.taken_after,
            "taken_before": self.taken_before,
            "tags": self.tags,
        }
        f = {k: v for k, v in f.items() if v not in (None, "")}
        return SearchFilters(**f) if f else None


class SearchParams(_FilterParams):
    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=2000, description="the query")
    k: int = Field(10, ge=1, le=100)
    type: QueryType | None = Field(None, description="query type (default: classified)")
    axes: list[str] | None = Field(
        None, max_length=len(AXES), description=f"axes to use, of {list(AXES)}"
    )
    candidates: int = Field(100, ge=1, le=1000, description="per-axis candidate depth")
    collapse: bool = True
    rerank: bool = Field(True, description="rerank the fused candidates (false: fused order)")
    rerank_depth: int | None = Field(None, ge=1, le=1000, description="candidates reranked")

    _axes = field_validator("axes", mode="before")(classmethod(lambda cls, v: _split_list(v)))

    def request(self) -> SearchRequest:
        return SearchRequest(
            query=self.q,
            k=self.k,
            query_type=self.type,
            axes=self.axes,
            candidates=self.candidates,
            collapse=self.collapse,
            rerank=self.rerank,
            rerank_depth=self.rerank_depth,
            filters=self.filters(),
        )


class SimilarParams(_FilterParams):
    model_config = ConfigDict(extra="forbid")

    asset_id: str = Field(pattern=ASSET_ID)
    k: int = Field(10, ge=1, le=100)
    axis: Literal["vv", "mv"] | None = None
    collapse: bool = True

    def request(self) -> SimilarRequest:
        return SimilarRequest(
            asset_id=self.asset_id,
            k=self.k,
            axis=self.axis,
            collapse=self.collapse,
            filters=self.filters(),
        )


_LIST_PARAMS = {"axes", "tags"}


def _no_repeats(request: Request) -> None:
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen and name not in _LIST_PARAMS:
            raise ApiError(422, "invalid_request", f"parameter {name!r} given more than once")
        seen.add(name)


def _checked(model: Callable[[], BaseModel]) -> Any:
    """Build a request model; its validation errors are the client's (422)."""
    try:
        return model()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ApiError(
            422, "invalid_request", f"{where}: {first['msg']}" if where else first["msg"]
        ) from None


def _clean_text(value: Any, where: str = "request") -> None:
    """Strings a search may carry: no NUL, no lone surrogates (JSON allows both)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ApiError(422, "invalid_request", f"{where}: NUL characters are not allowed")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, "invalid_request", f"{where}: not valid Unicode text") from None
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _clean_text(getattr(value, name), name)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _clean_text(item, where)


def axis_error(searcher: Searcher, exc: AxisUnavailable) -> ApiError:
    """503 when the axis is one this snapshot has but this server cannot serve now (its query
    model is missing: a degraded server, another replica may answer); 422 when the request asks
    for what the snapshot does not offer (an axis it was built without, an asset without that
    axis' vector): asking again will not help."""
    message = http_errors.scrub(str(exc))
    degraded = [
        a
        for a, info in searcher.manifest.axes.items()
        if info.available and a in searcher.unavailable
    ]
    if any(repr(a) in str(exc) for a in degraded):
        log.warning("axis unavailable: %s", exc)
        return ApiError(503, "axis_unavailable", message, headers={"Retry-After": "30"})
    return ApiError(422, "axis_unavailable", message)


# --------------------------------------------------------------------------------------------
# Responses


class Liveness(BaseModel):
    status: Literal["live"] = "live"


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    snapshot: dict[str, Any]
    axes: dict[str, Any] = Field(default_factory=dict)
    key_store: Check
    limits: dict[str, Any]
    cache: dict[str, Any] = Field(
        default_factory=dict, description="cache backend and whether it works"
    )


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "malformed request (a body that is not JSON text)",
        401: "no API key, or an invalid, revoked or expired one",
        403: "the API key lacks the route's scope",
        404: "not found (for this tenant)",
        413: "request body too large",
        422: "invalid request, or an axis this snapshot does not have (axis_unavailable)",
        500: "internal error (details in the server log, under the request id)",
        503: "unavailable: overloaded (Retry-After), no snapshot, an axis or model "
        "unavailable, or the key store down",
        504: "the request timed out",
    }
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}


_COMMON = (400, 401, 403, 422, 500, 503, 504)
_JSON = "application/json"


# --------------------------------------------------------------------------------------------
# The app


def create_app(
    settings: Settings | None = None,
    *,
    live: LiveSearcher | None = None,
    keys: KeyStore | None = None,
    dev: bool = False,
) -> FastAPI:
    """The API over ``live`` (default: a ``LiveSearcher`` on the settings' snapshots), keys from
    ``keys`` (default: the settings' key store). ``dev``: keyless requests are served as the
    settings' tenant (only ``serve --dev`` on a loopback address does this)."""
    settings = settings or Settings.from_env()
    redis_health = RedisHealth(settings.redis_retry_s)  # caches and limits share one breaker
    caches = Caches.from_settings(settings, health=redis_health)
    live = live if live is not None else LiveSearcher(settings, query_cache=caches.vectors)
    if keys is None and not dev:
        keys = KeyStore.from_settings(settings)
    dev_principal = Principal(tenant=settings.tenant_id) if dev else None
    admission = Admission(
        settings.max_concurrent_requests, settings.max_queued_requests, settings.request_timeout_s
    )
    observer = Observer(settings, live, keys)
    asker = Asker(generator_from_settings(settings), threshold_from_settings(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(live.start)
        observer.start()
        status = live.status()
        if status.get("open"):
            log.info("serving snapshot %s", status.get("snapshot_id"))
        else:
            log.warning("no snapshot open yet: %s", status.get("error"))
        try:
            yield
        finally:  # uvicorn has drained in-flight requests (up to its graceful timeout)
            admission.close()
            observer.close()
            live.close()
            if keys is not None:
                keys.close()

    app = FastAPI(
        title="rag_pipeline search API",
        version=API_VERSION,
        lifespan=lifespan,
        description="Hybrid search over the promoted snapshot, with explanations. Every "
        "route but the probes needs an API key: `Authorization: Bearer rag_...` "
        "or `X-API-Key: rag_...`.",
    )
    app.state.settings = settings
    app.state.live = live
    app.state.keys = keys
    app.state.admission = admission
    app.state.asker = asker
    app.state.auth = Authenticator(keys, dev_principal)
    app.state.cached_search = cached_search = CachedSearch(caches, live)
    app.state.rate_limits = RateLimits(settings, health=redis_health)
    http_errors.install(app)
    install_observability(app, observer)
    install_uploads(app, settings, IngestStore(keys.engine, settings) if keys is not None else None)
    install_page(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "X-Cache",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
            ],
            max_age=600,
        )
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(
        ApiMiddleware,
        max_body_bytes=settings.max_body_bytes,
        upload_body_bytes=upload_body_bytes(settings),
        log_query_text=settings.log_query_text,
        metrics=observer.metrics,
        tracer=observer.tracer,
    )

    read = Depends(limited("read"))  # the key's scope, then its rate limit and quota

    async def run(fn: Callable[[Searcher], Any]) -> Any:
        """``fn(searcher)`` on a search thread, with the live snapshot held for its duration."""

        def work() -> Any:
            with live.acquire() as searcher:
                try:
                    return fn(searcher)
                except AxisUnavailable as exc:
                    raise axis_error(searcher, exc) from None

        return await admission.run(work)

    def json_response(model: BaseModel) -> bytes:
        return model.model_dump_json().encode()

    # -- search ------------------------------------------------------------------------------
    def _count_cache(state: Any, cache: str) -> None:
        """The result cache's outcome, for the access log line and /metrics."""
        state.cache = cache
        if cache != "off":
            observer.metrics.cache_event("result", cache in ("hit", "shared"))

    async def do_search(req: SearchRequest, caller: Caller, state: Any) -> Response:
        _clean_text(req)

        def fn(s: Searcher) -> tuple[bytes, str]:
            resp = s.search(req, caller.as_seen_by(s))
            observer.record(state, "search", caller, req, resp, req.query)
            return json_response(resp), s.manifest.snapshot_id

        body, cache = await cached_search.answer("search", req, caller, lambda: run(fn))
        _count_cache(state, cache)
        return Response(body, media_type=_JSON, headers={"X-Cache": cache})

    @app.get(
        "/v1/search",
        response_model=SearchResponse,
        responses=_errors(*_COMMON),
        tags=["search"],
        summary="Hybrid search (query parameters)",
    )
    async def search_get(
        request: Request, params: Annotated[SearchParams, Query()], caller: Caller = read
    ) -> Response:
        _no_repeats(request)
        return await do_search(_checked(params.request), caller, request.state)

    @app.post(
        "/v1/search",
        response_model=SearchResponse,
        responses=_errors(*_COMMON, 413),
        tags=["search"],
        summary="Hybrid search (JSON body)",
    )
    async def search_post(req: SearchRequest, request: Request, caller: Caller = read) -> Response:
        return await do_search(req, caller, request.state)

    # -- similar -----------------------------------------------------------------------------
    async def do_similar(req: SimilarRequest, caller: Caller, state: Any) -> Response:
        _clean_text(req)

        def fn(s: Searcher) -> tuple[bytes | None, str]:
            try:
                resp = s.similar(req, caller.as_seen_by(s))
            except KeyError:  # an asset this tenant's snapshot does not have
                return None, s.manifest.snapshot_id
            observer.record(state, "similar", caller, req, resp, req.asset_id)
            return json_response(resp), s.manifest.snapshot_id

        body, cache = await cached_search.answer("similar", req, caller, lambda: run(fn))
        _count_cache(state, cache)
        if body is None:
            raise ApiError(404, "not_found", "no such asset in the snapshot")
        return Response(body, media_type=_JSON, headers={"X-Cache": cache})

    @app.get(
        "/v1/similar",
        response_model=SearchResponse,
        responses=_errors(*_COMMON, 404),
        tags=["search"],
        summary="Units like an asset (query parameters)",
    )
    async def similar_get(
        request: Request, params: Annotated[SimilarParams, Query()], caller: Caller = read
    ) -> Response:
        _no_repeats(request)
        return await do_similar(_checked(params.request), caller, request.state)

    @app.post(
        "/v1/similar",
        response_model=SearchResponse,
        responses=_errors(*_COMMON, 404, 413),
        tags=["search"],
        summary="Units like an asset (JSON body)",
    )
    async def similar_post(
        req: SimilarRequest, request: Request, caller: Caller = read
    ) -> Response:
        return await do_similar(req, caller, request.state)

    # -- answers -----------------------------------------------------------------------------
    def finished(state: Any, caller: Caller, req: AskRequest, resp: AskResponse) -> bytes:
        """Log the answered question (``query_id``) and serialize the response."""
        observer.record(state, "ask", caller, req, resp, req.question)
        if not resp.query_id:  # the query log is off: still an id the client can quote
            resp.query_id = new_query_id()
        return json_response(resp)

    async def prepare(req: AskRequest, caller: Caller) -> Prepared:
        _clean_text(req)
        # The search and the extractive answer hold a search slot; the generation that may
        # follow is the generator's work and runs outside it (under its own timeout).
        return await run(lambda s: asker.prepare(s, req, caller.as_seen_by(s)))

    def sse(event: str, data: str) -> bytes:
        return f"event: {event}\ndata: {data}\n\n".encode()

    async def ask_events(p: Prepared, caller: Caller, state: Any) -> AsyncIterator[bytes]:
        """``token`` events while generating (``{"text": chunk}``), then one ``answer`` event
        with the whole AskResponse. When the client goes away the generator is closed, which
        closes the upstream request."""
        parts: list[str] = []
        error: str | None = None
        if asker.wants_generation(p):
            cancel = threading.Event()
            chunks = asker.stream_tokens(p, cancel)
            try:
                while True:
                    chunk = await anyio.to_thread.run_sync(next, chunks, None)
                    if chunk is None:
                        break
                    parts.append(chunk)
                    yield sse("token", json.dumps({"text": chunk}))
            except GenerationError as exc:
                error = str(exc)
            finally:
                cancel.set()
                chunks.close()  # type: ignore[attr-defined]
        resp = asker.finish(p, "".join(parts) if error is None else None, error)
        yield sse("answer", finished(state, caller, p.req, resp).decode())

    @app.post(
        "/v1/ask",
        response_model=AskResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "the answer (JSON), or with `stream: true` / `Accept: "
                "text/event-stream` server-sent events: `token` chunks, then one `answer`",
            },
            **_errors(*_COMMON, 413),
        },
        tags=["answers"],
        summary="A cited answer from your documents, or a refusal when the evidence is weak",
    )
    async def ask(req: AskRequest, request: Request, caller: Caller = read) -> Response:
        p = await prepare(req, caller)
        state = request.state
        if req.stream or "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(
                ask_events(p, caller, state),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        resp = (
            await anyio.to_thread.run_sync(asker.generate, p)
            if asker.wants_generation(p)
            else asker.finish(p, None, None)
        )
        return Response(finished(state, caller, req, resp), media_type=_JSON)

    # -- thumbnails and units ----------------------------------------------------------------
    @app.get(
        "/v1/thumbnails/{asset_id}",
        response_class=Response,
        tags=["assets"],
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "JPEG"},
            **_errors(*_COMMON, 404),
        },
        summary="An image's stored thumbnail",
    )
    async def thumbnail(
        asset_id: Annotated[str, Path(pattern=ASSET_ID)], caller: Caller = read
    ) -> Response:
        def fn(s: Searcher) -> bytes | None:
            path = s.thumbnail_file(asset_id, caller.as_seen_by(s))
            return path.read_bytes() if path is not None else None

        data = await run(fn)
        if data is None:
            raise ApiError(404, "not_found", "no thumbnail for that asset")
        return Response(
            data,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{asset_id}"'},
        )

    @app.get(
        "/v1/units/{unit_id}",
        response_model=Hit,
        responses=_errors(*_COMMON, 404),
        tags=["assets"],
        summary="One unit, with its full explanation",
    )
    async def unit(
        unit_id: Annotated[str, Path(pattern=UNIT_ID)], caller: Caller = read
    ) -> Response:
        body = await run(
            lambda s: (lambda h: json_response(h) if h is not None else None)(
                s.unit(unit_id, caller.as_seen_by(s))
            )
        )
        if body is None:
            raise ApiError(404, "not_found", "no such unit in the snapshot")
        return Response(body, media_type=_JSON)

    @app.get(
        "/v1/tags",
        response_model=TagsResponse,
        responses=_errors(*_COMMON),
        tags=["assets"],
        summary="The caller's content tags (image keywords, VLM tags), most used first",
    )
    async def tags(
        limit: Annotated[int, Query(ge=1, le=1000)] = 200, caller: Caller = read
    ) -> Response:
        def fn(s: Searcher) -> bytes:
            counts = s.tag_counts(caller.as_seen_by(s), limit)
            return json_response(
                TagsResponse(
                    snapshot_id=s.manifest.snapshot_id,
                    tags=[TagCount(tag=t, units=n) for t, n in counts],
                )
            )

        return Response(await run(fn), media_type=_JSON)

    # -- probes and health -------------------------------------------------------------------
    def snapshot_check() -> tuple[Check, Check, Searcher | None]:
        status = live.status()
        if not status.get("open"):
            if status.get("error"):
                log.warning("not ready: %s", status["error"])
            return (
                Check(ok=False, detail="no snapshot is open"),
                Check(ok=False, detail="no snapshot"),
                None,
            )
        try:
            with live.acquire() as searcher:
                available = searcher.available_axes
        except SearchError:
            return (
                Check(ok=False, detail="no snapshot is open"),
                Check(ok=False, detail="no snapshot"),
                None,
            )
        models = (
            Check(ok=True, detail=f"axes {', '.join(available)}")
            if available
            else Check(ok=False, detail="no servable axis")
        )
        return Check(ok=True, detail=str(status.get("snapshot_id"))), models, searcher

    async def key_store_check() -> Check:
        if keys is None:
            return Check(ok=True, detail="dev mode: no key store")
        try:
            with anyio.fail_after(3):
                await anyio.to_thread.run_sync(keys.ping, abandon_on_cancel=True)
        except (KeyStoreError, TimeoutError) as exc:
            log.warning("not ready: key store: %s", exc)
            return Check(ok=False, detail="the key store does not answer")
        return Check(ok=True)

    @app.get(
        "/health/live", response_model=Liveness, tags=["health"], summary="The process answers"
    )
    async def health_live() -> Liveness:
        return Liveness()

    @app.get(
        "/health/ready",
        response_model=Readiness,
        tags=["health"],
        responses={503: {"model": Readiness, "description": "not ready: failing checks"}},
        summary="Ready to serve: a snapshot is open, its models passed parity, the key "
        "store answers",
    )
    async def health_ready() -> JSONResponse:
        snap, models, _ = await anyio.to_thread.run_sync(snapshot_check)
        checks = {"snapshot": snap, "models": models, "key_store": await key_store_check()}
        ok = all(c.ok for c in checks.values())
        body = Readiness(status="ready" if ok else "not_ready", checks=checks)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if ok else 503)

    @app.get(
        "/health",
        response_model=Health,
        tags=["health"],
        responses={
            503: {"model": Health, "description": "degraded or unavailable"},
            **_errors(401, 403, 500),
        },
        summary="Axes, models, snapshot (200 only when every axis is available)",
    )
    async def health(caller: Caller = read) -> JSONResponse:
        def detail() -> tuple[dict[str, Any], list[str]]:
            try:
                with live.acquire() as searcher:
                    # Degraded: an axis the snapshot has that this server cannot serve (an axis
                    # the snapshot was built without is no degradation).
                    lost = [
                        a
                        for a, i in searcher.manifest.axes.items()
                        if i.available and a in searcher.unavailable
                    ]
                    return searcher.health(), lost
            except SearchError:
                return {}, []

        info, lost = await anyio.to_thread.run_sync(detail)
        store = await key_store_check()
        cache = await anyio.to_thread.run_sync(lambda: caches.health(ping=True))
        if not info:
            status = "unavailable"
        else:
            status = (
                "ok"
                if (store.ok and not lost and info.get("status") == "ok" and cache["healthy"])
                else "degraded"
            )
        axes = info.pop("axes", {})
        ce = info.get("cross_encoder")
        for entry in [*axes.values(), *([ce] if ce else [])]:
            # Reasons may name local directories: keep them in the logs.
            if entry.get("reason"):
                entry["reason"] = http_errors.scrub(entry["reason"])
        if "admin" not in caller.scopes:
            info.pop("tenants", None)  # other tenants' names are an operator's business
        live_status = live.status()
        info["live"] = {
            k: live_status.get(k)
            for k in (
                "snapshot_age_s",
                "following",
                "pointer",
                "pointer_snapshot_id",
                "swaps",
                "last_swap",
                "in_flight",
                "error",
                "failed_snapshot_id",
            )
        }
        body = Health(
            status=status,
            snapshot=info,
            axes=axes,
            key_store=store,
            limits={
                "max_concurrent_requests": settings.max_concurrent_requests,
                "max_queued_requests": settings.max_queued_requests,
                "request_timeout_s": settings.request_timeout_s,
                "max_body_bytes": settings.max_body_bytes,
                "rate_limits": app.state.rate_limits.describe(),
            },
            cache=cache,
        )
        return JSONResponse(
            body.model_dump(mode="json"), status_code=200 if status == "ok" else 503
        )

    return app


def app_from_env() -> FastAPI:
    """The factory ``rag-pipeline serve --workers N`` hands uvicorn (``factory=True``): settings
    from the environment, API keys required (dev mode runs one worker)."""
    return create_app(Settings.from_env())


__all__ = ["app_from_env", "create_app"]
