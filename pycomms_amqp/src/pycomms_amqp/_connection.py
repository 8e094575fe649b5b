"""A connection's socket, channels and closing steps, each with a bound.

aiormq builds the socket through `KeptSocket`, which keeps it, so that a link found
silent can be dropped at once (`KeptSocket.abort`) instead of waiting for a ``close-ok``
that never comes. Every wait here for the broker is bounded; a step that passes its
bound is cancelled, again while a driver swallows the cancellation (`finish_within`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL

from pycomms.spi import stop_tasks

from ._errors import DRIVER_ERRORS, describe

log = logging.getLogger("pycomms.amqp")


def _not_a_transport_error(record: logging.LogRecord) -> bool:
    """aiormq logs every failed TCP/TLS connect at ERROR before raising it; the link
    reports the same failure itself, as one line (`ConnectError`, or the reconnection log)."""
    return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_not_a_transport_error)

CLOSE_TIMEOUT = 1.0
"""Seconds a graceful close step (a channel, the connection, a goodbye) may wait for the
broker; past it the link is taken for silent and its socket dropped."""


async def finish_within(
    step: Coroutine[Any, Any, None], timeout: float, on_timeout: Callable[[], None] | None = None
) -> bool:
    """Run ``step`` for at most ``timeout`` seconds; true if it ended (its errors are
    raised). Else call ``on_timeout`` (which should make the step fail, such as
    `Link.abort`) and give the step `CLOSE_TIMEOUT` to end; then cancel it, again while
    a driver swallows the cancellation, for at most `CLOSE_TIMEOUT` more; return false."""
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done and on_timeout is not None:
            on_timeout()
            await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
    except asyncio.CancelledError:
        await stop_tasks([task], give_up_after=CLOSE_TIMEOUT)
        raise
    if done:
        task.result()
        return True
    if await stop_tasks([task], give_up_after=CLOSE_TIMEOUT):
        log.error("amqp: a close step ignores cancellation; abandoning it")
    return False


class KeptSocket(TransportFactory):
    """aiormq's TCP or TLS transport factory, keeping the socket it made for `abort`."""

    def __init__(self, scheme: str) -> None:
        self._inner: TransportFactory = TLSTransportFactory() if scheme == "amqps" else TCPTransportFactory()
        self._writer: asyncio.StreamWriter | None = None

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self._inner.create(url, **kwargs)
        self._writer = writer
        return reader, writer

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()


class KeptConnection(aio_pika.Connection):
    """aio-pika's connection, with aiormq building its socket through a `KeptSocket`."""

    def __init__(self, url: URL, socket: KeptSocket, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.kwargs["transport_factory"] = socket


async def driver_teardown() -> None:
    """Wait for the task aiormq spawns, without keeping it, to finish closing a connection
    (``close_writer_task``), so that a closed transport leaves nothing running."""
    current = asyncio.current_task()
    pending = [
        task
        for task in asyncio.all_tasks()
        if task is not current
        and not task.done()
        and getattr(task.get_coro(), "__qualname__", "").endswith("close_writer_task")
    ]
    if pending:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.gather(*pending, return_exceptions=True)


def alive(conn: AbstractConnection) -> bool:
    """Open and not lost (aio-pika's ``is_closed`` only reflects an explicit close)."""
    return not conn.is_closed and conn.connected.is_set()


CHANNEL_OPEN_TIMEOUT = 10.0
"""Bound of opening a channel; the callers' own deadlines are usually shorter."""
CHANNEL_CLOSE_TIMEOUT = 2.0
"""Bound of closing a channel or a connection outside of `Link.close`."""


async def open_channel(conn: AbstractConnection, *, publisher_confirms: bool = False) -> AbstractChannel:
    """A new channel on ``conn``; fails instead of waiting when ``conn`` is lost (aio-pika
    would wait for a plain connection to come back, which it never does)."""
    if not alive(conn):
        raise aiormq.exceptions.ConnectionChannelError("the connection is closed")
    async with asyncio.timeout(CHANNEL_OPEN_TIMEOUT):
        return await conn.channel(publisher_confirms=publisher_confirms)


async def close_quietly(closable: AbstractChannel | AbstractConnection, timeout: float = CHANNEL_CLOSE_TIMEOUT) -> None:
    """Close a channel or a connection (at most ``timeout`` seconds), logging instead of
    raising driver errors. aiormq closes a channel on its side when the wait is cut."""
    try:
        async with asyncio.timeout(timeout):
            await closable.close()
    except DRIVER_ERRORS as exc:
        log.debug("amqp: error while closing %s: %s", type(closable).__name__, describe(exc))
