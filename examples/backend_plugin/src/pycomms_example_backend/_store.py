"""The "broker" of ``example://``: per-service queues, routing, dead letters, presence.

A real backend keeps these facts in Redis keys, AMQP queues or SQL tables. Here they
are Python objects in a process-wide dict, which keeps the example short and shows
what any backend must keep:

- one queue per *service* (not per bus): the instances of a service compete for it,
  and it outlives them, so messages wait while every instance is down (retention);
  except for an *ephemeral* service (an observer, such as ``pycomms listen``), whose
  queue goes away with its last running instance;
- which services want which event types, and which one service owns each command or
  request type;
- the dead letters of each service, and the live nodes with their reply callbacks.

Everything here runs on the event loop of the buses that share the store, so no locks
beyond the asyncio `Condition` that wakes waiting receivers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter, defaultdict, deque
from dataclasses import dataclass

from pycomms import PublishError
from pycomms.spi import DeadLetter, Envelope, NodeInfo, ReplySink, Subscription


@dataclass(slots=True)
class Item:
    """One message waiting in a service's queue."""

    data: bytes  # the encoded envelope, exactly as published
    attempt: int  # 1 on the first delivery, +1 per retry or redelivery


class ServiceQueue:
    """A service's messages: ready ones in order, delayed ones by due time.

    A delayed retry is just an item with a due time, as in an SQL backend's
    ``available_at`` column: receivers skip it until then, so no handler slot and no
    timer task waits for it.
    """

    def __init__(self) -> None:
        self.ready: deque[Item] = deque()
        self.delayed: list[tuple[float, int, Item]] = []  # a heap of (due, tie-breaker, item)
        self.changed = asyncio.Condition()  # notified whenever there is something new to look at
        self._order = itertools.count()

    async def put(self, item: Item, delay: float = 0.0) -> None:
        async with self.changed:
            if delay > 0:
                due = asyncio.get_running_loop().time() + delay
                heapq.heappush(self.delayed, (due, next(self._order), item))
            else:
                self.ready.append(item)
            # notify_all, not notify: a notified waiter that is being cancelled would
            # swallow a single wake-up, and every waiter re-checks what it waits for
            self.changed.notify_all()

    def take(self, max_items: int) -> list[Item]:
        """Up to ``max_items`` items that are due now (call with ``changed`` held)."""
        now = asyncio.get_running_loop().time()
        while self.delayed and self.delayed[0][0] <= now:
            self.ready.append(heapq.heappop(self.delayed)[2])
        return [self.ready.popleft() for _ in range(min(max_items, len(self.ready)))]

    def next_due_in(self) -> float | None:
        """Seconds until the first delayed item is due, or ``None`` when there is none."""
        if not self.delayed:
            return None
        return max(0.0, self.delayed[0][0] - asyncio.get_running_loop().time())


class Store:
    """Everything buses with one ``example://NAME`` URL and namespace share."""

    def __init__(self) -> None:
        self.queues: dict[str, ServiceQueue] = defaultdict(ServiceQueue)
        self.event_subscribers: dict[str, set[str]] = defaultdict(set)  # event type -> services
        self.command_owner: dict[str, str] = {}  # command or request type -> its service
        self.unowned: dict[str, list[Item]] = defaultdict(list)  # commands sent before any owner started
        self.dead: dict[str, dict[str, DeadLetter]] = defaultdict(dict)  # service -> id -> letter, oldest first
        self.nodes: dict[str, NodeInfo] = {}
        self.reply_sinks: dict[str, ReplySink] = {}
        self.observers: Counter[str] = Counter()  # ephemeral service -> its running instances

    async def subscribe(self, sub: Subscription) -> ServiceQueue:
        """Record what ``sub.service`` handles. Kept after its instances leave (retention),
        unless the service is ephemeral: see `unsubscribe`."""
        queue = self.queues[sub.service]
        if sub.ephemeral:
            self.observers[sub.service] += 1
        for type_name in sub.events:
            self.event_subscribers[type_name].add(sub.service)
        for type_name in sub.commands:
            # the core refuses two services for one command type on one bus; across
            # buses, the first one to subscribe owns it
            if self.command_owner.setdefault(type_name, sub.service) == sub.service:
                for item in self.unowned.pop(type_name, ()):
                    await queue.put(item)
        return queue

    def unsubscribe(self, service: str) -> None:
        """An instance of the ephemeral ``service`` stopped; after the last one, forget
        the service: events published from now on are not kept for it."""
        self.observers[service] -= 1
        if self.observers[service] > 0:
            return
        del self.observers[service]
        for services in self.event_subscribers.values():
            services.discard(service)
        self.queues.pop(service, None)

    async def route(self, env: Envelope) -> None:
        """Deliver one published envelope according to its kind (see `Transport.publish`)."""
        if env.kind == "event":
            for service in self.event_subscribers.get(env.type, ()):
                await self.queues[service].put(Item(env.encode(), 1))
        elif env.kind in ("command", "request"):
            owner = self.command_owner.get(env.type)
            if owner is None:
                self.unowned[env.type].append(Item(env.encode(), 1))  # kept, not dropped
            else:
                await self.queues[owner].put(Item(env.encode(), 1))
        else:
            raise PublishError(f"example:// cannot route an envelope of kind {env.kind!r}")

    def reply(self, env: Envelope) -> None:
        """Hand a reply to the node that asked (see `Transport.send_reply`)."""
        sink = self.reply_sinks.get(env.reply_to or "")
        if sink is not None:  # best effort: the requester may be gone
            sink(env.encode())

    def take_dead(self, service: str, ids: list[str] | None) -> list[DeadLetter]:
        """Remove and return the dead letters of ``service`` with ``ids`` (all when ``None``)."""
        letters = self.dead[service]
        wanted = list(letters) if ids is None else [i for i in ids if i in letters]
        return [letters.pop(i) for i in wanted]


_stores: dict[tuple[str, str], Store] = {}


def store_for(name: str, namespace: str) -> Store:
    """The store of ``example://NAME`` in ``namespace``, created on first use.

    It lives as long as the process, like a broker outlives its clients, and belongs
    to the event loop that first uses it (its `Condition` objects bind to that loop).
    """
    return _stores.setdefault((name, namespace), Store())


def drop_store(store: Store) -> int:
    """Forget ``store`` (a namespace drop): the next bus of its name and namespace
    starts empty. Returns how many queues, unowned commands and letters it held."""
    for key, known in list(_stores.items()):
        if known is store:
            del _stores[key]
    return len(store.queues) + sum(map(len, store.unowned.values())) + sum(map(len, store.dead.values()))
