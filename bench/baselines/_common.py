"""Helpers the baselines share: URL clean-up, fresh names, a bounded worker pool."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")


def fresh_name(prefix: str = "bench") -> str:
    """A broker-side name no other run uses."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def strip_query(url: str) -> str:
    """``url`` without PyComms' query options (namespace, backend options)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def driver_url(url: str, scheme: str) -> str:
    """``url`` without its query and with ``scheme+driver`` reduced to ``scheme``."""
    parts = urlsplit(strip_query(url))
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


class Startable(Protocol):
    async def start(self, concurrency: int) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Startable)


async def started(session: S, concurrency: int) -> S:
    """``session`` after ``start``; if starting fails, closed again (freeing what was
    half made: connections, queues, tables) before the error propagates."""
    try:
        await session.start(concurrency)
    except BaseException:
        await session.close()
        raise
    return session


class WorkerPool(Generic[T]):
    """``size`` tasks taking items from an unbounded queue and awaiting ``handle``.

    The feeder is responsible for not fetching more than ``room()`` items ahead, which
    keeps in-flight work bounded exactly like a consumer's concurrency setting.
    """

    def __init__(self, size: int, handle: Callable[[T], Awaitable[None]]) -> None:
        self._handle = handle
        self._queue: asyncio.Queue[T] = asyncio.Queue()
        self._busy = 0
        self._size = size
        self._free = asyncio.Event()
        self._free.set()
        self._tasks = [asyncio.create_task(self._work()) for _ in range(size)]

    def room(self) -> int:
        return self._size - self._busy

    async def wait_room(self) -> int:
        while self._busy >= self._size:
            self._free.clear()
            await self._free.wait()
        return self._size - self._busy

    def put(self, item: T) -> None:
        self._busy += 1
        self._queue.put_nowait(item)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._handle(item)
            finally:
                self._busy -= 1
                self._free.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it, swallowing its cancellation."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Coalescer(Generic[T]):
    """Batches concurrent submissions into one ``flush`` call at a time.

    Callers await ``submit``; while one flush is in flight, new submissions gather and
    go together in the next. This is how a hand-written client pipelines the work of
    many concurrent tasks over one connection.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]]) -> None:
        self._flush = flush
        self._pending: list[tuple[Sequence[T], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[T]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await future

    async def _run(self) -> None:
        while self._pending:
            taken, self._pending = self._pending, []
            try:
                await self._flush([item for items, _ in taken for item in items])
            except BaseException as exc:
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("flush cancelled"))
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, future in taken:
                    if not future.done():
                        future.set_result(None)

    async def close(self) -> None:
        await cancel(self._task)
