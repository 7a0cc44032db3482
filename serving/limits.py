"""Admission control for blocking work: at most N searches at once, at most Q waiting, each
request within its time limit.

A search is blocking (torch, Lance), so it runs on a thread pool of exactly N threads. A request
waits for one of the N slots while fewer than Q others wait (beyond that: 503 ``overloaded``
with ``Retry-After``); waiting and running together must finish within the request timeout
(else 504 ``timeout``). A timed-out search cannot be interrupted: its thread finishes, and its
slot stays taken until then, so timed-out work never piles up beyond N threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from serving.http_errors import ApiError

T = TypeVar("T")


class Admission:
    def __init__(self, max_concurrent: int, max_queued: int, timeout_s: float):
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrent, thread_name_prefix="api-search"
        )
        self._sem: asyncio.Semaphore | None = None
        self._waiting = 0
        self.running = 0

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # made on the serving loop, on first use
            self._sem = asyncio.Semaphore(self.max_concurrent)
        return self._sem

    def retry_after(self) -> str:
        return str(max(1, math.ceil(self.timeout_s / 4)))

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        sem = self._semaphore()
        if sem.locked():
            if self._waiting >= self.max_queued:
                raise ApiError(
                    503,
                    "overloaded",
                    "too many requests in progress; retry later",
                    headers={"Retry-After": self.retry_after()},
                )
            self._waiting += 1
            try:
                await asyncio.wait_for(sem.acquire(), timeout=self.timeout_s)
            except TimeoutError:
                raise ApiError(504, "timeout", "the request timed out waiting for a slot") from None
            finally:
                self._waiting -= 1
        else:
            await sem.acquire()
        self.running += 1

        def release(_: object) -> None:
            self.running -= 1
            sem.release()

        try:
            ctx = contextvars.copy_context()  # the request id, for log records in the thread
            future = loop.run_in_executor(self._executor, ctx.run, fn)
        except BaseException:
            release(None)
            raise
        future.add_done_callback(release)
        remaining = deadline - loop.time()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(remaining, 0.001))
        except TimeoutError:
            raise ApiError(
                504, "timeout", f"the request took longer than {self.timeout_s:g} s"
            ) from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
