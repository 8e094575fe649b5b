"""The namespace's registry of its queues, so that the namespace can be dropped.

AMQP 0-9-1 cannot list queues (only the management plugin or ``rabbitmqctl`` can, and
neither is for a library to rely on). So every node records each named queue it
declares, service, command, dead-letter and delay queues alike, in the durable queue
``N.registry``: one small message per queue and connection, published on the declaring
channel just before the declaration, so that the queue never exists unrecorded. The
exchanges have fixed names. Server-named exclusive queues (replies, presence) belong to
one connection and go with it.

`Registry.drop` takes every record (unacknowledged: a failed drop gives them back),
deletes each recorded queue that still exists, then the exchanges, then the registry.

Records repeat across restarts; a node that finds more than `COMPACT_AT` of them when
it connects rewrites them as one message (published with a confirm before the old ones
are acknowledged, so none is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import AbstractChannel as RawChannel
from pamqp.commands import Basic
from pydantic_core import from_json, to_json

from ._connection import close_quietly, open_channel
from ._errors import describe
from ._names import Names

log = logging.getLogger("pycomms.amqp")

COMPACT_AT = 500
"""Records in the registry above which a connecting node compacts them."""
DROP_PASSES = 5
"""Most times `Registry.drop` takes the records again (see there)."""

_PERSISTENT = Basic.Properties(content_type="application/json", delivery_mode=2)


class Registry:
    """Records the queues of a namespace as they are declared; drops them all."""

    def __init__(self, names: Names) -> None:
        self._names = names
        self._recorded: set[str] = set()

    async def declare(self, channel: AbstractChannel) -> int:
        """Declare the registry queue (at every connection); return how many records it
        holds. Queues are recorded again on each connection: the registry may have been
        dropped (with the whole namespace) under this node, which then declares it all again."""
        self._recorded.clear()
        arguments: dict[str, Any] = {"x-queue-type": "classic"}
        declared = await channel.declare_queue(self._names.registry, durable=True, arguments=arguments)
        return int(declared.declaration_result.message_count or 0)

    async def record(self, channel: AbstractChannel, queue: str) -> None:
        """Record ``queue`` (once per process) on ``channel``, ahead of its declaration
        on that same channel: the broker handles a channel's frames in order."""
        if queue in self._recorded:
            return
        raw = await channel.get_underlay_channel()
        await raw.basic_publish(
            to_json({"queues": [queue]}), exchange="", routing_key=self._names.registry, properties=_PERSISTENT
        )
        self._recorded.add(queue)

    async def compact(self, conn: AbstractConnection) -> None:
        """Rewrite the records as one message (see the module docstring)."""
        channel = await open_channel(conn, publisher_confirms=True)
        try:
            raw = await channel.get_underlay_channel()
            queues, last_tag = await _take(raw, self._names.registry)
            if last_tag is None:
                return
            body, registry = to_json({"queues": sorted(queues)}), self._names.registry
            confirm = await raw.basic_publish(body, exchange="", routing_key=registry, properties=_PERSISTENT)
            if not isinstance(confirm, Basic.Ack):
                return  # not stored: closing the channel gives the old records back
            await raw.basic_ack(last_tag, multiple=True)
            log.info("amqp: compacted the registry of namespace %s to %d queue(s)", self._names.namespace, len(queues))
        finally:
            await close_quietly(channel)

    async def drop(self, conn: AbstractConnection, own_queues: Iterable[str]) -> int:
        """Delete every recorded queue, ``own_queues``, the exchanges and the registry;
        return how many of them existed.

        A node still running (a forced drop) may connect again meanwhile and record its
        queues anew: the records are taken again after each pass, until one brings
        nothing new, and the registry goes last, so that what it lost stays small."""
        names = self._names
        holder = await open_channel(conn)  # holds the records until the registry is deleted
        raw = await holder.get_underlay_channel()
        probe = _Probe(conn)
        removed = 0
        try:
            seen: set[str] = set()
            new = set(own_queues)
            for n in range(DROP_PASSES):
                queues, _ = await _take(raw, names.registry)
                new |= queues - seen
                if not new and n > 0:
                    break
                for queue in sorted(new):
                    removed += await probe.delete_queue(queue)
                for exchange in names.exchanges:
                    removed += await probe.delete_exchange(exchange)
                seen |= new
                new = set()
            removed += await probe.delete_queue(names.registry)
        finally:
            await probe.close()
            await close_quietly(holder)
        self._recorded.clear()
        return removed


async def _take(raw: RawChannel, registry: str) -> tuple[set[str], int | None]:
    """Every record of ``registry``, left unacknowledged; and the last delivery tag."""
    queues: set[str] = set()
    last_tag: int | None = None
    while True:
        message = await raw.basic_get(registry, no_ack=False)
        if not isinstance(message.delivery, Basic.GetOk):
            return queues, last_tag
        last_tag = message.delivery_tag
        try:
            listed = from_json(message.body)["queues"]
            queues.update(q for q in listed if isinstance(q, str))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("amqp: skipping an unreadable record in %s: %s", registry, exc)


class _Probe:
    """Deletes queues and exchanges that exist, counting them. A passive declaration
    of a missing one closes the channel (NOT_FOUND): the next check opens another."""

    def __init__(self, conn: AbstractConnection) -> None:
        self._conn = conn
        self._channel: AbstractChannel | None = None

    async def _raw(self) -> RawChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await open_channel(self._conn)
        return await self._channel.get_underlay_channel()

    async def delete_queue(self, queue: str) -> int:
        raw = await self._raw()
        try:
            await raw.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        except aiormq.exceptions.ChannelLockedResource as exc:  # another connection's exclusive queue
            log.warning("amqp: cannot delete queue %s: %s", queue, describe(exc))
            return 0
        await raw.queue_delete(queue)
        return 1

    async def delete_exchange(self, exchange: str) -> int:
        raw = await self._raw()
        try:
            await raw.exchange_declare(exchange, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        await raw.exchange_delete(exchange)
        return 1

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await close_quietly(self._channel)
