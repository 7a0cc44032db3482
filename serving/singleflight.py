"""Single flight: identical concurrent requests run once; the others wait for its result.

Per worker process (its event loop). The work runs as its own task, so a client that hangs up
cancels only its own wait, never the shared search the others are waiting for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}
        self.shared = 0  # calls answered by another call's work

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(``fn()``'s result, whether it was shared: another call with ``key`` ran it).
        Exceptions reach every waiter."""
        flight = self._flights.get(key)
        if flight is not None:
            self.shared += 1
            return await asyncio.shield(flight), True
        task = asyncio.ensure_future(fn())
        self._flights[key] = task

        def done(t: asyncio.Future[T]) -> None:
            if self._flights.get(key) is task:
                del self._flights[key]
            if not t.cancelled():
                t.exception()  # retrieved, even when every waiter has gone

        task.add_done_callback(done)
        return await asyncio.shield(task), False

    def __len__(self) -> int:
        return len(self._flights)
