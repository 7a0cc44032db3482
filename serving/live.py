"""The snapshot a server answers from, followed as it is promoted.

``LiveSearcher`` is what the HTTP app holds: ``acquire()`` lends the current ``Searcher`` for
one request. This first version opens the PROMOTED (else CURRENT) snapshot at ``start()`` and
keeps it; following promotions (poll, warm, atomic swap, drain) and reader leases that
retention respects replace its internals behind the same interface.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rag_pipeline.settings import Settings
from serving.errors import SearchError
from serving.searcher import Searcher


class SnapshotUnavailable(SearchError):
    """No snapshot is open (none published yet, or the last one failed to open)."""


class LiveSearcher:
    def __init__(self, settings: Settings, **open_kw: Any):
        self.settings = settings
        self._open_kw = open_kw
        self._lock = threading.Lock()
        self._searcher: Searcher | None = None
        self._error: str | None = None
        self._opened_at: float | None = None

    def start(self) -> None:
        """Open the served snapshot if there is one; a missing or broken one is reported by
        ``status()`` and ``acquire()``, never raised here (the server still starts)."""
        try:
            searcher = Searcher.from_settings(self.settings, **self._open_kw)
        except (FileNotFoundError, SearchError, ValueError) as exc:
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            self._searcher, self._error, self._opened_at = searcher, None, time.time()

    @contextmanager
    def acquire(self) -> Iterator[Searcher]:
        """The current searcher, for the duration of one request."""
        with self._lock:
            searcher = self._searcher
        if searcher is None:
            raise SnapshotUnavailable(self._error or "no snapshot has been published yet")
        yield searcher

    def status(self) -> dict[str, Any]:
        with self._lock:
            s = self._searcher
            return {"open": s is not None,
                    "snapshot_id": s.manifest.snapshot_id if s is not None else None,
                    "opened_at": self._opened_at, "error": self._error}

    def close(self) -> None:
        with self._lock:
            searcher, self._searcher = self._searcher, None
        if searcher is not None:
            searcher.close()
