"""``memory://NAME``: the in-process reference backend.

Buses in one process with the same name and namespace share one broker object. It
keeps each service's queue while the service's instances are down (retention), but
nothing survives the process. It implements the SPI in the most direct way and is
the yardstick for the conformance suite and for the core's own overhead.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic_core import from_json

from ._envelope import check_size
from ._errors import ConfigError, PublishError
from .hookspecs import hookimpl
from .spi import BackendConfig, Capabilities, DeadLetter, Envelope, NodeInfo, ReplySink, SchemeInfo, Subscription

CAPABILITIES = Capabilities(
    retention=True,
    persistent=False,
    delayed_delivery=True,
    ordering=True,
    presence=True,
    cross_process=False,
    transactional_publish=False,
)


@dataclass(slots=True)
class _Item:
    data: bytes
    attempt: int
    envelope: Envelope | None = None
    """The envelope ``data`` encodes, when a bus of this process published it (see
    `MemoryDelivery.decoded`); None for bytes from elsewhere (replayed, or put by tests)."""


class _Queue:
    """One service's queue: items, waiting receivers and the deliveries out on lease."""

    def __init__(self) -> None:
        self.items: collections.deque[_Item] = collections.deque()
        self.getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.timers: set[asyncio.TimerHandle] = set()

    def put(self, item: _Item) -> None:
        self.items.append(item)
        while self.getters:
            getter = self.getters.popleft()
            if not getter.done():
                getter.set_result(None)
                break

    def put_later(self, item: _Item, delay: float) -> None:
        if delay <= 0:
            self.put(item)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self.timers.discard(handle)
            self.put(item)

        handle = loop.call_later(delay, fire)
        self.timers.add(handle)


class _Broker:
    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}
        self.event_subscribers: dict[str, set[str]] = collections.defaultdict(set)
        self.command_owner: dict[str, str] = {}
        self.unrouted: dict[str, list[_Item]] = collections.defaultdict(list)
        self.dead: dict[str, dict[str, DeadLetter]] = collections.defaultdict(dict)
        self.nodes: dict[str, NodeInfo] = {}
        self.reply_sinks: dict[str, ReplySink] = {}
        self.observers: collections.Counter[str] = collections.Counter()
        """Running instances of each ephemeral service."""
        self.loop: tuple[int, asyncio.AbstractEventLoop] | None = None
        """(pid, event loop) of the buses open on it: one loop at a time."""

    def attach(self, name: str) -> None:
        """Refuse a bus on another event loop while buses of this process use it (its
        futures belong to one loop; a `pycomms.sync` bus runs a loop of its own)."""
        loop, pid = asyncio.get_running_loop(), os.getpid()
        held = self.loop
        if self.nodes and held is not None and held[0] == pid and held[1] is not loop and not held[1].is_closed():
            raise ConfigError(
                f"{name} is already open on another event loop of this process (each pycomms.sync bus runs "
                "its own): use one bus per memory:// name (with all its services), or a cross-process backend"
            )
        self.loop = (pid, loop)

    def queue(self, service: str) -> _Queue:
        queue = self.queues.get(service)
        if queue is None:
            queue = self.queues[service] = _Queue()
        return queue

    def subscribe(self, sub: Subscription) -> _Queue:
        queue = self.queue(sub.service)
        if sub.ephemeral:
            self.observers[sub.service] += 1
        for type_name in sub.events:
            self.event_subscribers[type_name].add(sub.service)
        for type_name in sub.commands:
            self.command_owner.setdefault(type_name, sub.service)
            for item in self.unrouted.pop(type_name, ()):
                queue.put(item)
        return queue

    def unsubscribe(self, service: str) -> None:
        """The last instance of an ephemeral service stopped: forget it entirely."""
        self.observers[service] -= 1
        if self.observers[service] > 0:
            return
        del self.observers[service]
        for services in self.event_subscribers.values():
            services.discard(service)
        self.queues.pop(service, None)

    def route(self, env: Envelope) -> None:
        data = env.encode()
        sent = env if type(env.body) is bytes else None  # else not built by `outgoing`: receivers decode
        if env.kind == "event":
            for service in self.event_subscribers.get(env.type, ()):
                self.queues[service].put(_Item(data, 1, sent))
        elif env.kind in ("command", "request"):
            owner = self.command_owner.get(env.type)
            if owner is None:
                self.unrouted[env.type].append(_Item(data, 1, sent))
            else:
                self.queues[owner].put(_Item(data, 1, sent))
        else:
            raise PublishError(f"unknown envelope kind {env.kind!r}")


_brokers: dict[tuple[str, str], _Broker] = {}


class MemoryDelivery:
    __slots__ = ("_envelope", "_receiver", "_token", "attempt", "data")

    def __init__(self, receiver: MemoryReceiver, item: _Item, token: int) -> None:
        self._receiver = receiver
        self._token = token
        self._envelope = item.envelope
        self.data = item.data
        self.attempt = item.attempt

    def decoded(self, max_size: int) -> Envelope:
        """What ``Envelope.decode(self.data, max_size)`` gives, without parsing and
        checking again the attributes this process built: only the body is parsed from
        its JSON (a handler never shares the publisher's objects) and the headers are
        copied. Raises `EnvelopeError` as decode does (too large)."""
        sent = self._envelope
        if sent is None:
            return Envelope.decode(self.data, max_size)
        check_size(len(self.data), max_size)
        return Envelope(
            sent.id,
            sent.type,
            sent.kind,
            sent.source,
            from_json(sent.body),
            sent.time,
            sent.correlation_id,
            sent.causation_id,
            sent.reply_to,
            sent.key,
            dict(sent.headers) if sent.headers else {},
        )

    def _settle(self) -> bool:
        return self._receiver._leases.pop(self._token, None) is not None

    async def ack(self) -> None:
        self._settle()

    async def retry(self, delay: float) -> None:
        if self._settle():
            self._receiver._queue.put_later(_Item(self.data, self.attempt + 1, self._envelope), delay)

    async def dead_letter(self, letter: DeadLetter) -> None:
        if self._settle():
            self._receiver._broker.dead[letter.service][letter.id] = letter


class MemoryReceiver:
    def __init__(self, broker: _Broker, queue: _Queue, *, ephemeral: str | None = None) -> None:
        self._broker = broker
        self._queue = queue
        self._ephemeral = ephemeral
        """The service name when it is ephemeral."""
        self._leases: dict[int, _Item] = {}
        self._tokens = itertools.count()
        self._closed = False
        self._getter: asyncio.Future[None] | None = None

    async def receive(self, max_messages: int) -> Sequence[MemoryDelivery]:
        queue = self._queue
        while not queue.items:
            if self._closed:
                return []
            getter = asyncio.get_running_loop().create_future()
            queue.getters.append(getter)
            self._getter = getter
            try:
                await getter
            except asyncio.CancelledError:
                if getter.done() and not getter.cancelled():
                    _wake_next(queue)  # we were woken but will not take: pass it on
                getter.cancel()
                raise
            finally:
                self._getter = None
        if self._closed:
            return []
        batch = []
        for _ in range(min(max_messages, len(queue.items))):
            item = queue.items.popleft()
            token = next(self._tokens)
            self._leases[token] = item
            batch.append(MemoryDelivery(self, item, token))
        if queue.items:
            _wake_next(queue)
        return batch

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)
        leases, self._leases = self._leases, {}
        if self._ephemeral is not None:
            self._broker.unsubscribe(self._ephemeral)  # an observer's messages go with it
            return
        for item in leases.values():
            self._queue.put(_Item(item.data, item.attempt + 1, item.envelope))


def _wake_next(queue: _Queue) -> None:
    while queue.getters:
        getter = queue.getters.popleft()
        if not getter.done():
            getter.set_result(None)
            return


class MemoryTransport:
    """The `Transport` of ``memory://``."""

    capabilities = CAPABILITIES

    def __init__(self, config: BackendConfig) -> None:
        self._key = (config.url.split("?", 1)[0], config.namespace)
        self._broker = _brokers.setdefault(self._key, _Broker())
        self._node: NodeInfo | None = None
        self._receivers: list[MemoryReceiver] = []

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        self._broker.attach(self._key[0])
        self._node = node
        self._broker.nodes[node.id] = node
        self._broker.reply_sinks[node.id] = replies

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        route = self._broker.route
        for env in envelopes:
            route(env)

    async def send_reply(self, envelope: Envelope) -> None:
        sink = self._broker.reply_sinks.get(envelope.reply_to or "")
        if sink is not None:
            sink(envelope.encode())

    async def subscribe(self, subscription: Subscription) -> MemoryReceiver:
        service = subscription.service if subscription.ephemeral else None
        receiver = MemoryReceiver(self._broker, self._broker.subscribe(subscription), ephemeral=service)
        self._receivers.append(receiver)
        return receiver

    async def nodes(self) -> list[NodeInfo]:
        return [node.seen() for node in self._broker.nodes.values()]

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        return list(itertools.islice(self._broker.dead.get(service, {}).values(), limit))

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        letters = self._take(service, ids)
        queue = self._broker.queue(service)
        for letter in letters:
            queue.put(_Item(letter.envelope, 1))
        return len(letters)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        return len(self._take(service, ids))

    def _take(self, service: str, ids: Sequence[str] | None) -> list[DeadLetter]:
        store = self._broker.dead.get(service, {})
        wanted = list(store) if ids is None else [i for i in ids if i in store]
        return [store.pop(i) for i in wanted]

    async def drop_namespace(self) -> int:
        broker = self._broker
        removed = len(broker.queues) + len(broker.unrouted) + sum(len(d) for d in broker.dead.values())
        if _brokers.get(self._key) is broker:
            del _brokers[self._key]  # buses still open (forced drop) keep the old one; new buses start empty
        return removed

    async def backlog(self, service: str) -> int | None:
        if self._node is None or self._node.id not in self._broker.nodes:
            return None  # not open, or closed
        queue = self._broker.queues.get(service)
        return len(queue.items) if queue is not None else None

    async def close(self) -> None:
        for receiver in self._receivers:
            await receiver.close()
        if self._node is not None:
            self._broker.nodes.pop(self._node.id, None)
            self._broker.reply_sinks.pop(self._node.id, None)


@hookimpl
def pycomms_schemes() -> list[SchemeInfo]:
    return [
        SchemeInfo(
            "memory",
            "pycomms-core",
            "in-process broker shared by buses with the same name (tests, demos)",
            CAPABILITIES,
        )
    ]


@hookimpl
def pycomms_transport(config: BackendConfig) -> MemoryTransport | None:
    if config.scheme != "memory":
        return None
    if config.options:
        raise ConfigError(
            f"memory:// takes no options besides namespace and max_message_size; got {sorted(config.options)}"
        )
    return MemoryTransport(config)
