"""The HTTP API's errors: one JSON shape with a stable ``code``, a message and the request id.

Clients never see a traceback, a file path or an exception's repr: those go to the log, under
the same request id.
"""

from __future__ import annotations

import contextvars
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.errors import AxisUnavailable, ModelMismatch, SearchError

log = logging.getLogger("serving.api")

# The current request's id, for log records made while serving it (see ``RequestIdFilter``).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Stable codes, by HTTP status where the status alone decides.
STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "overloaded",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}


class ErrorBody(BaseModel):
    code: str = Field(
        description="stable, machine-readable: unauthorized, forbidden, not_found, "
        "invalid_request, payload_too_large, timeout, overloaded, "
        "axis_unavailable, model_mismatch, snapshot_unavailable, "
        "key_store_unavailable, internal, ..."
    )
    message: str
    request_id: str
    details: list[dict[str, Any]] | None = Field(
        None, description="invalid_request: where and why, per invalid field"
    )


class ApiError(Exception):
    """An answer that is an error: status, stable code, a message safe to show."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.details = details


_PATH = re.compile(r"(?<![\w:/.])(?:~|\.{1,2})?/[^\s'\",;()\]]+")


def scrub(message: str) -> str:
    """A message without file paths (they stay in the log)."""
    return _PATH.sub("<path>", message)[:500]


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or request_id_var.get()


def error_response(
    status: int,
    code: str,
    message: str,
    rid: str,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, request_id=rid, details=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Location and message only: pydantic's ``input`` and ``ctx`` may echo the request.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", ""))[:300],
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()[:20]
    ]


def search_error(exc: SearchError) -> ApiError:
    """The API error for a serving refusal."""
    from serving.keys import KeyStoreError
    from serving.live import SnapshotUnavailable

    if isinstance(exc, AxisUnavailable):
        return ApiError(503, "axis_unavailable", scrub(str(exc)))
    if isinstance(exc, ModelMismatch):
        return ApiError(503, "model_mismatch", "the query model does not match the snapshot's")
    if isinstance(exc, SnapshotUnavailable):
        return ApiError(
            503, "snapshot_unavailable", "no search snapshot is open", headers={"Retry-After": "5"}
        )
    if isinstance(exc, KeyStoreError):
        return ApiError(
            503,
            "key_store_unavailable",
            "the API key store is unavailable",
            headers={"Retry-After": "5"},
        )
    return ApiError(503, "unavailable", "search is unavailable")


def install(app: FastAPI) -> None:
    """Exception handlers for everything a route may raise on purpose. Anything else is caught
    by ``ApiMiddleware`` (500, ``internal``)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.status == 429:  # which limit refused it, for the metrics (serving.metrics)
            request.state.refusal = exc.code
        return error_response(
            exc.status, exc.code, exc.message, request_id(request), exc.headers, exc.details
        )

    @app.exception_handler(SearchError)
    async def _search_error(request: Request, exc: SearchError) -> JSONResponse:
        err = search_error(exc)
        log.warning(
            "request %s: %s (%s: %s)", request_id(request), err.code, type(exc).__name__, exc
        )
        return error_response(err.status, err.code, err.message, request_id(request), err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path"))
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return error_response(422, "invalid_request", message, request_id(request), details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(
            exc.status_code, code, scrub(message), request_id(request), dict(exc.headers or {})
        )
