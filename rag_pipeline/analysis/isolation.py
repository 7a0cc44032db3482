"""Per-file limits on a parser: wall time and memory, enforced by running it in a child process.

A parser stuck in a loop or on a pathological input cannot be stopped from a thread (Python has
no way to kill one), and a parser that allocates without bound takes the whole run down with
it. So text analyzers run in one long-lived child process per partition, fed one file at a
time over a pipe: past ``timeout_s`` the child is killed (SIGKILL) and the file becomes a
``Timeout`` dead letter; the child's address space is capped (RLIMIT_AS) so an allocation past
``memory_mb`` raises MemoryError there (a ``MemoryLimit`` dead letter) instead of swapping the
machine. The next file gets a fresh child.

The child is a plain ``python -m rag_pipeline.analysis.isolation`` process, not a
multiprocessing one: a fork of the run process would copy locks held by its other threads
(DuckDB, torch, Dagster), and multiprocessing's spawn/forkserver re-import the caller's
``__main__`` (a script without a main guard would run again in the child).
"""

from __future__ import annotations

import atexit
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from rag_pipeline import errors
from rag_pipeline.analysis.limits import ParseLimits

STARTUP_TIMEOUT_S = 120.0


def _serve(conn_in: Connection, conn_out: Connection, memory_mb: int) -> None:
    """Child: run one call at a time until the pipe closes."""
    # Imported before the cap, so the cap bounds parsing, not the interpreter's start.
    import rag_pipeline.analysis.text_task  # noqa: F401

    if memory_mb:
        cap = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    conn_out.send(("ready", None))
    while True:
        try:
            fn, args = conn_in.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", fn(*args))
        except MemoryError:
            reply = ("memory", None)
        except Exception as exc:  # sent back, re-raised (and classified) in the parent
            reply = ("error", exc)
        try:
            conn_out.send(reply)
        except MemoryError:
            conn_out.send(("memory", None))
        except Exception:  # an unpicklable result or exception: its class and message suffice
            conn_out.send(("crash", f"{type(reply[1]).__name__}: {reply[1]}"[:2000]))


class ParserProcess:
    """One child that runs ``fn(*args)`` under the limits; replaced after a kill."""

    def __init__(self, limits: ParseLimits):
        self.limits = limits
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self.restarts = 0
        self.owner_pid = os.getpid()  # a forked copy must not talk over its parent's pipes
        self._lock = threading.Lock()  # one file at a time per child

    def __enter__(self) -> ParserProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> tuple[Connection, Connection]:
        if self._proc is None or self._send is None or self._recv is None:
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rag_pipeline.analysis.isolation",
                    str(to_child_r),
                    str(from_child_w),
                    str(self.limits.memory_mb),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            os.close(to_child_r)
            os.close(from_child_w)
            self._send = Connection(to_child_w, readable=False)
            self._recv = Connection(from_child_r, writable=False)
            # A file's clock starts once the child is up: on a loaded machine the interpreter's
            # start alone can take seconds, and that is no file's fault.
            try:
                ready = self._recv.poll(STARTUP_TIMEOUT_S) and self._recv.recv()[0] == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                self.close(kill=True)
                raise RuntimeError(
                    f"the parser process did not start within {STARTUP_TIMEOUT_S:g} s"
                )
        return self._send, self._recv

    def _kill(self) -> None:
        self.restarts += 1
        self.close(kill=True)

    def call(self, fn: Callable[..., Any], *args: Any, subject: str = "") -> Any:
        """``fn(*args)`` in the child; its exceptions are re-raised here. Raises errors.Timeout
        past the time limit, errors.MemoryLimit past the memory cap, errors.ParserCrashed when
        the child dies."""
        with self._lock:
            return self._call(fn, args, subject)

    def _call(self, fn: Callable[..., Any], args: tuple, subject: str) -> Any:
        send, recv = self._start()
        try:
            send.send((fn, args))
            ready = recv.poll(self.limits.timeout_s)
            if ready:
                status, value = recv.recv()
        except (EOFError, OSError) as exc:
            code = self._proc.poll() if self._proc is not None else None
            self._kill()
            raise errors.ParserCrashed(f"{subject}: the parser process died (exit {code})") from exc
        if not ready:
            self._kill()
            raise errors.Timeout(
                f"{subject}: parsing ran past {self.limits.timeout_s:g} s and was stopped"
            )
        if status == "ok":
            return value
        if status == "memory":
            self._kill()  # its heap may be fragmented near the cap: start clean
            raise errors.MemoryLimit(
                f"{subject}: parsing needed more than {self.limits.memory_mb} MiB"
            )
        if status == "crash":
            raise RuntimeError(value)
        raise value

    def close(self, kill: bool = False) -> None:
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()  # the child sees EOF and exits
        if self._proc is not None:
            if kill:
                self._proc.kill()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = self._send = self._recv = None


_shared: ParserProcess | None = None


def shared_parser(limits: ParseLimits) -> ParserProcess:
    """This process's parser child, reused across partitions (an in-process materialize runs
    every partition in one process: one interpreter start, not one per partition); a new one
    when the limits change."""
    global _shared
    if _shared is None or _shared.limits != limits or _shared.owner_pid != os.getpid():
        if _shared is not None and _shared.owner_pid == os.getpid():
            _shared.close()
        _shared = ParserProcess(limits)
        atexit.register(_shared.close)
    return _shared


if __name__ == "__main__":
    _serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
        int(sys.argv[3]),
    )
