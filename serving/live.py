"""The snapshot a server answers from, followed as it is promoted.

``LiveSearcher`` is what the HTTP app holds: ``acquire()`` lends the current ``Searcher`` for
one request. A follower thread checks the PROMOTED pointer (CURRENT while nothing is promoted)
every ``RAG_SNAPSHOT_POLL_S`` seconds, a ``stat`` of the pointer file unless it changed. When it
names another snapshot, the follower

1. takes a lease on it (``rag_pipeline.snapshot.leases``: retention never drops a leased
   snapshot), opens it beside the served one and warms it (one small query per available axis);
2. swaps it in under a lock: requests that start after the swap get the new searcher;
3. retires the old one: requests that hold it finish on it, and the last one out closes it and
   releases its lease.

A snapshot that fails to open or warm (model mismatch, missing table, unreadable manifest) is
not served: the old one keeps answering, ``status()`` (``/health``) shows the error and the
failed id, and the log says so once per failed id. The same id is tried again after
``RETRY_FAILED_S`` seconds, or at once when the pointer file is written again. Each poll also
refreshes the heartbeat of every lease this process holds.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_pipeline.settings import Settings
from rag_pipeline.snapshot.leases import Lease
from serving.errors import SearchError
from serving.models import SearchRequest
from serving.searcher import Searcher

log = logging.getLogger(__name__)

POINTERS = ("PROMOTED", "CURRENT")  # the first that exists is followed
RETRY_FAILED_S = 30.0  # a snapshot that failed to open is tried again after this long
WARM_QUERY = "warm search snapshot"


class SnapshotUnavailable(SearchError):
    """No snapshot is open (none published yet, or the last one failed to open)."""


@dataclass(eq=False)
class _Served:
    """One open snapshot: its searcher, its lease and the requests using it."""

    searcher: Searcher
    lease: Lease | None
    opened_at: float
    open_seconds: float
    in_flight: int = 0
    retired_at: float | None = None
    closed: bool = False

    @property
    def snapshot_id(self) -> str:
        return self.searcher.manifest.snapshot_id


def warm(searcher: Searcher) -> None:
    """One cheap query per available axis: loads the indexes, the query encoders' first
    batch and the table's fragments before the snapshot takes traffic. Raises what the
    query raises (a broken snapshot is not swapped in)."""
    tenants = searcher.tenants
    if not tenants:  # an empty snapshot: nothing to warm
        return
    who = searcher.operator_principal(tenants[0])
    for axis in searcher.available_axes:
        searcher.search(SearchRequest(query=WARM_QUERY, k=1, axes=[axis]), who)


class LiveSearcher:
    """The served snapshot, swapped for the promoted one while requests keep flowing.

    ``start()`` opens the snapshot (errors are reported, never raised) and starts the follower;
    ``acquire()`` lends the current searcher to one request; ``status()`` is what ``/health``
    shows; ``close()`` stops following and closes every searcher once its requests finished.
    ``poll_s`` overrides ``settings.snapshot_poll_s``; ``open_kw`` go to
    ``Searcher.from_settings`` (``pointer=`` follows that pointer only, ``snapshot_id=`` pins
    one snapshot).
    """

    def __init__(self, settings: Settings, *, poll_s: float | None = None, **open_kw: Any):
        self.settings = settings
        self.poll_s = float(poll_s if poll_s is not None else settings.snapshot_poll_s)
        self._pinned: str | None = open_kw.pop("snapshot_id", None)
        pointer = open_kw.pop("pointer", None)
        self._pointers: tuple[str, ...] = (pointer,) if pointer else POINTERS
        self._open_kw = open_kw
        self._lock = threading.Lock()
        self._current: _Served | None = None
        self._draining: list[_Served] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # follower state (written by whoever runs _check, under _check_lock)
        self._check_lock = threading.Lock()
        self._ptr_key: tuple | None = None
        self._ptr_id: str | None = None
        self._ptr_name: str | None = None
        self._ptr_rewritten = False  # the pointer file was (re)written since the last check
        self._last_check: float | None = None
        self._last_swap: float | None = None
        self._swaps = 0
        self._error: str | None = None
        self._error_at: float | None = None
        self._failed_id: str | None = None
        self._logged_failures: set[str] = set()
        self._lease_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the served snapshot if there is one and start following the pointer. A missing
        or broken snapshot is reported by ``status()`` and ``acquire()``, never raised here
        (the server still starts, and serves once a good snapshot is promoted)."""
        if self._thread is not None or self._closed:
            return
        self._check()
        self._thread = threading.Thread(target=self._follow, name="snapshot-follower", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop following; close every searcher whose requests are done (the others close when
        their last request finishes) and release their leases."""
        self._closed = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(10.0, 2 * self.poll_s))
        with self._lock:
            entries = [e for e in (self._current, *self._draining) if e is not None]
            self._current = None
            now = time.time()
            to_close = []
            for e in entries:
                e.retired_at = e.retired_at or now
                if e.in_flight == 0 and not e.closed:
                    e.closed = True
                    to_close.append(e)
            self._draining = [e for e in entries if not e.closed]
        for e in to_close:
            self._close_entry(e)

    # -- requests ------------------------------------------------------------------------------
    @contextmanager
    def acquire(self) -> Iterator[Searcher]:
        """The current searcher, for the duration of one request. The searcher stays open
        (and its snapshot leased) until every request that acquired it has finished, even if a
        newer snapshot was swapped in meanwhile."""
        with self._lock:
            entry = self._current
            if entry is None:
                raise SnapshotUnavailable(
                    "live searcher is closed"
                    if self._closed
                    else self._error or "no snapshot has been published yet"
                )
            entry.in_flight += 1
        try:
            yield entry.searcher
        finally:
            with self._lock:
                entry.in_flight -= 1
                close_now = (
                    entry.retired_at is not None and entry.in_flight == 0 and not entry.closed
                )
                if close_now:
                    entry.closed = True
                    self._draining = [e for e in self._draining if e is not entry]
            if close_now:
                self._close_entry(entry)

    def current_snapshot_id(self) -> str | None:
        """The snapshot requests acquire now (no I/O; for cache keys)."""
        cur = self._current
        return cur.snapshot_id if cur is not None else None

    # -- health --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``/health`` shows: the served snapshot, its age, in-flight requests, the lease,
        the last poll and the last error. No absolute paths."""
        now = time.time()
        with self._lock:
            cur = self._current
            draining = [
                {"snapshot_id": e.snapshot_id, "in_flight": e.in_flight, "retired_at": e.retired_at}
                for e in self._draining
            ]
            in_flight = cur.in_flight if cur is not None else 0
        created = cur.searcher.manifest.created_at.timestamp() if cur is not None else None
        lease = cur.lease if cur is not None else None
        return {
            "open": cur is not None,
            "snapshot_id": cur.snapshot_id if cur is not None else None,
            "snapshot_created_at": created,
            "snapshot_age_s": round(now - created, 3) if created is not None else None,
            "opened_at": cur.opened_at if cur is not None else None,
            "open_seconds": round(cur.open_seconds, 3) if cur is not None else None,
            "in_flight": in_flight,
            "draining": draining,
            "following": self._thread is not None and self._thread.is_alive(),
            "pointer": "snapshot_id" if self._pinned else self._ptr_name,
            "pointer_snapshot_id": self._pinned or self._ptr_id,
            "poll_s": self.poll_s,
            "last_check": self._last_check,
            "last_swap": self._last_swap,
            "swaps": self._swaps,
            "lease": None
            if lease is None
            else {
                "holder": lease.holder,
                "snapshot_id": lease.snapshot_id,
                "heartbeat": lease.heartbeat_at,
                "ttl_s": self.settings.lease_ttl_s,
            },
            "lease_error": self._lease_error,
            "error": self._error,
            "error_at": self._error_at,
            "failed_snapshot_id": self._failed_id,
        }

    # -- the follower --------------------------------------------------------------------------
    @property
    def _interval(self) -> float:
        # Heartbeats must come well within the lease TTL, whatever the poll interval.
        return max(0.01, min(self.poll_s, self.settings.lease_ttl_s / 3))

    def _follow(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._check()
            except Exception:
                log.exception("snapshot follower: unexpected error (still following)")

    def _resolve(self) -> str | None:
        """The snapshot id the followed pointer names (None: no pointer yet). Reads the file
        only when its stat changed."""
        if self._pinned:
            return self._pinned
        snapshots_dir = self.settings.snapshots_dir
        for name in self._pointers:
            path = snapshots_dir / name
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            key = (name, st.st_ino, st.st_mtime_ns, st.st_size)
            if key != self._ptr_key:
                try:
                    sid = path.read_text().strip()
                except FileNotFoundError:  # replaced between stat and read: next poll
                    return self._ptr_id
                self._ptr_key, self._ptr_id, self._ptr_name = key, sid or None, name
                self._ptr_rewritten = True
            return self._ptr_id
        self._ptr_key = self._ptr_id = self._ptr_name = None
        return None

    def _check(self) -> None:
        with self._check_lock:
            if self._closed:
                return
            now = time.time()
            self._last_check = now
            self._heartbeat()
            try:
                sid = self._resolve()
            except OSError as exc:
                self._fail(None, exc)
                return
            rewritten, self._ptr_rewritten = self._ptr_rewritten, False
            with self._lock:
                current = self._current.snapshot_id if self._current is not None else None
            if sid is None:
                if current is None and self._failed_id is None:
                    self._error = "no snapshot has been published yet"
                return
            if sid == current:
                if self._failed_id is not None:  # the pointer went back to what we serve
                    self._clear_error()
                return
            if (
                sid == self._failed_id
                and not rewritten
                and self._error_at is not None
                and now - self._error_at < RETRY_FAILED_S
            ):
                return  # a failed snapshot: again after a while, or when it is re-promoted
            self._swap_to(sid)

    def _swap_to(self, snapshot_id: str) -> None:
        t0 = time.perf_counter()
        snapshots_dir = self.settings.snapshots_dir
        lease = None
        try:
            # The lease comes first: retention checks leases right before it drops a table.
            lease = Lease.acquire(snapshots_dir, snapshot_id)
            self._lease_error = None
        except OSError as exc:  # a read-only data dir: serve, but say retention may not know
            self._lease_error = self._scrub(f"{type(exc).__name__}: {exc}")
            log.warning("could not lease snapshot %s (serving it anyway): %s", snapshot_id, exc)
        try:
            searcher = Searcher.from_settings(
                self.settings, snapshot_id=snapshot_id, **self._open_kw
            )
            try:
                warm(searcher)
            except BaseException:
                searcher.close()
                raise
        except Exception as exc:
            if lease is not None:
                lease.release()
            self._fail(snapshot_id, exc)
            return
        entry = _Served(
            searcher, lease, opened_at=time.time(), open_seconds=time.perf_counter() - t0
        )
        old: _Served | None
        with self._lock:
            if self._closed:  # close() ran while this one was opening
                old, close_old = entry, True
            else:
                old, self._current = self._current, entry
                close_old = old is not None and old.in_flight == 0
                if old is not None:
                    old.retired_at = entry.opened_at
                    if close_old:
                        old.closed = True
                    else:
                        self._draining.append(old)
                    self._swaps += 1
                self._last_swap = entry.opened_at
                self._clear_error()  # with the swap: status() never shows one without the other
        if close_old and old is not None:
            self._close_entry(old)
        if old is entry:
            return
        log.info(
            "serving snapshot %s (opened and warmed in %.2f s; was %s)",
            snapshot_id,
            entry.open_seconds,
            old.snapshot_id if old is not None else "none",
        )

    def _heartbeat(self) -> None:
        with self._lock:
            leases = [
                e.lease
                for e in (self._current, *self._draining)
                if e is not None and e.lease is not None and not e.closed
            ]
        for lease in leases:
            try:
                lease.heartbeat()
            except OSError as exc:
                msg = self._scrub(f"{type(exc).__name__}: {exc}")
                if msg != self._lease_error:
                    log.warning(
                        "could not refresh the lease on snapshot %s: %s", lease.snapshot_id, exc
                    )
                self._lease_error = msg

    def _close_entry(self, entry: _Served) -> None:
        try:
            entry.searcher.close()
        finally:
            if entry.lease is not None:
                entry.lease.release()
        log.info("closed snapshot %s (retired, no requests left)", entry.snapshot_id)

    # -- errors --------------------------------------------------------------------------------
    def _fail(self, snapshot_id: str | None, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        with self._lock:
            serving = self._current.snapshot_id if self._current is not None else None
        key = snapshot_id or msg
        if key not in self._logged_failures:
            self._logged_failures.add(key)
            log.error(
                "snapshot %s could not be opened; %s: %s",
                snapshot_id or "(pointer)",
                f"still serving {serving}" if serving else "nothing to serve",
                msg,
            )
        else:
            log.debug("snapshot %s still fails: %s", snapshot_id, msg)
        self._error, self._error_at = self._scrub(msg), time.time()
        self._failed_id = snapshot_id

    def _clear_error(self) -> None:
        self._error = self._error_at = self._failed_id = None
        self._logged_failures.clear()

    def _scrub(self, message: str) -> str:
        """No absolute paths in what ``/health`` shows: the data dir becomes ``$RAG_DATA_DIR``,
        any other absolute path its last component."""
        data_dir = Path(self.settings.data_dir)
        for root in {str(data_dir.resolve()), str(data_dir.absolute())}:
            message = message.replace(root, "$RAG_DATA_DIR")
        return re.sub(r"(?<![\w.$])/(?:[^\s'\"/:,;()]+/)+", ".../", message)
