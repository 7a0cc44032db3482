"""API key authentication: ``Authorization: Bearer rag_...`` or ``X-API-Key: rag_...`` ->
the key's ``Principal`` (tenant, ACL groups) and scopes.

The search page (``serving.page``) sends the same key in its HttpOnly session cookie
(``rag_session``, set by ``POST /session``). A header key wins over the cookie. A request that
changes state (any method but GET / HEAD / OPTIONS) authenticated by the cookie must carry
``X-Requested-With``: a cross-site form cannot set that header, and a cross-site script cannot
send it without a CORS preflight that the API refuses (CSRF protection on top of
``SameSite=Strict``).

401 ``unauthorized`` (with ``WWW-Authenticate: Bearer``) for a missing, malformed, unknown,
revoked or expired key; 403 ``forbidden`` for a key without the route's scope; 503
``key_store_unavailable`` when the store does not answer. Cached lookups do no I/O on the event
loop; a miss is read on a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from serving.http_errors import ApiError
from serving.keys import KEY_PATTERN, KeyInfo, KeyStore, KeyStoreError
from serving.principal import Principal

log = logging.getLogger("serving.auth")

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="`Authorization: Bearer rag_...` (an API key)",
)
api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="`X-API-Key: rag_...` (the same API key)",
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rag"'}

SESSION_COOKIE = "rag_session"
CSRF_HEADER = "X-Requested-With"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_key(request: Request) -> str | None:
    """The key of the page's session cookie; a state-changing request without the CSRF header
    is refused (403) rather than authenticated by a cookie the browser attached on its own."""
    key = request.cookies.get(SESSION_COOKIE)
    if not key:
        return None
    if request.method not in SAFE_METHODS and not request.headers.get(CSRF_HEADER):
        raise ApiError(
            403,
            "forbidden",
            f"a request signed in by the session cookie needs the {CSRF_HEADER} header",
        )
    return key


@dataclass(frozen=True)
class Caller:
    principal: Principal
    scopes: frozenset[str]
    key_id: str | None  # None: dev mode, keyless

    def as_seen_by(self, searcher: Any) -> Principal:
        """The principal to read with: the key's; in dev mode (no key) the operator's view of
        the tenant (every group on its units), as the CLI searches."""
        if self.key_id is None:
            return searcher.operator_principal(self.principal.tenant)
        return self.principal


class Authenticator:
    """Resolves a request's key; ``dev_principal`` (dev mode on loopback) answers keyless
    requests."""

    def __init__(self, keys: KeyStore | None, dev_principal: Principal | None = None):
        self.keys = keys
        self.dev_principal = dev_principal

    def _unauthorized(self, message: str) -> ApiError:
        return ApiError(401, "unauthorized", message, headers=dict(_CHALLENGE))

    async def caller(self, request: Request, key: str | None) -> Caller:
        if not key:
            if self.dev_principal is not None:
                request.state.tenant = self.dev_principal.tenant
                return Caller(self.dev_principal, frozenset({"read", "write", "admin"}), None)
            raise self._unauthorized(
                "an API key is required (Authorization: Bearer <key> or X-API-Key)"
            )
        if self.keys is None or not KEY_PATTERN.match(key):
            raise self._unauthorized("invalid API key")
        hit, info = self.keys.cached(key)
        if not hit:
            try:
                info = await anyio.to_thread.run_sync(self.keys.lookup, key)
            except KeyStoreError:
                log.error(
                    "request %s: key store unavailable", request.state.request_id, exc_info=True
                )
                raise ApiError(
                    503,
                    "key_store_unavailable",
                    "the API key store is unavailable",
                    headers={"Retry-After": "5"},
                ) from None
        if info is None:
            raise self._unauthorized("invalid API key")
        request.state.key_id = info.key_id
        request.state.tenant = info.tenant
        state = info.state(datetime.now(UTC))
        if state != "active":
            log.info("request %s: key %s is %s", request.state.request_id, info.key_id, state)
            raise self._unauthorized(f"API key {state}")
        self._touch(info)
        return Caller(info.principal(), frozenset(info.scopes), info.key_id)

    def _touch(self, info: KeyInfo) -> None:
        keys = self.keys
        if keys is not None and keys.needs_touch(info.key_id):
            asyncio.get_running_loop().run_in_executor(None, keys.touch, info.key_id)


def _key_of(credentials: HTTPAuthorizationCredentials | None, header_key: str | None) -> str | None:
    bearer_key = credentials.credentials if credentials is not None else None
    if (
        bearer_key
        and header_key
        and not hmac.compare_digest(bearer_key.encode(), header_key.encode())
    ):
        raise ApiError(
            401, "unauthorized", "two different API keys were sent", headers=dict(_CHALLENGE)
        )
    return bearer_key or header_key


def require(scope: str):
    """A dependency: the caller, who must hold ``scope``."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        header_key: Annotated[str | None, Depends(api_key_header)],
    ) -> Caller:
        auth: Authenticator = request.app.state.auth
        key = _key_of(credentials, header_key) or cookie_key(request)
        caller = await auth.caller(request, key)
        if scope not in caller.scopes:
            raise ApiError(403, "forbidden", f"this API key lacks the {scope!r} scope")
        return caller

    dependency.__name__ = f"require_{scope}"
    return dependency
