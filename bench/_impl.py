"""What every benchmarked implementation (PyComms or a baseline) provides.

An implementation opens a `Session` per run: a consumer of ``BenchEvent`` that calls
``tracker.hit(seq)`` for each message handled, with at most ``concurrency`` handlers
at once, plus a producer side for ``publish`` and ``request``. The drivers in
``bench._run`` measure; implementations only move messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bench._messages import BenchEvent
from bench._tracker import Tracker

EVENTS = "events"
BATCHES = "batches"
REQUESTS = "requests"
ALL_WORKLOADS = frozenset({EVENTS, BATCHES, REQUESTS})


class Publisher(Protocol):
    """What ``publish_all`` needs: a ``publish`` of a sequence of events."""

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        """Publish ``events`` in one call (one, or a batch); return once accepted."""


class Session(Publisher, Protocol):
    """One implementation, set up for one run on fresh broker-side names."""

    async def request(self, seq: int) -> None:
        """Send ``Ping(seq)`` and wait for the matching ``Pong``; raise on a mismatch."""

    async def close(self) -> None:
        """Release everything and delete the run's broker-side data where possible."""


class Implementation(Protocol):
    """A named way of moving the benchmark's messages."""

    name: str
    description: str
    workloads: frozenset[str]

    async def open(self, tracker: Tracker, concurrency: int) -> Session:
        """Start a consumer feeding ``tracker`` and a producer; ready when it returns."""


class Unsupported(Exception):
    """Raised by a session for an operation its implementation does not offer."""
