"""Running the API under uvicorn: start-up checks, bounded connections, logging.

* No anonymous access: the server refuses to start unless the key store has an active key,
  except ``dev=True`` on a loopback address (keyless requests act as ``RAG_TENANT``; it says so
  loudly). Dev mode on any other address is refused.
* Connections: at most ``RAG_MAX_CONNECTIONS`` per worker (uvicorn answers 503 beyond), an idle
  keep-alive connection is closed after ``RAG_KEEPALIVE_S``, and so is a connection that has not
  sent a complete request head within that time (uvicorn alone would keep a silent connection
  open forever).
* Graceful shutdown (SIGTERM / SIGINT): stop accepting, let in-flight requests finish for up to
  ``RAG_SHUTDOWN_GRACE_S``, then close the snapshot and the key store.
* Logs: the access log is ours (``serving.access``: request id, method, path, status, time, key
  id); uvicorn's, which would print query strings, is off. Keys are never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import logging.config
import socket
from typing import Any

import uvicorn

from rag_pipeline.settings import Settings

log = logging.getLogger("serving.server")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: its default protocol, without the head timeout
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class ServeRefused(RuntimeError):
    """The server will not start with this configuration."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """httptools' protocol with a deadline for each request head (the keep-alive time):
        from the connection's start, and again from each request's first byte."""

        _head_timer: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

    HTTP_PROTOCOL: Any = BoundedHttpToolsProtocol
else:
    HTTP_PROTOCOL = "auto"


def log_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """``fmt``: ``json`` (one object per line: ``rag_pipeline.jsonlog``) or ``text``."""
    formatter: dict[str, Any] = (
        {"()": "rag_pipeline.jsonlog.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "serving.middleware.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "serving": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def check_startup(settings: Settings, host: str, *, workers: int = 1, dev: bool = False) -> Any:
    """The key store to serve with (None: dev mode without one); ``ServeRefused`` when the
    configuration would serve anonymously where it must not."""
    from serving.keys import KeyStore, KeyStoreError

    if workers < 1:
        raise ServeRefused("--workers must be at least 1")
    if dev:
        if not is_loopback(host):
            raise ServeRefused(
                f"--dev serves without API keys: only on a loopback address "
                f"(127.0.0.1, ::1, localhost), not {host!r}"
            )
        if workers > 1:
            raise ServeRefused("--dev runs one worker")
        try:
            return KeyStore.from_settings(settings)
        except KeyStoreError:
            return None
    try:
        keys = KeyStore.from_settings(settings)
        active = keys.active_count()
    except KeyStoreError as exc:
        raise ServeRefused(f"the API key store does not answer: {exc}") from exc
    if active == 0:
        keys.close()
        raise ServeRefused(
            f"no active API key in the key store ({keys.describe()}): create one with "
            "`rag-pipeline keys create --tenant T --scopes read`, or try the API keyless "
            "with `rag-pipeline serve --dev` on 127.0.0.1"
        )
    return keys


DEV_BANNER = (
    "\n" + "!" * 78 + "\n!! DEV MODE: API keys are NOT required. Keyless requests are "
    "served as tenant {tenant!r}.\n!! Listening on {host} only. Never use --dev in "
    "production.\n" + "!" * 78
)


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    workers: int = 1,
    dev: bool = False,
    log_level: str = "info",
) -> None:
    """Run the API until SIGTERM / SIGINT (blocking)."""
    keys = check_startup(settings, host, workers=workers, dev=dev)
    logging.config.dictConfig(log_config(log_level.upper(), settings.log_format))
    common: dict[str, Any] = dict(
        host=host,
        port=port,
        http=HTTP_PROTOCOL,
        lifespan="on",
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keepalive_s,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        access_log=False,
        server_header=False,
        log_config=log_config(log_level.upper(), settings.log_format),
        h11_max_incomplete_event_size=16 * 1024,
    )
    if dev:
        print(DEV_BANNER.format(tenant=settings.tenant_id, host=host), flush=True)
        log.warning(
            "DEV MODE: serving without API keys on %s:%d as tenant %r",
            host,
            port,
            settings.tenant_id,
        )
    if workers > 1:
        if keys is not None:
            keys.close()
        # Each worker process builds its own app (and opens its own snapshot and models).
        uvicorn.run("serving.app:app_from_env", factory=True, workers=workers, **common)
        return
    from serving.app import create_app

    app = create_app(settings, keys=keys, dev=dev)
    uvicorn.run(app, **common)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
