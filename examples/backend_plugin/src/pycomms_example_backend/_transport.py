"""The SPI of ``example://``: a `Transport`, its `Receiver` and its `Delivery`.

The core does everything else (validation, retries, dead-letter records, request and
reply matching, concurrency, graceful shutdown); this module only moves encoded
envelopes through the `Store` and keeps leases so that each delivery is settled at
most once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from pycomms.spi import (
    Capabilities,
    DeadLetter,
    Envelope,
    NodeInfo,
    ReplySink,
    Subscription,
)

from ._store import Item, ServiceQueue, Store, drop_store

CAPABILITIES = Capabilities(
    retention=True,  # a service's queue outlives its instances (within the process)
    persistent=False,  # nothing survives the process
    delayed_delivery=True,  # retries wait in the queue with a due time, not in a handler
    ordering=True,  # one FIFO deque per service: same key, one publisher, concurrency 1 -> in order
    presence=False,  # nodes() sees the buses of this process only, never other processes
    cross_process=False,
    transactional_publish=False,  # no database transaction to publish in
)


class ExampleDelivery:
    """One message out on lease to one receiver.

    The lease token is what makes settling safe: the receiver forgets the token when
    the message goes back to the queue (receiver closed), so a late ack or retry from
    a cancelled handler finds no lease and does nothing, instead of settling a
    delivery that now belongs to someone else.
    """

    __slots__ = ("_receiver", "_token", "attempt", "data")

    def __init__(self, receiver: ExampleReceiver, item: Item, token: int) -> None:
        self._receiver = receiver
        self._token = token
        self.data = item.data
        self.attempt = item.attempt

    def _end_lease(self) -> bool:
        return self._receiver.leases.pop(self._token, None) is not None

    async def ack(self) -> None:
        self._end_lease()

    async def retry(self, delay: float) -> None:
        if self._end_lease():
            await self._receiver.queue.put(Item(self.data, self.attempt + 1), delay)

    async def dead_letter(self, letter: DeadLetter) -> None:
        if self._end_lease():
            self._receiver.store.dead[letter.service][letter.id] = letter


class ExampleReceiver:
    """One bus's consumption of one service's queue."""

    def __init__(self, store: Store, queue: ServiceQueue, subscription: Subscription) -> None:
        self.store = store
        self.queue = queue
        self.subscription = subscription
        self.leases: dict[int, Item] = {}
        self._tokens = itertools.count()
        self._closed = False

    async def receive(self, max_messages: int) -> Sequence[ExampleDelivery]:
        queue = self.queue
        async with queue.changed:
            while not self._closed:
                items = queue.take(max_messages)
                if items:
                    # no await between taking and returning: a cancellation cannot lose them
                    return [self._lease(item) for item in items]
                try:
                    # sleep until something changes, or until the first delayed item is due
                    async with asyncio.timeout(queue.next_due_in()):
                        await queue.changed.wait()
                except TimeoutError:
                    pass
            return []

    def _lease(self, item: Item) -> ExampleDelivery:
        token = next(self._tokens)
        self.leases[token] = item
        return ExampleDelivery(self, item, token)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        leases, self.leases = self.leases, {}
        if self.subscription.ephemeral:
            # an observer gets events only while it runs: what it had not handled goes with it
            self.store.unsubscribe(self.subscription.service)
        else:
            for item in leases.values():  # unsettled: hand back for another instance
                await self.queue.put(Item(item.data, item.attempt + 1))
        async with self.queue.changed:
            self.queue.changed.notify_all()  # wake our pending receive, which returns []


class ExampleTransport:
    """The `pycomms.spi.Transport` of ``example://NAME``."""

    capabilities = CAPABILITIES

    def __init__(self, store: Store) -> None:
        self._store = store
        self._node: NodeInfo | None = None
        self._receivers: list[ExampleReceiver] = []

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        self._node = node
        self._store.nodes[node.id] = node
        self._store.reply_sinks[node.id] = replies

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        for env in envelopes:
            await self._store.route(env)

    async def send_reply(self, envelope: Envelope) -> None:
        self._store.reply(envelope)

    async def subscribe(self, subscription: Subscription) -> ExampleReceiver:
        receiver = ExampleReceiver(self._store, await self._store.subscribe(subscription), subscription)
        self._receivers.append(receiver)
        return receiver

    async def nodes(self) -> list[NodeInfo]:
        return [node.seen() for node in self._store.nodes.values()]  # all live: a closed bus removed itself

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        return list(itertools.islice(self._store.dead[service].values(), limit))

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        letters = self._store.take_dead(service, None if ids is None else list(ids))
        for letter in letters:  # back to this service only, as a first attempt
            await self._store.queues[service].put(Item(letter.envelope, 1))
        return len(letters)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        return len(self._store.take_dead(service, None if ids is None else list(ids)))

    async def drop_namespace(self) -> int:
        return drop_store(self._store)

    async def close(self) -> None:
        for receiver in self._receivers:  # the core closed them already; closing twice does nothing
            await receiver.close()
        if self._node is not None:  # leave presence at once
            self._store.nodes.pop(self._node.id, None)
            self._store.reply_sinks.pop(self._node.id, None)
