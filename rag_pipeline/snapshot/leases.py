"""Reader leases on snapshots: a snapshot a live reader holds is never dropped by retention.

A reader (a server process, an eval, a notebook) that opens a snapshot writes a small heartbeat
file and refreshes it while it reads::

    <snapshots_dir>/leases/<snapshot_id>/<host>-<pid>-<uuid>.lease
    {"snapshot_id": ..., "holder": ..., "host": ..., "pid": ..., "pid_space": ...,
     "started": <epoch s>, "heartbeat": <epoch s>}

and removes it when it lets go. Retention (``rag_pipeline.snapshot.build._retain``) keeps every
snapshot with a *fresh* lease. A lease is stale when

* its heartbeat (the newer of the file's mtime and the recorded time) is older than the TTL, or
* it was written on this machine, in this PID namespace, since this boot (same ``host`` and
  ``pid_space``), and its process is gone: a killed server frees its snapshots at once on its
  own machine; on another machine it frees them when the TTL runs out.

Nothing assumes one process or one machine: each holder has its own file (no read-modify-write,
no lock), writes are atomic renames, and any process may reap stale files. The data dir must be
shared for several machines to serve from it (NFS, a shared volume); where the snapshots live in
object storage or the catalog moves to a server database, the same records belong there instead
(a row per lease in PostgreSQL with ``heartbeat = now()``; an object per lease under the
snapshot's prefix): the rules above do not change. Clocks of the machines must agree to well
within the TTL.

This module writes nothing but lease files and imports no writer: serving uses it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_pipeline.snapshot.schema import write_atomic

log = logging.getLogger(__name__)

LEASES = "leases"
SUFFIX = ".lease"


def leases_dir(snapshots_dir: Path, snapshot_id: str | None = None) -> Path:
    base = Path(snapshots_dir) / LEASES
    return base / snapshot_id if snapshot_id else base


def _pid_space() -> str:
    """This boot and PID namespace: two processes with the same pid in it are the same one."""
    parts = []
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return ":".join(parts)


HOST = socket.gethostname()
PID_SPACE = _pid_space()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class Lease:
    """One reader's hold on one snapshot. ``heartbeat()`` refreshes it, ``release()`` ends it;
    both are safe to call from any thread, and a released lease is never written again."""

    def __init__(self, snapshots_dir: Path, snapshot_id: str):
        self.snapshot_id = snapshot_id
        self.holder = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = leases_dir(snapshots_dir, snapshot_id) / f"{self.holder}{SUFFIX}"
        self.started = time.time()
        self.heartbeat_at: float | None = None
        self._lock = threading.Lock()
        self._released = False

    @classmethod
    def acquire(cls, snapshots_dir: Path, snapshot_id: str) -> Lease:
        lease = cls(snapshots_dir, snapshot_id)
        lease.heartbeat()
        return lease

    def heartbeat(self) -> None:
        """Write (or rewrite) the lease file with the time now. OSError propagates."""
        with self._lock:
            if self._released:
                return
            now = time.time()
            text = json.dumps(
                {
                    "snapshot_id": self.snapshot_id,
                    "holder": self.holder,
                    "host": HOST,
                    "pid": os.getpid(),
                    "pid_space": PID_SPACE,
                    "started": self.started,
                    "heartbeat": now,
                }
            )
            for attempt in range(3):
                try:
                    write_atomic(self.path, text)
                    break
                except FileNotFoundError:  # a reaper removed the empty folder just now
                    if attempt == 2:
                        raise
            self.heartbeat_at = now

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # the last holder removes the snapshot's folder

    @property
    def released(self) -> bool:
        return self._released

    def info(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "snapshot_id": self.snapshot_id,
            "started": self.started,
            "heartbeat": self.heartbeat_at,
            "released": self._released,
        }


@dataclass
class LeaseRecord:
    path: Path
    snapshot_id: str
    holder: str
    heartbeat: float
    stale: bool
    reason: str | None


def read_lease(path: Path, ttl_s: float, now: float | None = None) -> LeaseRecord | None:
    """The lease file at ``path``, judged fresh or stale; None when it vanished meanwhile."""
    now = time.time() if now is None else now
    try:
        mtime = path.stat().st_mtime
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = {}  # unreadable: judged by its mtime alone
    try:
        beat = max(mtime, float(data.get("heartbeat") or 0.0))
    except (TypeError, ValueError):
        beat = mtime
    reason = None
    pid = data.get("pid")
    if (
        data.get("host") == HOST
        and data.get("pid_space") == PID_SPACE
        and isinstance(pid, int)
        and not pid_alive(pid)
    ):
        reason = f"process {pid} on {HOST} is gone"
    elif now - beat > ttl_s:
        reason = f"no heartbeat for {now - beat:.0f} s (TTL {ttl_s:g} s)"
    return LeaseRecord(
        path=path,
        snapshot_id=path.parent.name,
        holder=data.get("holder") or path.stem,
        heartbeat=beat,
        stale=reason is not None,
        reason=reason,
    )


def snapshot_leases(
    snapshots_dir: Path, snapshot_id: str, ttl_s: float, *, reap: bool = True
) -> list[LeaseRecord]:
    """Fresh leases on one snapshot; stale ones are deleted when ``reap``."""
    folder = leases_dir(snapshots_dir, snapshot_id)
    fresh = []
    for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        rec = read_lease(path, ttl_s)
        if rec is None:
            continue
        if not rec.stale:
            fresh.append(rec)
        elif reap:
            log.info("expiring lease %s on snapshot %s: %s", rec.holder, snapshot_id, rec.reason)
            path.unlink(missing_ok=True)
    if reap and not fresh:
        with contextlib.suppress(OSError):  # not empty (a lease just written) or already gone
            folder.rmdir()
    return fresh


def live_leases(
    snapshots_dir: Path, ttl_s: float, *, reap: bool = True
) -> dict[str, list[LeaseRecord]]:
    """snapshot_id -> its fresh leases, for every leased snapshot; stale ones are reaped."""
    base = leases_dir(snapshots_dir)
    out: dict[str, list[LeaseRecord]] = {}
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        if folder.is_dir():
            fresh = snapshot_leases(snapshots_dir, folder.name, ttl_s, reap=reap)
            if fresh:
                out[folder.name] = fresh
    return out
