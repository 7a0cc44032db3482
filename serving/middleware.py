"""One pure-ASGI middleware around the API: request ids, the body size limit, security headers,
the access log, and a JSON 500 for anything unexpected (traceback to the log only).

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, bodies stream.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.http_errors import ErrorBody, request_id_var

log = logging.getLogger("serving.api")
access_log = logging.getLogger("serving.access")

# A client's X-Request-ID is kept when it is this sane (no spaces, no control characters, so it
# cannot forge log lines); otherwise the server makes one.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# JSON and images need nothing from a browser; the interactive docs page needs its scripts.
CSP_API = b"default-src 'none'; frame-ancestors 'none'"
CSP_DOCS = (
    b"default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
    b"frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
# The search page (serving.page): its own scripts, styles and images only; no inline script, no
# third-party asset, no plugin, no framing, forms post only here.
CSP_PAGE = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def csp_for(path: str) -> bytes:
    if path in DOCS_PATHS:
        return CSP_DOCS
    if path == "/" or path.startswith("/static/"):
        return CSP_PAGE
    return CSP_API


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit} bytes")


def new_request_id() -> str:
    return uuid.uuid4().hex


def route_of(scope: Scope) -> str:
    """The matched route's template (``/v1/units/{unit_id}``), never the raw path (ids would
    explode metric labels); ``unmatched`` when no route matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


UPLOAD_PATH = "/v1/documents"


class ApiMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        upload_body_bytes: int | None = None,
        log_query_text: bool = False,
        metrics: Any = None,
        tracer: Any = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        # POST /v1/documents carries files: its own (larger) bound, checked the same way
        self.upload_body_bytes = upload_body_bytes or max_body_bytes
        self.log_query_text = log_query_text
        self.metrics = metrics  # serving.metrics.Metrics, or None
        self.tracer = tracer  # an OpenTelemetry tracer (serving.tracing), or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = None
        length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                rid = text if _SANE_REQUEST_ID.match(text) else None
            elif name == b"content-length":
                length = value
        rid = rid or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        state: dict[str, Any] = {"status": None}
        span = None
        if self.tracer is not None:
            span = self.tracer.start_span(
                f"{scope['method']} {scope['path']}",
                attributes={"http.request.method": scope["method"], "rag.request_id": rid},
            )
            scope["state"]["span"] = span
        if self.metrics is not None:
            self.metrics.request_started()
        csp = csp_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = MutableHeaders(scope=message)
                headers.append("x-request-id", rid)
                raw = headers.raw
                raw.extend(SECURITY_HEADERS)
                raw.append((b"content-security-policy", csp))
                if b"cache-control" not in {k for k, _ in raw}:
                    raw.append((b"cache-control", b"no-store"))
            await send(message)

        limit = (
            self.upload_body_bytes
            if scope["path"] == UPLOAD_PATH and scope["method"] == "POST"
            else self.max_body_bytes
        )
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            if length is not None and (not length.isdigit() or int(length) > limit):
                await self._error(
                    send_with_headers,
                    413,
                    "payload_too_large",
                    f"request body over {limit} bytes",
                    rid,
                )
                return
            await self.app(scope, limited_receive, send_with_headers)
        except Exception as exc:
            # Everything a route raises on purpose has a handler; this is a bug or an outage.
            log.error(
                "request %s %s %s failed: %s",
                rid,
                scope["method"],
                scope["path"],
                type(exc).__name__,
                exc_info=True,
            )
            if state["status"] is None:
                await self._error(
                    send_with_headers,
                    500,
                    "internal",
                    "internal error; quote the request id when reporting it",
                    rid,
                )
        finally:
            seconds = time.perf_counter() - t0
            path = scope["path"]
            if self.log_query_text and scope.get("query_string"):
                path += "?" + scope["query_string"].decode("latin-1")
            st = scope.get("state", {})
            route = route_of(scope)
            status = state["status"] if state["status"] is not None else 500
            # One line per request; its fields are what the JSON log shows (never the key; the
            # query text only with RAG_LOG_QUERY_TEXT, as part of the path).
            fields = {
                "request_id": rid,
                "method": scope["method"],
                "route": route,
                "path": path,
                "status": status,
                "latency_ms": round(seconds * 1000.0, 3),
                "key_id": st.get("key_id"),
                "tenant": st.get("tenant"),
                "cache": st.get("cache"),
                "snapshot_id": st.get("snapshot_id"),
                "query_id": st.get("query_id"),
            }
            access_log.info(
                "%s %s %s %s %.1fms key=%s",
                rid,
                scope["method"],
                path,
                state["status"],
                seconds * 1000.0,
                st.get("key_id", "-"),
                extra={"fields": fields},
            )
            if self.metrics is not None:
                self.metrics.request_done(
                    route, scope["method"], status, seconds, refusal=st.get("refusal")
                )
            if span is not None:
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                span.end()
            request_id_var.reset(token)

    @staticmethod
    async def _error(send: Send, status: int, code: str, message: str, rid: str) -> None:
        body = json.dumps(
            ErrorBody(code=code, message=message, request_id=rid).model_dump(exclude_none=True)
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status == 413:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
