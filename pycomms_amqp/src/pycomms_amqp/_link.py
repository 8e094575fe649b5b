"""The connection to the broker and its supervisor: reconnect, then restore everything.

aio-pika's robust connection keeps channels in a ``WeakSet`` and restores queues and
consumers by itself, with known gaps. Here the connection is a plain one and recovery is
explicit: when it drops, a supervisor task connects again with backoff and calls the
transport's ``on_connect`` callback, which declares the whole topology again and attaches
every receiver to a fresh channel. Channels of the old connection are never reused, so a
delivery tag of the old connection cannot settle a message of the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import AbstractChannel as RawChannel
from pamqp.commands import Basic
from yarl import URL

from pycomms import ConnectError, PublishError, PyCommsError

from ._errors import DRIVER_ERRORS, SETTLE_ERRORS, describe
from ._options import AmqpOptions
from ._publisher import Outgoing, Publisher

log = logging.getLogger("pycomms.amqp")

OnConnect = Callable[[AbstractConnection], Awaitable[None]]


class Link:
    """One AMQP connection kept alive by a supervisor task.

    ``publish`` shares one confirm-mode channel between all callers, through a
    `Publisher` that writes their messages together; ``admin`` gives a channel for
    declarations. Both wait while the connection is being re-established. Not
    thread-safe; all methods run on the bus's event loop.
    """

    def __init__(
        self, url: str, tls: ssl.SSLContext | None, options: AmqpOptions, connection_name: str, on_connect: OnConnect
    ) -> None:
        self._url = str(URL(url).with_query({"heartbeat": str(options.heartbeat)}))  # our options removed
        self._ssl = tls
        self._options = options
        self._name = connection_name
        self._on_connect = on_connect
        self._conn: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._publisher: Publisher | RawChannel | None = None
        self._publisher_wrapper: AbstractChannel | None = None
        self._admin: AbstractChannel | None = None
        self._channel_lock = asyncio.Lock()
        self.generation = 0
        """Incremented at every (re)connection; caches of declarations key on it."""

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def open(self) -> None:
        """Connect for the first time and run ``on_connect``; raise `ConnectError`."""
        try:
            async with asyncio.timeout(self._options.connect_timeout):
                conn = await self._connect()
                try:
                    await self._on_connect(conn)
                except BaseException:
                    await close_quietly(conn)
                    raise
        except TimeoutError as exc:
            raise ConnectError(f"amqp: connecting timed out after {self._options.connect_timeout}s") from exc
        except PyCommsError as exc:
            raise ConnectError(f"amqp: setting up failed: {exc}") from exc
        except DRIVER_ERRORS as exc:
            raise ConnectError(f"amqp: cannot connect: {describe(exc)}") from exc
        if not self._lost.is_set():  # else the supervisor reconnects at once
            self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"pycomms:amqp:{self._name}")

    async def _connect(self) -> AbstractConnection:
        conn = await aio_pika.connect(
            self._url,
            ssl_context=self._ssl,
            timeout=self._options.connect_timeout,
            client_properties={"connection_name": self._name},
        )
        self._lost.clear()
        self._conn = conn
        conn.close_callbacks.add(self._on_close)
        if not _alive(conn):  # lost before the callback was in place
            self._on_close(conn)
        self._publisher = None
        self._admin = None
        self.generation += 1
        return conn

    def _on_close(self, sender: Any, exc: BaseException | None = None) -> None:
        if sender is self._conn:
            self._ready.clear()
            self._lost.set()

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            if self._closing:
                return
            log.warning("amqp: connection %s lost; reconnecting", self._name)
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self._closing:
            conn: AbstractConnection | None = None
            try:
                async with asyncio.timeout(self._options.connect_timeout * 2):
                    conn = await self._connect()
                    await self._on_connect(conn)
            except asyncio.CancelledError:
                if conn is not None:
                    await close_quietly(conn)
                raise
            except SETTLE_ERRORS as exc:
                log.info("amqp: reconnecting failed (%s); next attempt in %.2fs", describe(exc), delay)
                if conn is not None:
                    await close_quietly(conn)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._options.reconnect_max_delay)
                continue
            if not _alive(conn) or self._lost.is_set():
                continue  # lost again while being restored
            self._ready.set()
            log.warning("amqp: connection %s restored", self._name)
            return

    async def connection(self) -> AbstractConnection:
        """The live connection, waiting for a reconnection if needed."""
        await self._ready.wait()
        assert self._conn is not None
        return self._conn

    async def admin(self) -> AbstractChannel:
        """A channel for declarations, reopened if a failed declaration closed it."""
        conn = await self.connection()
        async with self._channel_lock:
            if self._admin is None or self._admin.is_closed:
                self._admin = await open_channel(conn)
            return self._admin

    async def _publisher_channel(self) -> Publisher | RawChannel:
        """The `Publisher` of the live connection's confirm-mode channel (or the raw
        channel itself, with an aiormq that lacks what `Publisher` relies on)."""
        conn = await self.connection()
        publisher = self._publisher
        if publisher is not None and not publisher.is_closed:
            return publisher
        async with self._channel_lock:
            if self._publisher is None or self._publisher.is_closed:
                # None after a reconnection; else a channel of this connection that died,
                # or whose write failed and so may be out of step with the broker.
                previous = self._publisher_wrapper if self._publisher is not None else None
                wrapper = await open_channel(conn, publisher_confirms=True)
                raw = await wrapper.get_underlay_channel()
                self._publisher = Publisher(raw) if Publisher.usable(raw) else raw
                self._publisher_wrapper = wrapper
                if previous is not None and not previous.is_closed:
                    await close_quietly(previous)
            return self._publisher

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish ``messages`` and wait until the broker confirmed every one of them.

        Messages lost with a connection are published again on the next one, so a
        message may be stored twice (at-least-once); a negative confirm raises
        `PublishError` at once. The caller bounds the total time.
        """
        pending = list(messages)
        if not pending:
            return
        while True:
            try:
                channel = await self._publisher_channel()
            except DRIVER_ERRORS as exc:
                log.debug("amqp: no publisher channel (%s); trying again", describe(exc))
                await asyncio.sleep(0.05)
                continue
            results = await _publish_all(channel, pending)
            failed = [m for m, r in zip(pending, results, strict=True) if r is not None]
            if not failed:
                return
            errors = [r for r in results if r is not None]
            if any(isinstance(e, aiormq.exceptions.DeliveryError) for e in errors):
                raise PublishError("amqp: the broker refused a message (negative publisher confirm)")
            log.debug("amqp: %d message(s) not confirmed (%s); publishing again", len(failed), describe(errors[0]))
            pending = failed
            if channel.is_closed and self._ready.is_set() and self._conn is not None and not self._lost.is_set():
                # The channel died but the connection lives (e.g. a channel error): give the
                # broker a moment instead of spinning on a fresh channel.
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Stop the supervisor and close the connection. Never raises."""
        self._closing = True
        self._lost.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        self._ready.clear()
        if isinstance(self._publisher, Publisher):
            await self._publisher.close()
        # Channels closed one by one, not implicitly with the connection: aio-pika then
        # awaits its per-channel close callbacks instead of leaving them as loose tasks.
        for channel in (self._publisher_wrapper, self._admin):
            if channel is not None and not channel.is_closed:
                await close_quietly(channel)
        if self._conn is not None:
            await close_quietly(self._conn)
            await _driver_teardown()


async def _publish_all(channel: Publisher | RawChannel, messages: list[Outgoing]) -> list[BaseException | None]:
    """Publish ``messages``; for each, ``None`` once confirmed, else the error."""
    if isinstance(channel, Publisher):
        try:
            confirms = channel.submit(messages)
        except DRIVER_ERRORS as exc:
            return [exc] * len(messages)
        # Not ``await confirm``: aiormq may fail a confirm with a CancelledError (a channel
        # closed by the client), which must not pass for the cancellation of this task.
        await asyncio.wait(confirms)
        return [_outcome(confirm) for confirm in confirms]
    if len(messages) == 1:
        return [await _confirm(channel, messages[0])]
    return list(await asyncio.gather(*(_confirm(channel, m) for m in messages)))


def _outcome(confirm: asyncio.Future[Any]) -> BaseException | None:
    """``None`` for a positive confirm, else why the message may not be stored."""
    if confirm.cancelled():
        return aiormq.exceptions.ChannelInvalidStateError("the confirm was cancelled")
    return confirm.exception()


async def _confirm(channel: RawChannel, message: Outgoing) -> BaseException | None:
    """Publish one message with aiormq's ``basic_publish``; ``None`` once confirmed, else the error."""
    try:
        result = await channel.basic_publish(
            message.body,
            exchange=message.exchange,
            routing_key=message.routing_key,
            properties=message.properties,
        )
    except DRIVER_ERRORS as exc:
        return exc
    if isinstance(result, Basic.Nack):
        return aiormq.exceptions.DeliveryError(None, result)
    return None


async def _driver_teardown() -> None:
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
            async with asyncio.timeout(2):
                await asyncio.gather(*pending, return_exceptions=True)


def _alive(conn: AbstractConnection) -> bool:
    """Open and not lost (aio-pika's ``is_closed`` only reflects an explicit close)."""
    return not conn.is_closed and conn.connected.is_set()


CHANNEL_OPEN_TIMEOUT = 10.0


async def open_channel(conn: AbstractConnection, *, publisher_confirms: bool = False) -> AbstractChannel:
    """A new channel on ``conn``; fails instead of waiting when ``conn`` is lost (aio-pika
    would wait for a plain connection to come back, which it never does)."""
    if not _alive(conn):
        raise aiormq.exceptions.ConnectionChannelError("the connection is closed")
    async with asyncio.timeout(CHANNEL_OPEN_TIMEOUT):
        return await conn.channel(publisher_confirms=publisher_confirms)


async def close_quietly(closable: AbstractChannel | AbstractConnection) -> None:
    """Close a channel or a connection (bounded wait), logging instead of raising driver errors."""
    try:
        async with asyncio.timeout(5):
            await closable.close()
    except DRIVER_ERRORS as exc:
        log.debug("amqp: error while closing %s: %s", type(closable).__name__, describe(exc))
