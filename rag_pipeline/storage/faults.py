"""Fault injection for crash tests: ``RAG_FAULT=<point>`` kills this process with SIGKILL when
execution reaches that point, exactly as an OOM killer or a lost node would. Unset, it costs an
attribute lookup. Points: after_stage (a batch is staged), after_vectors (LanceDB written, DuckDB
not committed), mid_insert (some batches inserted in the open DuckDB transaction)."""

from __future__ import annotations

import os
import signal

from rag_pipeline.settings import Settings


def fault_point(settings: Settings, name: str) -> None:
    if settings.fault == name:
        os.kill(os.getpid(), signal.SIGKILL)
