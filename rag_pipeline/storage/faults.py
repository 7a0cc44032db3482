"""Fault injection for crash tests: ``RAG_FAULT=<point>`` kills this process with SIGKILL when
execution reaches that point, exactly as an OOM killer or a lost node would. Unset, it costs an
attribute lookup. Points: after_stage (a batch is staged), after_vectors (LanceDB written, DuckDB
not committed), mid_insert (some batches inserted in the open DuckDB transaction). And one that
hangs instead: hang_parse:<file name> (a parser stuck on that file)."""

from __future__ import annotations

import os
import signal
import time

from rag_pipeline.settings import Settings


def fault_point(settings: Settings, name: str) -> None:
    if settings.fault == name:
        os.kill(os.getpid(), signal.SIGKILL)


def hang_point(fault: str | None, name: str, subject: str) -> None:
    """``RAG_FAULT=hang_<name>:<subject>`` blocks forever at that point for that one subject
    (a file name): a parser stuck on one input, for the per-file time limit's tests."""
    if fault is not None and fault == f"hang_{name}:{subject}":
        while True:
            time.sleep(3600)
