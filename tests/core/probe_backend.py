"""A test-only ``probe://`` backend: the memory broker behind a transport whose calls
can be parked at a `Gate` (before or after the broker accepted a publish, in open,
subscribe and settle) and whose deliveries record every settle call. Parking a call is
how a real network transport suspends; the memory transport never does.

Test modules import `probe_plugin` (an autouse fixture registering the backend) with
the helpers they use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic_core import from_json

import pycomms
from pycomms import PublishError, Service
from pycomms._memory import MemoryDelivery, MemoryReceiver, MemoryTransport
from pycomms._plugins import plugin_manager
from pycomms.spi import BackendConfig, DeadLetter, Envelope, NodeInfo, ReplySink, SchemeInfo, Subscription, new_id
from pycomms.testing import scale


class Gate:
    """A point where transport calls park until the test opens the gate."""

    def __init__(self) -> None:
        self.waiting = 0
        self.passed = 0
        self._changed = asyncio.Event()
        self._open = asyncio.Event()

    async def park(self) -> None:
        self.waiting += 1
        self._changed.set()
        try:
            await self._open.wait()
        finally:
            self.waiting -= 1
            self._changed.set()
        self.passed += 1

    def open(self) -> None:
        self._open.set()

    async def reached(self, count: int = 1, timeout: float = 2.0) -> None:
        """Wait until ``count`` calls are parked here."""
        try:
            async with asyncio.timeout(timeout * scale()):
                while self.waiting < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.waiting} of {count} calls parked after {timeout * scale():.1f}s") from None


class ProbeDelivery:
    """Wraps a memory delivery; records settle calls and which of them completed."""

    def __init__(self, receiver: ProbeReceiver, inner: MemoryDelivery) -> None:
        self._receiver = receiver
        self._inner = inner
        self.data = inner.data
        self.attempt = inner.attempt
        try:
            raw = from_json(inner.data)
            self.id, self.type = str(raw["id"]), str(raw["type"])
        except Exception:
            self.id, self.type = "?", "?"
        self.calls: list[str] = []
        self.completed: list[str] = []

    async def _settle(self, name: str, call: Callable[[], Any]) -> None:
        transport = self._receiver.transport
        self.calls.append(name)
        if len(self.calls) == 1:
            self._receiver.outstanding -= 1
        transport.changed.set()
        if transport.settle_gate is not None:
            await transport.settle_gate.park()
        await call()
        self.completed.append(name)
        transport.changed.set()

    async def ack(self) -> None:
        await self._settle("ack", self._inner.ack)

    async def retry(self, delay: float) -> None:
        await self._settle("retry", lambda: self._inner.retry(delay))

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self._settle("dead_letter", lambda: self._inner.dead_letter(letter))


class ProbeReceiver:
    """Wraps a memory receiver; records each ``receive(n)`` ask with the deliveries
    then handed out and not yet settled."""

    def __init__(self, transport: ProbeTransport, inner: MemoryReceiver, concurrency: int) -> None:
        self.transport = transport
        self._inner = inner
        self.concurrency = concurrency
        self.outstanding = 0
        self.asks: list[tuple[int, int]] = []

    async def receive(self, max_messages: int) -> Sequence[ProbeDelivery]:
        self.asks.append((max_messages, self.outstanding))
        self.transport.changed.set()
        while True:
            try:
                received = await self._inner.receive(max_messages)
                break
            except asyncio.CancelledError:
                if self.transport.swallow_cancels <= 0:
                    raise
                # what a driver with Python 3.11's wait_for does when the cancel races a result
                self.transport.swallow_cancels -= 1
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()
        batch = [ProbeDelivery(self, d) for d in received]
        self.outstanding += len(batch)
        self.transport.deliveries.extend(batch)
        self.transport.changed.set()
        if self.transport.on_receive is not None:
            self.transport.on_receive(batch)
        return batch

    async def close(self) -> None:
        await self._inner.close()


class ProbeTransport(MemoryTransport):
    """``memory://`` with gates and records."""

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.open_gate: Gate | None = None
        self.subscribe_gate: Gate | None = None
        self.settle_gate: Gate | None = None
        self.publish_before: Gate | None = None  # parked before the broker has the message
        self.publish_after: Gate | None = None  # parked after the broker accepted it
        self.gated_kinds = frozenset({"event", "command", "request"})
        self.on_reply: Callable[[bytes], None] | None = None
        self.on_receive: Callable[[list[ProbeDelivery]], None] | None = None
        self.on_close: Callable[[], None] | None = None
        self.closed = False
        self.swallow_cancels = 0  # receive() ignores this many cancellations
        self.publish_swallows = 0  # publish() waits and ignores this many cancellations, then returns
        self.receivers: list[ProbeReceiver] = []
        self.deliveries: list[ProbeDelivery] = []
        self.changed = asyncio.Event()

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        if self.open_gate is not None:
            await self.open_gate.park()

        def sink(data: bytes) -> None:
            replies(data)
            if self.on_reply is not None:
                self.on_reply(data)

        await super().open(node, sink)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        gated = any(env.kind in self.gated_kinds for env in envelopes)
        if gated and self.publish_before is not None:
            await self.publish_before.park()
        if gated and self.publish_swallows > 0:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:  # as a driver that turns a cancel into its own handled error
                self.publish_swallows -= 1
        if self.closed:
            raise PublishError("probe transport is closed")
        await super().publish(envelopes)
        if gated and self.publish_after is not None:
            await self.publish_after.park()

    async def send_reply(self, envelope: Envelope) -> None:
        gated = "reply" in self.gated_kinds
        if gated and self.publish_before is not None:
            await self.publish_before.park()
        if self.closed:
            raise PublishError("probe transport is closed")
        await super().send_reply(envelope)
        if gated and self.publish_after is not None:
            await self.publish_after.park()

    async def subscribe(self, subscription: Subscription) -> ProbeReceiver:  # type: ignore[override]
        if self.subscribe_gate is not None:
            await self.subscribe_gate.park()
        receiver = ProbeReceiver(self, await super().subscribe(subscription), subscription.concurrency)
        self.receivers.append(receiver)
        return receiver

    async def close(self) -> None:
        self.closed = True
        if self.on_close is not None:
            self.on_close()
        await super().close()

    async def until(self, check: Callable[[], bool], timeout: float = 2.0) -> None:
        """Wait until ``check()`` holds, re-checking on every receive and settle."""
        try:
            async with asyncio.timeout(timeout * scale()):
                while not check():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"condition not met within {timeout * scale():.1f}s") from None


class ProbePlugin:
    @pycomms.hookimpl
    def pycomms_schemes(self) -> list[SchemeInfo]:
        return [SchemeInfo("probe", "tests", "memory broker with gates and records")]

    @pycomms.hookimpl
    def pycomms_transport(self, config: BackendConfig) -> ProbeTransport | None:
        return ProbeTransport(config) if config.scheme == "probe" else None


@pytest.fixture(autouse=True)
def probe_plugin() -> Iterator[None]:
    plugin_manager().register(ProbePlugin(), name="probe-transport")
    try:
        yield
    finally:
        plugin_manager().unregister(name="probe-transport")


def new_url() -> str:
    return f"probe://core?namespace=p{new_id()[-12:]}"


def probe(bus: pycomms.Bus) -> ProbeTransport:
    transport = bus._transport
    assert isinstance(transport, ProbeTransport)
    return transport


@asynccontextmanager
async def opened(url: str, services: Sequence[Service] = (), grace: float = 0.5) -> AsyncIterator[pycomms.Bus]:
    """An open bus closed with a short grace, so a failing test does not wait 10 s."""
    bus = await pycomms.connect(url, services=list(services))
    try:
        yield bus
    finally:
        await bus.close(grace=grace)


async def elapsed_of(awaitable: Any) -> float:
    start = time.monotonic()
    await awaitable
    return time.monotonic() - start
