"""The catalog writer lock.

DuckDB admits one process at a time to a database file (a second open, even read-only, fails
on its lock), and LanceDB commits of delete/merge_insert conflict when run concurrently. So every
process that opens the catalog or writes the evidence vector store first takes this exclusive
``flock`` and holds it for one short transaction. Waiters block instead of failing; the kernel
drops the lock when a holder dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockTimeout(TimeoutError):
    pass


@contextmanager
def writer_lock(path: Path, timeout_s: float = 600.0, poll_s: float = 0.05) -> Iterator[float]:
    """Hold the exclusive catalog lock; yields the seconds spent waiting for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() - start > timeout_s:
                    raise LockTimeout(
                        f"catalog lock {path} not free after {timeout_s:.0f}s"
                    ) from exc
                time.sleep(poll_s)
        waited = time.monotonic() - start
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious operator
        yield waited
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
