"""``amqp://`` and ``amqps://``: the `Transport` over RabbitMQ (see docs/backends/amqp.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from pycomms import ConnectError, OperationError, PublishError, PyCommsError
from pycomms.spi import BackendConfig, Capabilities, DeadLetter, Envelope, NodeInfo, ReplySink, Subscription

from ._connection import close_quietly, open_channel
from ._deadletters import DeadLetterStore
from ._errors import SETTLE_ERRORS, describe, map_amqp_errors, timed_out
from ._link import Link
from ._names import Names
from ._options import AmqpOptions, parse_options, tls_context
from ._presence import Presence
from ._receiver import AmqpReceiver
from ._registry import COMPACT_AT
from ._topology import Topology

log = logging.getLogger("pycomms.amqp")

CAPABILITIES = Capabilities(
    retention=True,
    persistent=True,
    delayed_delivery=True,
    ordering=False,
    presence=True,
    cross_process=True,
    transactional_publish=False,
)


class AmqpTransport:
    """The `pycomms.spi.Transport` of ``amqp://``: one connection per bus, restored by
    a supervisor when it drops, with the topology and consumers declared again."""

    capabilities = CAPABILITIES

    def __init__(self, config: BackendConfig) -> None:
        self._config = config
        self.options: AmqpOptions = parse_options(config.options)
        self._tls = tls_context(config.scheme, self.options)
        self.names = Names(config.namespace)
        self._node: NodeInfo | None = None
        self._replies: ReplySink | None = None
        self._link: Link | None = None
        self._topology: Topology | None = None
        self._presence: Presence | None = None
        self._dead: DeadLetterStore | None = None
        self._receivers: list[AmqpReceiver] = []
        self._dropped = False
        self._control: AbstractChannel | None = None  # declarations, replies and presence
        self._own_queues: list[str] = []  # this connection's server-named reply and presence queues

    def __repr__(self) -> str:
        return f"<AmqpTransport {self._config.redacted_url!r} namespace={self.names.namespace!r}>"

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        """Connect, declare the topology, start presence; raise `ConnectError`."""
        self._node, self._replies = node, replies
        names = self.names
        link = Link(
            self._config.url, self._tls, self.options, f"{names.prefix}.{node.id}", self._on_connect, names.exchanges
        )
        self._link = link
        self._topology = Topology(self.names, self.options, link)
        timeout = self.options.operation_timeout
        self._presence = Presence(link, self.names, node, self.options.presence_interval, timeout)
        self._dead = DeadLetterStore(link, self._topology, timeout)
        await link.open()
        self._presence.start()
        log.debug("amqp: open %s as %s", self._config.redacted_url, link)

    async def _on_connect(self, conn: AbstractConnection) -> None:
        """Declare this node's part of the topology on a new connection (first or restored)."""
        assert self._node is not None
        assert self._topology is not None
        assert self._presence is not None
        control = self._control = await open_channel(conn)
        records = await self._topology.declare_exchanges(control)
        replies = await control.declare_queue(None, exclusive=True, auto_delete=True)  # server-named
        await replies.bind(self.names.replies, routing_key=self._node.id)
        raw = await control.get_underlay_channel()
        await raw.basic_consume(replies.name, self._on_reply, no_ack=True)
        self._own_queues = [replies.name, await self._presence.attach(control)]
        for receiver in list(self._receivers):
            await receiver.attach(conn)
        if self._link is not None and self._link.generation > 1:
            self._presence.announce()
        if records > COMPACT_AT and self._link is not None:
            self._link.spawn(self._compact(conn))

    async def _compact(self, conn: AbstractConnection) -> None:
        assert self._topology is not None
        try:
            async with asyncio.timeout(self.options.operation_timeout):
                await self._topology.registry.compact(conn)
        except SETTLE_ERRORS as exc:
            log.info("amqp: compacting the registry of namespace %s failed: %s", self.names.namespace, describe(exc))

    async def _on_reply(self, message: DeliveredMessage) -> None:
        if self._replies is not None:
            self._replies(message.body)

    def _parts(self) -> tuple[Link, Topology]:
        if self._link is None or self._topology is None:
            raise PyCommsError("amqp: the transport is not open")
        return self._link, self._topology

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Route ``envelopes`` by kind and wait for every publisher confirm, within
        ``operation_timeout``; raise `PublishError`."""
        for env in envelopes:
            if env.kind == "reply":
                raise PublishError("amqp: publish() routes events, commands and requests; a reply goes to send_reply()")
        await self._confirmed(envelopes)

    async def send_reply(self, envelope: Envelope) -> None:
        """Publish a reply to the asking node's reply queue (transient; confirmed)."""
        await self._confirmed([envelope])

    async def _confirmed(self, envelopes: Sequence[Envelope]) -> None:
        link, topology = self._parts()
        timeout = self.options.operation_timeout
        try:
            async with asyncio.timeout(timeout):
                await link.publish(await topology.envelope_messages(envelopes))
        except TimeoutError:
            raise link.publish_timed_out(f"amqp: publish to {link.where}", timeout) from None

    async def subscribe(self, subscription: Subscription) -> AmqpReceiver:
        """Declare the subscription's queues and bindings and consume them on a channel
        of its own, within ``connect_timeout`` (part of connecting); raise `ConnectError`."""
        link, topology = self._parts()
        receiver = AmqpReceiver(link, topology, subscription, self.options, self._config.max_message_size)
        self._receivers.append(receiver)
        what = f"amqp: subscribing service {subscription.service!r} on {link.where}"
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                with map_amqp_errors(ConnectError, what):
                    await receiver.attach(await link.connection())
        except TimeoutError:
            self._receivers.remove(receiver)
            raise timed_out(ConnectError, what, self.options.connect_timeout, "connect_timeout") from None
        except BaseException:
            self._receivers.remove(receiver)
            raise
        return receiver

    async def nodes(self) -> list[NodeInfo]:
        """Live nodes of the namespace, this one first (see `Presence.nodes`)."""
        if self._presence is None:
            raise PyCommsError("amqp: the transport is not open")
        return await self._presence.nodes()

    def _store(self) -> DeadLetterStore:
        if self._dead is None:
            raise PyCommsError("amqp: the transport is not open")
        return self._dead

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``service``, oldest first, left in place."""
        return await self._store().list(service, limit)

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        """Send dead letters back to the queue they came from, with attempt 1."""
        return await self._store().replay(service, ids)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters (all, or those with ``ids``)."""
        return await self._store().purge(service, ids)

    async def backlog(self, service: str) -> int | None:
        """Ready messages in the queues ``service`` consumes on this bus (a passive
        declare of each: the broker's ``message_count``; unacknowledged deliveries and
        delayed retries are not in it); ``None`` for a service this bus does not serve."""
        queues = [q for r in self._receivers if r.subscription.service == service for q in r.queues]
        if not queues or self._link is None or not self._link.connected or self._dropped:
            return None  # not serving it, or not connected now (closed, or reconnecting)
        link = self._link
        what = f"amqp: backlog of service {service!r} on {link.where}"
        try:
            async with asyncio.timeout(self.options.operation_timeout):
                with map_amqp_errors(OperationError, what):
                    channel = await link.admin()
                    declared = [await channel.declare_queue(q, passive=True) for q in queues]
        except TimeoutError:
            raise timed_out(OperationError, what, self.options.operation_timeout, "operation_timeout") from None
        return sum(q.declaration_result.message_count or 0 for q in declared)

    async def drop_namespace(self) -> int:
        """Delete every queue and exchange of the namespace, within ``operation_timeout``:
        the queues its registry recorded, this node's own reply and presence queues, the
        exchanges and the registry. Raise `OperationError`; the bus then no longer gets
        replies or presence and should be closed."""
        link, topology = self._parts()
        if self._presence is not None:
            await self._presence.stop()  # its beats would go to a deleted exchange
        what = f"amqp: dropping namespace {self.names.namespace!r} on {link.where}"
        timeout = self.options.operation_timeout
        try:
            async with asyncio.timeout(timeout):
                with map_amqp_errors(OperationError, what):
                    conn = await link.connection()
                    if self._control is not None:
                        # Its consumers of this node's reply and presence queues end first:
                        # deleting a consumed queue makes the driver log a cancelled consumer.
                        await close_quietly(self._control)
                    removed = await topology.registry.drop(conn, self._own_queues)
        except TimeoutError:
            raise timed_out(OperationError, what, timeout, "operation_timeout") from None
        self._dropped = True
        log.info("amqp: dropped namespace %s on %s: %d queues and exchanges", self.names.namespace, link.where, removed)
        return removed

    async def close(self) -> None:
        """Say goodbye to presence, close the receivers and the connection. Never raises.

        Within about 3 x `CLOSE_TIMEOUT` on a silent link: each step that waits for the
        broker has that deadline, and once one passed it the connection is dropped
        instead of closed (`Link.suspect`)."""
        if self._link is None:
            return
        link = self._link
        try:
            if self._presence is not None:
                if self._dropped:
                    await self._presence.stop()
                else:
                    await self._presence.leave()
            for receiver in self._receivers:
                await receiver.close()
            if self._topology is not None:
                await self._topology.close()
            if self._control is not None and not self._control.is_closed:
                await link.close_step(close_quietly(self._control))
        except SETTLE_ERRORS as exc:
            log.warning("amqp: error while closing: %s", describe(exc))
        await link.close()
