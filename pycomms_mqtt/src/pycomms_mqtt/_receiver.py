"""One bus's consumption of one service: a persistent MQTT session on shared subscriptions.

A lasting service's instance takes a session *slot*: client id ``<root>/<service>/<n>``
with the lowest ``n`` no live instance of the service announces in presence. The session
outlives the instance (``session_expiry``), so what is sent while the service is down
waits in it, and the next instance to take that slot receives it, with every delivery
that was out unacknowledged (the broker sends those again on the resumed session). An
observer (``ephemeral``) has a session of its own that ends with its connection.

PUBACK leaves only when the core settles a delivery. A retry is a copy published to the
service's own topic with ``pycomms-attempt`` and ``pycomms-due``, then the PUBACK of the
original; the instance that gets the copy holds it unacknowledged until it is due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from paho.mqtt.client import MQTTMessage

from pycomms import ConnectError
from pycomms.spi import DeadLetter, Subscription, stop_tasks

from ._errors import QUIET_ERRORS, describe
from ._link import Endpoint, Link, Session
from ._options import MqttOptions
from ._retained import read_retained
from ._topics import Topics
from ._wire import incoming, properties

log = logging.getLogger("pycomms.mqtt")

SLOT_ATTEMPTS = 16
"""Slots an instance tries while others starting at once take the ones it chose."""


@dataclass(frozen=True, slots=True)
class Owner:
    """What a receiver may use of its transport."""

    endpoint: Endpoint
    topics: Topics
    options: MqttOptions
    max_size: int
    node_id: str
    publisher: Link
    taken_slots: Callable[[str], Awaitable[dict[str, int]]]
    """Slot of ``service`` announced by each other live node, by node id."""
    announce: Callable[[str, int], Awaitable[None]]


class MqttDelivery:
    __slots__ = ("_generation", "_mid", "_receiver", "attempt", "data")

    def __init__(self, receiver: MqttReceiver, generation: int, mid: int, data: bytes, attempt: int) -> None:
        self._receiver = receiver
        self._generation = generation
        self._mid = mid
        self.data = data
        self.attempt = attempt

    def _current(self) -> bool:
        link = self._receiver.link
        return link is not None and link.generation == self._generation and link.connected

    async def ack(self) -> None:
        link = self._receiver.link
        if link is not None:
            link.ack(self._generation, self._mid)

    async def retry(self, delay: float) -> None:
        if not self._current():
            return  # from an earlier connection: the broker delivers the original again
        receiver = self._receiver
        props = properties(attempt=self.attempt + 1, due=time.time() + delay)
        await receiver.owner.publisher.publish(receiver.direct_topic, self.data, properties=props, what="retry")
        await self.ack()

    async def dead_letter(self, letter: DeadLetter) -> None:
        if not self._current():
            return
        receiver = self._receiver
        topic = receiver.owner.topics.dead_letter(receiver.subscription.service, letter.id)
        await receiver.owner.publisher.publish(topic, letter.to_json(), retain=True, what="dead letter")
        await self.ack()


class MqttReceiver:
    def __init__(self, owner: Owner, subscription: Subscription) -> None:
        self.owner = owner
        self.subscription = subscription
        self.link: Link | None = None
        self.slot: int | None = None
        self.direct_topic = owner.topics.direct(subscription.service)
        self._ready: deque[MqttDelivery] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._switching: asyncio.Task[None] | None = None

    def _topics(self) -> list[str]:
        topics, sub = self.owner.topics, self.subscription
        names = [topics.event(t) for t in sorted(sub.events)] + [topics.command(t) for t in sorted(sub.commands)]
        if not sub.ephemeral:
            names.append(self.direct_topic)
        return [topics.shared(sub.service, name) for name in names]

    async def open(self) -> None:
        owner, sub = self.owner, self.subscription
        if sub.ephemeral:
            session = Session(f"{owner.topics.root}/{owner.node_id}/{sub.service}", subscriptions=tuple(self._topics()))
            self.link = Link(owner.endpoint, session, on_message=self._on_message)
            await self.link.start()
            return
        await self._take_slot(set())

    async def _take_slot(self, avoid: set[int]) -> None:
        """Take the lowest slot no live instance announces. Instances that start at once
        may choose the same one, and the broker then drops each in turn as the other
        connects: one that cannot start because another now announces its slot tries the
        next, and of two that run on one slot the one with the larger node id moves
        (`_rival_holds_slot`)."""
        avoid = set(avoid)
        for _ in range(SLOT_ATTEMPTS - 1):
            try:
                await self._try_slot(avoid)
                return
            except ConnectError as exc:
                slot = getattr(exc, "slot", None)
                if slot is None or slot not in (await self.owner.taken_slots(self.subscription.service)).values():
                    raise
                log.info(
                    "mqtt: %s: slot %d went to another instance while starting; taking another",
                    self.subscription.service,
                    slot,
                )
                avoid.add(slot)
        await self._try_slot(avoid)

    async def _rival_holds_slot(self) -> bool:
        """Whether a live node with a smaller id announces this instance's slot."""
        slot, me = self.slot, self.owner.node_id
        if slot is None:
            return False
        holders = await self.owner.taken_slots(self.subscription.service)
        return any(node < me and held == slot for node, held in holders.items())

    async def _try_slot(self, avoid: set[int]) -> None:
        owner, sub = self.owner, self.subscription
        taken = set((await owner.taken_slots(sub.service)).values()) | avoid
        slot = next(n for n in range(len(taken) + 1) if n not in taken)
        session = Session(
            owner.topics.session_id(sub.service, slot),
            persistent=True,
            session_expiry=owner.options.session_expiry,
            receive_maximum=owner.options.receive_maximum,
            manual_ack=True,
            subscriptions=tuple(self._topics()),
        )
        link = Link(
            owner.endpoint,
            session,
            on_message=self._on_message,
            on_taken_over=self._taken_over,
            on_resubscribed=self._take_parked,  # sent while the restored broker had no subscription
            is_taken_over=self._rival_holds_slot,
        )
        try:
            await link.start()
        except ConnectError as exc:
            exc.slot = slot  # type: ignore[attr-defined]
            raise
        self.link, self.slot = link, slot
        record = owner.topics.session_record(sub.service, slot)
        await owner.publisher.publish(record, session.client_id.encode(), retain=True, what="session record")
        await owner.announce(sub.service, slot)
        await self._take_parked()

    async def _take_parked(self) -> None:
        """Commands sent before any service subscribed to their type: to this service."""
        owner, sub = self.owner, self.subscription
        if not sub.commands:
            return
        filters = [owner.topics.parked_all(t) for t in sorted(sub.commands)]
        parked = await read_retained(owner.endpoint, owner.topics, filters, "taking parked commands")
        for topic, data in parked.items():
            await owner.publisher.publish(
                self.direct_topic, data, properties=properties(), what="taking a parked command"
            )
            await owner.publisher.publish(topic, b"", retain=True, what="taking a parked command")

    def _taken_over(self) -> None:
        """Another instance took this slot's session (both chose it at once): take another."""
        if self._closed or self.slot is None:
            return
        lost, old = self.slot, self.link

        async def switch() -> None:
            if old is not None:
                await old.close()  # its background subscribing, if any, ends with it
            try:
                await self._take_slot({lost})
            except QUIET_ERRORS as exc:
                log.error("mqtt: %s could not take another session slot: %s", self.subscription.service, describe(exc))

        self._switching = asyncio.get_running_loop().create_task(
            switch(), name=f"mqtt {self.subscription.service}: another slot"
        )

    def _on_message(self, message: MQTTMessage, generation: int) -> None:
        got = incoming(message, self.owner.max_size, self.owner.topics.reply(""))
        delivery = MqttDelivery(self, generation, message.mid, got.data, got.attempt)
        wait = got.due - time.time()
        if wait > 0:
            loop = asyncio.get_running_loop()
            handle = loop.call_later(wait, self._due, delivery)
            self._timers.add(handle)
            return
        self._ready.append(delivery)
        self._wake.set()

    def _due(self, delivery: MqttDelivery) -> None:
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()}
        if not self._closed:
            self._ready.append(delivery)
            self._wake.set()

    async def receive(self, max_messages: int) -> Sequence[MqttDelivery]:
        while not self._ready:
            if self._closed:
                return []
            self._wake.clear()
            await self._wake.wait()
        if self._closed:
            return []
        out = [self._ready.popleft() for _ in range(min(max_messages, len(self._ready)))]
        return out

    async def close(self) -> None:
        """Disconnect without acknowledging what is unsettled: the broker keeps it in the
        session for the next instance on this slot (an observer's session just ends)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._ready.clear()
        if self._switching is not None:
            await stop_tasks([self._switching], give_up_after=2.0)
        if self.link is not None:
            await self.link.close()
