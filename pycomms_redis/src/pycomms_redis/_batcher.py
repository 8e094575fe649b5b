"""Group commit: concurrent callers share one round trip.

While one batch is on the wire the next accumulates; when the first returns the whole
accumulated batch goes out at once. An idle caller pays one round trip, and under load
the batch size grows by itself up to ``max_batch`` items, with no timer and no added
latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from pycomms.spi import stop_tasks

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R]]]
"""Sends items in one round trip; returns one result per item, in order."""


class Batcher(Generic[T, R]):
    """Coalesces `submit` calls into calls of ``flush``, one at a time."""

    def __init__(self, flush: Flush[T, R], max_batch: int, name: str) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._name = name
        self._queue: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._task: asyncio.Task[None] | None = None
        self._abort: Callable[[], BaseException] | None = None

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Send ``items`` with whatever else is waiting; return their results.

        Cancelling the caller does not unsend items already on the wire.
        """
        return await self.enqueue(items)

    def enqueue(self, items: Sequence[T]) -> asyncio.Future[list[R]]:
        """Queue ``items`` for the next round trip; the future gets their results."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)
        return future

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                items = [item for group, _ in batch for item in group]
                try:
                    results = list(await self._flush(items))
                except asyncio.CancelledError:
                    for _, future in batch:
                        self._fail(future)
                    raise
                except BaseException as exc:  # handed to every caller of this batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                offset = 0
                for group, future in batch:
                    if not future.done():
                        future.set_result(results[offset : offset + len(group)])
                    offset += len(group)
        finally:
            self._task = None
            for _, future in self._queue:
                self._fail(future)
            self._queue.clear()

    def _fail(self, future: asyncio.Future[list[R]]) -> None:
        if future.done():
            return
        if self._abort is None:
            future.cancel()
        else:
            future.set_exception(self._abort())

    def _take(self) -> list[tuple[Sequence[T], asyncio.Future[list[R]]]]:
        """The next batch: whole submissions, at most ``max_batch`` items (or one bigger submission)."""
        batch: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        size = 0
        while self._queue:
            items, future = self._queue[0]
            if future.done():  # its caller was cancelled before it went out
                self._queue.pop(0)
                continue
            if batch and size + len(items) > self._max_batch:
                break
            batch.append(self._queue.pop(0))
            size += len(items)
        return batch

    async def close(self, within: float, error: Callable[[], BaseException]) -> bool:
        """Wait up to ``within`` seconds for the batches in flight and queued; then stop
        them, and every caller still waiting gets ``error()``. True if all were sent."""
        task = self._task
        if task is None:
            return True
        done, _ = await asyncio.wait({task}, timeout=within)
        if done:
            return True
        self._abort = error
        await stop_tasks([task], recancel_after=0.05, give_up_after=0.5)
        return False
