"""Minimal JSON HTTP front for a ``Searcher`` (stdlib ``ThreadingHTTPServer``, no framework).

    GET /health
    GET /search?q=...&k=10&kind=document&folder=reports/2024&type=keyword&axes=fts,mv,vv
        optional: tenant, source, media_type, modified_after, modified_before (ISO 8601),
        tags (comma-separated content tags, all required), candidates. ``type`` is the query
        type (visual|keyword|semantic|balanced; default: classified from the query);
        ``folder`` is a folder prefix.
    GET /similar?asset_id=<sha256>&k=10[&axis=vv|mv][&tenant=..][&kind=..]
        units like that asset (image -> image on VV).
    GET /thumbnail/<asset_id>[?tenant=..]   the stored JPEG thumbnail of an image

Answers: 200 with the SearchResponse JSON; 400 ``{"error": ...}`` for bad input (unknown or
repeated parameter, failed validation); 503 for ``AxisUnavailable`` / ``ModelMismatch``; 404 for
other paths and unknown assets; 500 for anything unexpected.

``tenant`` names the principal's tenant (default ``default``), read with every group of that
tenant: this development server has no authentication (the FastAPI app takes the principal
from the API key).

Run: ``python -m serving.http [--host 127.0.0.1] [--port 8080]`` (settings from RAG_* env).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from serving.errors import AxisUnavailable, ModelMismatch
from serving.models import SearchFilters, SearchRequest, SimilarRequest
from serving.searcher import Searcher

log = logging.getLogger(__name__)

_REQUEST_PARAMS = {"q": "query", "k": "k", "tenant": "tenant", "type": "query_type",
                   "candidates": "candidates", "collapse": "collapse"}
_SIMILAR_PARAMS = {"asset_id": "asset_id", "k": "k", "tenant": "tenant", "axis": "axis",
                   "collapse": "collapse"}
_FILTER_PARAMS = {"kind": "kind", "folder": "folder_prefix", "source": "source",
                  "media_type": "media_type", "modified_after": "modified_after",
                  "modified_before": "modified_before"}


class BadRequest(ValueError):
    pass


def _parse(query_string: str, request_params: dict[str, str], required: str,
           list_params: dict[str, tuple[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """URL query string -> (request fields, filter fields); BadRequest on unknown, repeated or
    missing parameters. ``list_params``: name -> ("request" | "filters", field), comma lists."""
    params = parse_qs(query_string, keep_blank_values=True)
    req: dict[str, Any] = {}
    filters: dict[str, Any] = {}
    for name, values in params.items():
        if len(values) != 1:
            raise BadRequest(f"parameter {name!r} given {len(values)} times")
        value = values[0]
        if name in request_params:
            if value != "" or name == required:
                req[request_params[name]] = value
        elif name in _FILTER_PARAMS:
            if value != "":
                filters[_FILTER_PARAMS[name]] = value
        elif name in list_params:
            where, field = list_params[name]
            (req if where == "request" else filters)[field] = [
                v for v in value.split(",") if v.strip()]
        else:
            raise BadRequest(f"unknown parameter {name!r}; known: "
                             f"{sorted([*request_params, *_FILTER_PARAMS, *list_params])}")
    if request_params[required] not in req:
        raise BadRequest(f"missing required parameter {required!r}")
    return req, filters


def parse_search_params(query_string: str) -> tuple[SearchRequest, str]:
    """URL query string -> (validated SearchRequest, tenant) (BadRequest / ValidationError on
    bad input)."""
    req, filters = _parse(query_string, _REQUEST_PARAMS, "q",
                          {"axes": ("request", "axes"), "tags": ("filters", "tags")})
    tenant = req.pop("tenant", "default")
    if filters:
        req["filters"] = SearchFilters(**filters)
    return SearchRequest(**req), tenant


def parse_similar_params(query_string: str) -> tuple[SimilarRequest, str]:
    req, filters = _parse(query_string, _SIMILAR_PARAMS, "asset_id",
                          {"tags": ("filters", "tags")})
    tenant = req.pop("tenant", "default")
    if filters:
        req["filters"] = SearchFilters(**filters)
    return SimilarRequest(**req), tenant


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
                     for e in exc.errors())


# path -> (query-string parser, call on the searcher)
_ROUTES = {"/search": (parse_search_params, Searcher.search),
           "/similar": (parse_similar_params, Searcher.similar)}


def make_handler(searcher: Searcher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rag-serving/0.1"
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, payload: Any) -> None:
            body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            url = urlsplit(self.path)
            try:
                if url.path == "/health":
                    self._send(200, searcher.health())
                elif url.path in _ROUTES:
                    parse, run = _ROUTES[url.path]
                    try:
                        req, tenant = parse(url.query)
                        principal = searcher.operator_principal(tenant)
                    except BadRequest as exc:
                        self._send(400, {"error": str(exc)})
                        return
                    except ValidationError as exc:
                        self._send(400, {"error": _validation_message(exc)})
                        return
                    try:
                        self._send(200, run(searcher, req, principal).model_dump_json())
                    except KeyError as exc:  # similar: an asset the snapshot does not have
                        self._send(404, {"error": str(exc).strip("'\"")})
                elif url.path.startswith("/thumbnail/"):
                    tenant = parse_qs(url.query).get("tenant", ["default"])[0]
                    try:
                        principal = searcher.operator_principal(tenant)
                    except ValidationError as exc:
                        self._send(400, {"error": _validation_message(exc)})
                        return
                    path = searcher.thumbnail_file(url.path.rsplit("/", 1)[1], principal)
                    if path is None:
                        self._send(404, {"error": "no thumbnail for that asset"})
                        return
                    body = path.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Cache-Control", "public, max-age=31536000, immutable")
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self._send(404, {"error": f"no such endpoint {url.path!r}",
                                     "endpoints": ["/health", "/search", "/similar",
                                                   "/thumbnail/<asset_id>"]})
            except (AxisUnavailable, ModelMismatch) as exc:
                self._send(503, {"error": str(exc), "type": type(exc).__name__})
            except Exception as exc:  # keep the server up; the client gets a 500
                log.exception("search failed for %s", self.path)
                self._send(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s - %s", self.address_string(), fmt % args)

    return Handler


def make_server(searcher: Searcher, host: str = "127.0.0.1",
                port: int = 8080) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(searcher))
    server.daemon_threads = True
    return server


def serve(searcher: Searcher, host: str = "127.0.0.1", port: int = 8080, *,
          block: bool = True) -> ThreadingHTTPServer:
    """Serve ``searcher`` over HTTP. ``block=False`` serves from a daemon thread and returns the
    server at once (``server.server_address`` has the bound port; stop with ``shutdown()``)."""
    server = make_server(searcher, host, port)
    if block:
        try:
            server.serve_forever()
        finally:
            server.server_close()
    else:
        threading.Thread(target=server.serve_forever, name="rag-serving-http",
                         daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    from rag_pipeline.settings import Settings

    ap = argparse.ArgumentParser(description="Serve search over the current snapshot.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    searcher = Searcher.from_settings(Settings.from_env())
    log.info("serving snapshot %s on http://%s:%d", searcher.manifest.snapshot_id,
             args.host, args.port)
    serve(searcher, args.host, args.port)


if __name__ == "__main__":
    main()
