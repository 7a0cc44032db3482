"""JSON log lines: one object per record, for ``rag-pipeline serve`` and the CLI
(``RAG_LOG_FORMAT=json``, the default; ``text`` for the classic format).

Each line has ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id`` (when
the record has one) and the record's structured ``fields`` (``extra={"fields": {...}}``; the
access log puts the request's key id, tenant, route, status, latency, cache outcome, snapshot
and query id there). Tracebacks go under ``exc``. Imports nothing of ours (the CLI sets it up
before anything slow is imported).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = {"ts", "level", "logger", "message", "exc"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid and rid != "-":
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                if k not in _RESERVED and v is not None:
                    out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_cli_logging(fmt: str = "json", level: int = logging.WARNING) -> None:
    """A stderr handler on the root logger (unless one is configured already): JSON lines or
    text."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


__all__ = ["JsonFormatter", "configure_cli_logging"]
