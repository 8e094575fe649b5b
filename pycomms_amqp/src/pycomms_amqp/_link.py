"""The connection to the broker and its supervisor: reconnect, then restore everything.

aio-pika's robust connection keeps channels in a ``WeakSet`` and restores queues and
consumers by itself, with known gaps. Here the connection is a plain one and recovery is
explicit: when it drops, a supervisor task connects again with backoff and calls the
transport's ``on_connect`` callback, which declares the whole topology again and attaches
every receiver to a fresh channel. Channels of the old connection are never reused, so a
delivery tag of the old connection cannot settle a message of the new one.

Closing is bounded: the AMQP close handshake waits for the broker, which a silent link
never answers. The link keeps each connection's socket (through its own aiormq transport
factory), so that `Link.close` can drop it at once when the graceful close passes its
deadline, or when an earlier step already found the link silent (`Link.suspect`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import AbstractChannel as RawChannel
from pamqp.commands import Basic
from yarl import URL

from pycomms import ConnectError, PublishError, PyCommsError
from pycomms.spi import stop_tasks

from ._connection import (
    CLOSE_TIMEOUT,
    KeptConnection,
    KeptSocket,
    alive,
    close_quietly,
    driver_teardown,
    finish_within,
    open_channel,
)
from ._errors import DRIVER_ERRORS, SETTLE_ERRORS, address, describe, timed_out
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
        self,
        url: str,
        tls: ssl.SSLContext | None,
        options: AmqpOptions,
        connection_name: str,
        on_connect: OnConnect,
        exchanges: Collection[str] = (),
    ) -> None:
        self._url = URL(url).with_query({"heartbeat": str(options.heartbeat)})  # our options removed
        self.where = address(url)
        """``host:port`` of the broker, for errors and logs."""
        self._ssl = tls
        self._options = options
        self._name = connection_name
        self._on_connect = on_connect
        self._exchanges = frozenset(exchanges)  # on_connect declares them: a publish finding one gone reconnects
        self._conn: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._publisher: Publisher | RawChannel | None = None
        self._publisher_wrapper: AbstractChannel | None = None
        self._admin: AbstractChannel | None = None
        self._channel_lock = asyncio.Lock()
        self._socket: KeptSocket | None = None
        self._aborted = False
        self._background: set[asyncio.Task[None]] = set()
        self.generation = 0
        """Incremented at every (re)connection; caches of declarations key on it."""
        self.suspect = False
        """A close step of this connection passed its deadline: the link is silent, so
        closing drops the socket instead of waiting for the broker."""
        self.last_error = ""
        """Why the last (re)connection attempt failed, for the errors of callers waiting on it."""

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def open(self) -> None:
        """Connect for the first time and run ``on_connect``, all within
        ``connect_timeout``; raise `ConnectError` (one line: the driver's error is in
        the message, not chained)."""
        what = f"amqp: connect to {self.where}"
        timeout = self._options.connect_timeout
        conn: AbstractConnection | None = None
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connect()
                await self._on_connect(conn)
        except BaseException as exc:
            if conn is not None:
                await self._discard(conn)
            if isinstance(exc, TimeoutError):
                raise timed_out(ConnectError, what, timeout, "connect_timeout") from None
            if isinstance(exc, PyCommsError):
                raise ConnectError(f"{what}: setting up the topology failed: {exc}") from None
            if isinstance(exc, DRIVER_ERRORS):
                raise ConnectError(f"{what} failed: {describe(exc)}") from None
            raise
        if not self._lost.is_set():  # else the supervisor reconnects at once
            self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"pycomms:amqp:{self._name}")

    async def _discard(self, conn: AbstractConnection) -> None:
        """Drop a connection that failed while being set up, without waiting for the broker."""
        self._drop_socket()
        await close_quietly(conn)

    async def _connect(self) -> AbstractConnection:
        socket = self._socket = KeptSocket(self._url.scheme)
        conn = KeptConnection(
            self._url, socket, ssl_context=self._ssl, client_properties={"connection_name": self._name}
        )
        try:
            await conn.connect(timeout=self._options.connect_timeout)
        except BaseException:
            # Marked closed (it has no transport yet, so at once): else its __del__ starts a close task.
            await conn.close()
            raise
        self._lost.clear()
        self._conn = conn
        conn.close_callbacks.add(self._on_close)
        if not alive(conn):  # lost before the callback was in place
            self._on_close(conn)
        self._publisher = None
        self._admin = None
        self.generation += 1
        self.suspect = False
        self.last_error = ""
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
                    await self._discard(conn)
                raise
            except SETTLE_ERRORS as exc:
                self.last_error = describe(exc)
                log.info("amqp: reconnecting to %s failed (%s); next in %.2fs", self.where, self.last_error, delay)
                if conn is not None:
                    await self._discard(conn)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._options.reconnect_max_delay)
                continue
            if not alive(conn) or self._lost.is_set():
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
            conn = self._conn
            results = await _publish_all(channel, pending)
            failed = [m for m, r in zip(pending, results, strict=True) if r is not None]
            if not failed:
                return
            errors = [r for r in results if r is not None]
            if any(isinstance(e, aiormq.exceptions.DeliveryError) for e in errors):
                raise PublishError("amqp: the broker refused a message (negative publisher confirm)")
            log.debug("amqp: %d message(s) not confirmed (%s); publishing again", len(failed), describe(errors[0]))
            pending = failed
            gone = next((e for e in errors if self._declares_missing(e)), None)
            if gone is not None and conn is self._conn and conn is not None and not self._lost.is_set():
                await self._restart(conn, gone)
            if channel.is_closed and self._ready.is_set() and self._conn is not None and not self._lost.is_set():
                # The channel died but the connection lives (e.g. a channel error): give the
                # broker a moment instead of spinning on a fresh channel.
                await asyncio.sleep(0.05)

    def _declares_missing(self, error: BaseException) -> bool:
        """``error`` is the broker's NOT_FOUND for one of the exchanges ``on_connect`` declares."""
        text = str(error)
        return isinstance(error, aiormq.exceptions.ChannelNotFoundEntity) and any(
            f"exchange '{name}'" in text for name in self._exchanges
        )

    async def _restart(self, conn: AbstractConnection, gone: BaseException) -> None:
        """An exchange of the namespace is gone (someone dropped the namespace under this
        node): close the connection, so that the supervisor connects again and declares
        everything again, exchanges, bindings and consumers alike."""
        log.warning(
            "amqp: %s (was the namespace dropped?); reconnecting to %s to declare the topology again",
            describe(gone),
            self.where,
        )
        await close_quietly(conn)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background (e.g. returning a channel's messages by closing
        it after its caller gave up); `close` stops whatever is still running."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def abort(self) -> None:
        """While closing: drop the connection's socket at once, without the AMQP close
        handshake. Every call waiting on the broker fails, nothing reconnects, and the
        broker, once it notices, gives the unacknowledged messages to other consumers."""
        if not self._aborted:
            log.warning("amqp: the broker at %s did not answer while closing; dropping the connection", self.where)
        self._aborted = self.suspect = self._closing = True
        self._drop_socket()

    def _drop_socket(self) -> None:
        # aiormq's reader, stopped first, ends quietly; reading the EOF it would log a traceback.
        reader = getattr(getattr(getattr(self._conn, "transport", None), "connection", None), "_reader_task", None)
        cancel = getattr(reader, "cancel", None)  # an asyncio.Task or aiormq's TaskWrapper
        if callable(cancel):
            cancel()
        if self._socket is not None:
            self._socket.abort()

    async def close_step(self, step: Coroutine[Any, Any, None]) -> bool:
        """Run a step of closing that waits for the broker: at most `CLOSE_TIMEOUT`, then
        the link is taken for silent and dropped (`abort`); false if it was. A link
        already found silent skips the step."""
        if self.suspect:
            step.close()
            return False
        return await finish_within(step, CLOSE_TIMEOUT, self.abort)

    async def close(self) -> None:
        """Stop the supervisor and close the connection, within about 2 x `CLOSE_TIMEOUT`
        even on a silent link. Never raises."""
        self._closing = True
        self._lost.set()
        await stop_tasks([self._supervisor, *self._background], give_up_after=CLOSE_TIMEOUT)
        self._ready.clear()
        if isinstance(self._publisher, Publisher):
            await self._publisher.close()
        if not await self.close_step(self._close_gracefully()):
            self.abort()
        if self._conn is not None:
            await finish_within(close_quietly(self._conn), CLOSE_TIMEOUT)
            await driver_teardown()

    async def _close_gracefully(self) -> None:
        # Channels closed one by one, not implicitly with the connection: aio-pika then
        # awaits its per-channel close callbacks instead of leaving them as loose tasks.
        for channel in (self._publisher_wrapper, self._admin):
            if channel is not None and not channel.is_closed:
                await close_quietly(channel)
        if self._conn is not None:
            await close_quietly(self._conn)

    def publish_timed_out(self, what: str, timeout: float) -> PublishError:
        """The `PublishError` of a publish that passed ``timeout``, saying what it waited for."""
        if self.connected:
            detail = (
                "connected, but no publisher confirm came: the link may be silent, or the broker "
                "blocking publishers on a resource alarm"
            )
        else:
            detail = self.reconnect_state()
        return timed_out(PublishError, what, timeout, "operation_timeout", detail)

    def reconnect_state(self) -> str:
        """``reconnecting``, with why the last attempt failed, for errors."""
        return f"reconnecting{f' (last attempt: {self.last_error})' if self.last_error else ''}"


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
