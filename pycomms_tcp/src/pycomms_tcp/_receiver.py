"""A service instance's inbox on this node, and the deliveries it hands to core.

Messages arrive from peers (or from this node's own publishes) and wait here until
core asks for them. The sender keeps each message until this node reports the
outcome: ``ack`` and ``dead_letter`` send an ACK to the sender; ``retry`` keeps the
message here (a timer) with the sender still waiting; ``close`` sends every message
not settled back to its sender (RELEASE), which gives it to another instance.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from pycomms.spi import DeadLetter, Subscription

if TYPE_CHECKING:
    from ._connection import Connection


class Item:
    """One message held here: its bytes, attempt, and where the sender waits for the
    outcome (``conn`` None: the sender is this node). Once received it is also the
    delivery handed to core (one object per message): settling it ends its lease, and
    settling one whose lease ended does nothing. An item is leased at most once; a
    retry or a release makes a new one."""

    __slots__ = ("_receiver", "_token", "attempt", "conn", "data", "seq")

    def __init__(self, data: bytes, attempt: int, conn: Connection | None, seq: int) -> None:
        self.data = data
        self.attempt = attempt
        self.conn = conn
        self.seq = seq
        self._receiver: TcpReceiver | None = None
        self._token = -1

    def __repr__(self) -> str:
        return f"<Item seq={self.seq} attempt={self.attempt}>"

    def _settle(self) -> TcpReceiver | None:
        """The receiver, if this item's lease was still on (it ends now)."""
        receiver = self._receiver
        if receiver is None or receiver._leases.pop(self._token, None) is None:
            return None
        return receiver

    async def ack(self) -> None:
        receiver = self._receiver
        if receiver is not None and receiver._leases.pop(self._token, None) is not None:  # `_settle`, inline
            receiver._origin.done(self)

    async def retry(self, delay: float) -> None:
        if (receiver := self._settle()) is not None:
            receiver._put_later(Item(self.data, self.attempt + 1, self.conn, self.seq), delay)

    async def dead_letter(self, letter: DeadLetter) -> None:
        if (receiver := self._settle()) is not None:
            receiver._origin.store_dead(letter)
            receiver._origin.done(self)


class Origin(Protocol):
    """How outcomes reach senders: implemented by the transport."""

    def done(self, item: Item) -> None:
        """The message was handled or dead-lettered: tell its sender."""

    def release(self, item: Item, attempt: int) -> None:
        """Give the message back to its sender, to deliver as ``attempt`` elsewhere."""

    def store_dead(self, letter: DeadLetter) -> None:
        """Keep a dead letter at this node."""

    def receiver_closed(self, receiver: TcpReceiver) -> None:
        """Stop routing to ``receiver`` before its messages are released."""

    def flush(self) -> None:
        """Write out the outcomes and replies queued on links: a receiver is about to
        wait, so its handlers have nothing more to add to them this turn."""


class TcpReceiver:
    """The `Receiver` of one service on one node."""

    def __init__(self, service: str, origin: Origin) -> None:
        self.service = service
        self._origin = origin
        self._items: collections.deque[Item] = collections.deque()
        self._leases: dict[int, Item] = {}
        self._timers: dict[asyncio.TimerHandle, Item] = {}
        self._tokens = itertools.count()
        self._wakeup: asyncio.Future[None] | None = None
        self.closed = False

    def put(self, item: Item) -> None:
        self._items.append(item)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _put_later(self, item: Item, delay: float) -> None:
        if self.closed:
            self._origin.release(item, item.attempt)
            return
        if delay <= 0:
            self.put(item)
            return
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.pop(handle, None)
            self.put(item)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers[handle] = item

    @property
    def held(self) -> int:
        return len(self._items) + len(self._leases) + len(self._timers)

    async def receive(self, max_messages: int) -> Sequence[Item]:
        items = self._items
        while not items:
            if self.closed:
                return []
            self._origin.flush()
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        if self.closed:
            return []
        batch = []
        for _ in range(min(max_messages, len(items))):
            item = items.popleft()
            item._receiver = self
            item._token = token = next(self._tokens)
            self._leases[token] = item
            batch.append(item)
        return batch

    async def close(self) -> None:
        self.release_all()

    def release_all(self) -> None:
        """Stop, and give every message not settled back to its sender."""
        if self.closed:
            return
        self.closed = True
        self._origin.receiver_closed(self)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        release = self._origin.release
        leases, self._leases = self._leases, {}
        for item in leases.values():
            release(item, item.attempt + 1)
        for handle, item in list(self._timers.items()):
            handle.cancel()
            release(item, item.attempt)
        self._timers.clear()
        while self._items:
            item = self._items.popleft()
            release(item, item.attempt)


class Inboxes:
    """The receivers of this node's services, and the subscriptions they serve."""

    def __init__(self) -> None:
        self.receivers: dict[str, TcpReceiver] = {}
        self.subscriptions: dict[str, Subscription] = {}

    def add(self, subscription: Subscription, receiver: TcpReceiver) -> None:
        self.receivers[subscription.service] = receiver
        self.subscriptions[subscription.service] = subscription

    def live(self) -> dict[str, list[list[str]]]:
        """``{service: [events, commands]}`` of the running, catalogued services (for STATE)."""
        return {
            service: [sorted(sub.events), sorted(sub.commands)]
            for service, sub in self.subscriptions.items()
            if not self.receivers[service].closed and not sub.ephemeral
        }

    def release_all(self) -> None:
        """Close every receiver, giving what it holds back to the senders."""
        for receiver in list(self.receivers.values()):
            receiver.release_all()
