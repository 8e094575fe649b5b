"""The messages every implementation carries, so that all pay for the same payload."""

from __future__ import annotations

from pycomms import Event, Message, Request


class BenchEvent(Event, name="bench.event"):
    """A small order-like event (about 120 bytes of JSON)."""

    seq: int
    sku: str
    quantity: int
    price: float
    tags: list[str]


class Pong(Message, name="bench.pong"):
    seq: int


class Ping(Request[Pong], name="bench.ping"):
    seq: int


def make_events(count: int) -> list[BenchEvent]:
    """``count`` events with ``seq`` 0..count-1, built before any clock starts."""
    return [
        BenchEvent(seq=i, sku=f"SKU-{i % 997:04d}", quantity=i % 7 + 1, price=9.99 + i % 13, tags=["bench", "pycomms"])
        for i in range(count)
    ]
