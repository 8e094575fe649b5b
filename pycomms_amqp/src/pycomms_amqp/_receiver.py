"""Consuming a subscription: one channel per service instance, prefetch = concurrency.

The receiver consumes the service's event queue and the queues of its command types on
one dedicated channel whose QoS bounds unacknowledged messages to the service's
concurrency. Each delivery remembers the channel it came on: once that channel is closed
(connection lost, receiver closed) settling it does nothing, because the broker has
already put the message back and a delivery tag of a newer channel could otherwise be
acknowledged by mistake. Acks and nacks go through the channel's `Settler`, which
coalesces them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage

from pycomms.spi import STRUCTURED_CONTENT_TYPE, DeadLetter, EnvelopeError, Subscription, peek_type, stop_tasks

from ._binary import binary_attributes, structured
from ._connection import CLOSE_TIMEOUT, close_quietly, open_channel
from ._errors import QUIET_ERRORS, SETTLE_ERRORS, describe
from ._link import Link
from ._names import ATTEMPT_HEADER
from ._options import AmqpOptions
from ._publisher import Outgoing
from ._settler import Settler
from ._topology import Topology

log = logging.getLogger("pycomms.amqp")


class AmqpDelivery:
    """One message delivered on one channel; settles at most once, on that channel only."""

    __slots__ = ("_channel", "_message_id", "_queue", "_receiver", "_settled", "_settler", "_tag", "attempt", "data")

    def __init__(
        self,
        receiver: AmqpReceiver,
        channel: RawChannel,
        settler: Settler,
        message: DeliveredMessage,
        queue: str,
        attempt: int,
    ) -> None:
        self._receiver = receiver
        self._channel = channel
        self._settler = settler
        self._tag = message.delivery_tag or 0
        self._message_id = message.header.properties.message_id
        self._queue = queue
        self._settled = False
        self.data = message.body
        self.attempt = attempt

    @property
    def stale(self) -> bool:
        """The channel this came on is gone: the broker has requeued the message."""
        return self._settled or self._channel.is_closed

    async def ack(self) -> None:
        """``basic.ack`` on the channel the message came on (nothing if it is gone).

        Returns before the frame is written: the `Settler` sends the acks of a loop
        turn together, and a lost ack only means a redelivery (at-least-once)."""
        if self.stale:
            return
        self._settled = True
        self._settler.ack(self._tag)

    async def retry(self, delay: float) -> None:
        """Republish with attempt + 1 (through a delay queue if ``delay`` > 0), then ack."""
        if self.stale:
            return
        receiver = self._receiver
        try:
            message = await receiver.topology.retry_message(
                self.data, self._message_id, self._queue, self.attempt + 1, delay
            )
            await receiver.publish_settlement(message)
        except SETTLE_ERRORS as exc:
            log.warning("amqp: could not schedule a retry (%s); releasing the message instead", describe(exc))
            await self._release()
            return
        await self.ack()

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Store ``letter`` in the service's dead-letter queue (confirmed), then ack."""
        if self.stale:
            return
        receiver = self._receiver
        try:
            await receiver.publish_settlement(receiver.topology.dead_letter_message(letter, self._queue))
        except SETTLE_ERRORS as exc:
            log.warning("amqp: could not store a dead letter (%s); releasing the message instead", describe(exc))
            await self._release()
            return
        await self.ack()

    async def _release(self) -> None:
        if self.stale:
            return
        self._settled = True
        self._settler.release(self._tag)


class AmqpReceiver:
    """The `Receiver` of one subscription on one bus."""

    def __init__(
        self, link: Link, topology: Topology, subscription: Subscription, options: AmqpOptions, max_size: int
    ) -> None:
        self.link = link
        self.topology = topology
        self.subscription = subscription
        self._options = options
        self._max_size = max_size
        names = topology.names
        self._event_queue = names.service_queue(subscription.service) if subscription.events else None
        self._command_queues = sorted(names.command_queue(t) for t in subscription.commands)
        self._buffer: collections.deque[AmqpDelivery] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._channel: AbstractChannel | None = None
        self._raw: RawChannel | None = None
        self._settler: Settler | None = None
        self._attached: AbstractConnection | None = None
        self._attach_lock = asyncio.Lock()
        self._recovery: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def queues(self) -> list[str]:
        """The queues this receiver consumes."""
        return ([self._event_queue] if self._event_queue else []) + self._command_queues

    async def attach(self, conn: AbstractConnection) -> bool:
        """Declare the subscription's queues and bindings on ``conn`` and consume them on a
        fresh channel, unless already consuming on ``conn``; true if it did. Called at
        subscribe time, after every reconnection and when the channel alone died."""
        async with self._attach_lock:
            if self._closed:
                return False
            if self._attached is conn and self._raw is not None and not self._raw.is_closed:
                return False  # already consuming on this connection (a recovery raced a reconnection)
            self._buffer.clear()  # deliveries of a dead channel: the broker requeued them
            channel = await open_channel(conn)
            try:
                await self._setup(channel)
            except BaseException:
                await close_quietly(channel)
                raise
            channel.close_callbacks.add(self._on_channel_close)
            self._attached = conn
            return True

    async def _setup(self, channel: AbstractChannel) -> None:
        sub, topology = self.subscription, self.topology
        quorum = self._options.queue_type == "quorum"
        # Several classic queues: one limit shared by their consumers (global QoS). With
        # one queue the per-consumer limit is the same bound, and cheaper for the broker:
        # the queue counts it alone, without asking the channel at every delivery.
        # Quorum queues do not support global QoS: the limit then applies per queue.
        await channel.set_qos(prefetch_count=sub.concurrency, global_=not quorum and len(self.queues) > 1)
        await topology.declare_dead_letter_queue(channel, sub.service)
        if self._event_queue is not None:
            if sub.ephemeral:
                events = await topology.declare_observer_queue(channel, self._event_queue)
            else:
                events = await topology.declare_work_queue(channel, self._event_queue)
            for type_name in sorted(sub.events):
                await events.bind(topology.names.events, routing_key=type_name)
        for queue in self._command_queues:
            await topology.declare_work_queue(channel, queue)
        raw = await channel.get_underlay_channel()
        raw.on_consumer_cancel_callbacks.add(self._on_cancel)
        if self._settler is not None:
            self._spawn(self._settler.close())  # the old channel's: nothing left to send
        settler = Settler(raw)
        self._channel, self._raw, self._settler = channel, raw, settler
        for queue in self.queues:
            await raw.basic_consume(queue, self._consumer(raw, settler, queue))

    def _consumer(
        self, raw: RawChannel, settler: Settler, queue: str
    ) -> Callable[[DeliveredMessage], Coroutine[Any, Any, None]]:
        quorum = self._options.queue_type == "quorum"
        limit = self._options.delivery_limit

        async def on_message(message: DeliveredMessage) -> None:
            if raw is not self._raw or self._closed:
                return  # a late delivery of a replaced channel; the broker requeues it
            headers = message.header.properties.headers or {}
            attempt = _int(headers.get(ATTEMPT_HEADER), 1)
            if quorum:
                delivered = _int(headers.get("x-delivery-count"), 0)
                attempt += delivered
            else:
                delivered = 1 if message.redelivered else 0
                attempt += delivered
            delivery = AmqpDelivery(self, raw, settler, message, queue, attempt)
            settler.delivered(message.delivery_tag or 0)
            if quorum and delivered >= limit:
                self._spawn(self._over_limit(delivery, delivered))
                return
            content_type = message.header.properties.content_type
            if content_type != STRUCTURED_CONTENT_TYPE and headers:  # PyComms' own: one comparison
                attributes = binary_attributes(headers, content_type)
                if attributes is not None:
                    try:
                        delivery.data = structured(attributes, delivery.data, self._max_size)
                    except EnvelopeError as exc:
                        self._spawn(self._refuse_binary(delivery, attributes, exc))
                        return
            self._buffer.append(delivery)
            self._wakeup.set()

        return on_message

    async def _over_limit(self, delivery: AmqpDelivery, delivered: int) -> None:
        letter = DeadLetter(
            id=delivery._message_id or "?",
            type=peek_type(delivery.data),
            service=self.subscription.service,
            reason="failed",
            error=f"delivered {delivered} times without being settled (delivery_limit={self._options.delivery_limit}); "
            "its consumers probably crashed while handling it",
            attempts=delivery.attempt,
            failed_at=time.time(),
            envelope=delivery.data,
        )
        log.warning("dead letter: service=%s id=%s: %s", letter.service, letter.id, letter.error)
        await delivery.dead_letter(letter)

    async def _refuse_binary(self, delivery: AmqpDelivery, attributes: dict[str, str], exc: EnvelopeError) -> None:
        letter = DeadLetter(
            id=attributes.get("id") or delivery._message_id or "?",
            type=attributes.get("type") or "?",
            service=self.subscription.service,
            reason=exc.reason,
            error=f"binary-mode CloudEvent (attributes in ce- headers): {exc.detail}",
            attempts=delivery.attempt,
            failed_at=time.time(),
            envelope=delivery.data,
        )
        log.warning("dead letter: service=%s id=%s: %s", letter.service, letter.id, letter.error)
        await delivery.dead_letter(letter)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_channel_close(self, sender: Any, exc: BaseException | None = None) -> None:
        if self._closed or sender is not self._channel:
            return
        self._buffer.clear()
        if self.link.connected and (self._recovery is None or self._recovery.done()):
            # The channel died but not the connection (e.g. consumer_timeout, a deleted
            # queue): attach again. A lost connection is handled by the link instead.
            self._recovery = asyncio.ensure_future(self._recover())

    def _on_cancel(self, frame: Any) -> None:
        # The broker cancelled a consumer (its queue was deleted): start over on a new
        # channel, which declares the queues again.
        if not self._closed and self._channel is not None:
            self._spawn(close_quietly(self._channel))

    async def _recover(self) -> None:
        delay = 0.1
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(self._options.connect_timeout):
                    if await self.attach(await self.link.connection()):
                        log.warning("amqp: service %s: consumer channel restored", self.subscription.service)
                return
            except QUIET_ERRORS as exc:
                log.info(
                    "amqp: service %s: restoring the consumer failed: %s", self.subscription.service, describe(exc)
                )
                delay = min(delay * 2, self._options.reconnect_max_delay)

    async def publish_settlement(self, message: Outgoing) -> None:
        """Publish a retry or dead letter, bounded by ``operation_timeout`` (the caller
        releases the message when it fails: the broker delivers it again)."""
        async with asyncio.timeout(self._options.operation_timeout):
            await self.link.publish([message])

    async def receive(self, max_messages: int) -> Sequence[AmqpDelivery]:
        """Wait for 1 to ``max_messages`` deliveries; empty once closed."""
        buffer = self._buffer
        while True:
            while not buffer:
                if self._closed:
                    return []
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._closed:
                return []
            batch: list[AmqpDelivery] = []
            while buffer and len(batch) < max_messages:
                delivery = buffer.popleft()
                if not delivery.stale:
                    batch.append(delivery)
            if batch:
                return batch

    async def close(self) -> None:
        """Stop consuming; closing the channel hands unsettled messages back to the broker."""
        self._closed = True
        self._wakeup.set()
        self._buffer.clear()
        await stop_tasks([self._recovery, *self._background], give_up_after=CLOSE_TIMEOUT)
        await self.link.close_step(self._close_channel())
        if self._settler is not None:
            await self._settler.close()

    async def _close_channel(self) -> None:
        async with self._attach_lock:
            if self._settler is not None:
                await self._settler.flush(CLOSE_TIMEOUT)  # the acks of handlers that just finished
            if self._channel is not None:
                if self.subscription.ephemeral:
                    await self._remove_dead_letter_queue(self._channel)
                await close_quietly(self._channel)

    async def _remove_dead_letter_queue(self, channel: AbstractChannel) -> None:
        """An ephemeral service leaves nothing behind: its event queue auto-deletes (the
        broker removes it); its dead-letter queue goes too, unless letters are in it."""
        queue = self.topology.names.dead_letter_queue(self.subscription.service)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await channel.queue_delete(queue, if_empty=True)
        except Exception as exc:  # kept letters (PRECONDITION_FAILED), or the link is gone
            log.info(
                "amqp: kept the dead-letter queue %s of ephemeral service %s: %s", queue, self.subscription.service, exc
            )


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default
