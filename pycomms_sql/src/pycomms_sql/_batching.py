"""Group commit: concurrent callers' items written by one statement.

While one flush runs, new submissions queue up and go together in the next one, so
under load each round trip carries many messages, and an idle caller pays no wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Runs ``flush(items)`` over the items of concurrent `submit` calls.

    At most ``parallel`` flushes run at once, each with up to ``max_batch`` items
    (a larger single submission is flushed whole). ``submit`` returns when its items
    were flushed and raises what the flush raised. A caller cancelled before its
    items were taken withdraws them; after, they are written anyway.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], *, max_batch: int, parallel: int) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._parallel = parallel
        self._pending: list[tuple[Sequence[T], asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = 0

    async def submit(self, items: Sequence[T]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if self._running < self._parallel:
            # Counted here and uncounted by the task itself the moment it finds nothing
            # pending: a done-callback would run too late for a caller woken meanwhile.
            self._running += 1
            task = asyncio.create_task(self._run(), name="pycomms-sql:flush")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await future

    async def _run(self) -> None:
        try:
            await self._flush_pending()
        finally:
            self._running -= 1

    async def _flush_pending(self) -> None:
        while self._pending:
            batch: list[tuple[Sequence[T], asyncio.Future[None]]] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0][0]) <= self._max_batch):
                items, future = self._pending.pop(0)
                if not future.done():  # a cancelled caller withdrew its items
                    batch.append((items, future))
                    count += len(items)
            if not batch:
                continue
            try:
                await self._flush([item for items, _ in batch for item in items])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every flush under way has finished, or ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        while self._tasks:
            left = None if until is None else until - loop.time()
            if left is not None and left <= 0:
                return
            await asyncio.wait(set(self._tasks), timeout=left)
