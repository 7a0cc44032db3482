"""The search page: static HTML, CSS and ES modules (``serving/static/``) served by the API at
``/``, and its session.

    GET    /           the page (no inline script: the strict CSP of ``serving.middleware``)
    GET    /static/*   its stylesheet and modules
    POST   /session    sign in: ``{"key": "rag_..."}`` is checked like any API key and set in
                       the ``rag_session`` cookie (HttpOnly, SameSite=Strict, Secure over https)
    GET    /session    who is signed in (tenant, scopes) and what the page may offer (query
                       types, axes); ``signed_in: false`` (and why) when nobody is
    DELETE /session    sign out: the cookie is cleared

The cookie holds the API key itself: the server stays stateless (any worker, any replica
accepts it), revoking the key signs the page out within ``RAG_KEY_CACHE_S``, and HttpOnly keeps
it from the page's scripts. ``POST`` and ``DELETE`` need ``X-Requested-With`` like every
cookie-authenticated change (``serving.auth``). In dev mode (``serve --dev``, loopback only)
``GET /session`` answers for the keyless dev principal: the page is signed in by itself.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from rag_pipeline.contracts import QUERY_TYPES
from rag_pipeline.retrieval.fusion import AXES
from serving.auth import CSRF_HEADER, SESSION_COOKIE, Caller
from serving.http_errors import ApiError, ErrorBody

STATIC_DIR = resources.files("serving") / "static"


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    key: str = Field(min_length=1, max_length=200, description="an API key (rag_...)")


class SessionInfo(BaseModel):
    signed_in: bool
    # Why a session cookie was refused (an expired or revoked key): the sign-in form shows it.
    message: str | None = None
    tenant: str | None = None
    key_id: str | None = None  # None when signed in: dev mode, keyless
    scopes: list[str] = Field(default_factory=list)
    dev: bool = False
    query_types: list[str] = Field(default_factory=list)
    axes: list[str] = Field(default_factory=list)


def _info(caller: Caller) -> SessionInfo:
    return SessionInfo(
        signed_in=True,
        tenant=caller.principal.tenant,
        key_id=caller.key_id,
        scopes=sorted(caller.scopes),
        dev=caller.key_id is None,
        query_types=list(QUERY_TYPES),
        axes=list(AXES),
    )


def _clear(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _csrf(request: Request) -> None:
    if not request.headers.get(CSRF_HEADER):
        raise ApiError(403, "forbidden", f"the {CSRF_HEADER} header is required")


def install(app: FastAPI) -> None:
    """The page, its static files and ``/session`` on ``app``."""
    static = str(STATIC_DIR)
    app.mount("/static", StaticFiles(directory=static), name="static")
    index = f"{static}/index.html"
    errors: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody} for s in (400, 401, 403, 413, 422, 503)
    }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8")

    @app.post(
        "/session", response_model=SessionInfo, tags=["page"], responses=errors, summary="Sign in"
    )
    async def sign_in(body: SignIn, request: Request) -> Response:
        _csrf(request)  # no login CSRF: a cross-site form cannot sign the browser in
        caller = await request.app.state.auth.caller(request, body.key)
        if "read" not in caller.scopes:
            raise ApiError(403, "forbidden", "this API key lacks the 'read' scope")
        response = Response(_info(caller).model_dump_json(), media_type="application/json")
        response.set_cookie(
            SESSION_COOKIE,
            body.key,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.get(
        "/session",
        response_model=SessionInfo,
        tags=["page"],
        responses={503: {"model": ErrorBody}},
        summary="Who is signed in (200 either way: the page asks before it knows)",
    )
    async def session(request: Request) -> Response:
        key = request.cookies.get(SESSION_COOKIE) or None
        try:
            caller = await request.app.state.auth.caller(request, key)
        except ApiError as exc:
            if exc.status != 401:
                raise
            # No session (nothing to say), or one whose key no longer works (say why, and
            # drop the cookie).
            info = SessionInfo(signed_in=False, message=exc.message if key else None)
            response = Response(info.model_dump_json(), media_type="application/json")
            if key:
                _clear(response, request)
            return response
        if "read" not in caller.scopes:
            info = SessionInfo(signed_in=False, message="this API key lacks the 'read' scope")
        else:
            info = _info(caller)
        return Response(info.model_dump_json(), media_type="application/json")

    @app.delete(
        "/session",
        status_code=204,
        tags=["page"],
        responses={403: {"model": ErrorBody, "description": "no X-Requested-With header"}},
        summary="Sign out",
    )
    async def sign_out(request: Request) -> Response:
        _csrf(request)
        response = Response(status_code=204)
        _clear(response, request)
        return response


__all__ = ["STATIC_DIR", "SessionInfo", "SignIn", "install"]
