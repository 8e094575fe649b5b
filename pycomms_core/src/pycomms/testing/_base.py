"""The base of the conformance suite: how a scenario connects, and shared helpers."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import pytest

from .._bus import Bus
from .._connect import connect
from .._retry import Retry
from .._service import Service
from ._messages import Job, Ping
from ._runner import Recorder, eventually, run_strict

S = TypeVar("S", bound="SuiteBase")
FAST_RETRY = Retry(max_attempts=3, delay=0.05, backoff=1.0, jitter=0.0)


def scenario(timeout: float = 60.0) -> Callable[[Callable[[S], Awaitable[None]]], Callable[[S], None]]:
    """Turn an async scenario into a plain pytest test run by `run_strict`."""

    def decorate(func: Callable[[S], Awaitable[None]]) -> Callable[[S], None]:
        def test(self: S) -> None:
            run_strict(lambda: func(self), timeout)

        test.__name__ = func.__name__
        test.__qualname__ = func.__qualname__
        test.__doc__ = func.__doc__
        return test

    return decorate


class SuiteBase:
    """What every themed scenario module builds on: the URL, connecting, clean-up."""

    #: Seconds a backend may take to redeliver a message whose consumer went away
    #: without settling it (its visibility timeout, plus slack).
    redelivery_timeout: float = 30.0
    #: Seconds within which presence must show a joined node.
    presence_timeout: float = 10.0
    #: Seconds within which a cleanly closed node must be gone from presence.
    leave_timeout: float = 3.0
    #: Keyword options passed to every `pycomms.connect` of the suite.
    connect_options: ClassVar[dict[str, Any]] = {}

    namespace: str

    def make_url(self, namespace: str) -> str:
        """Return a URL for this backend isolated in ``namespace``."""
        raise NotImplementedError("a ConformanceSuite subclass implements make_url(namespace)")

    #: Drop every namespace a scenario used when it ends (`Bus.drop_namespace`), so a
    #: run leaves nothing on the broker; a failing drop fails the test.
    drop_namespaces: bool = True

    def setup_method(self, method: object) -> None:
        self.namespace = f"c{uuid.uuid4().hex[:12]}"
        self.used_namespaces: set[str] = set()

    def teardown_method(self, method: object) -> None:
        if not self.drop_namespaces:
            return
        for namespace in sorted(self.used_namespaces):
            run_strict(lambda ns=namespace: self._drop(ns), 60)  # type: ignore[misc]

    async def _drop(self, namespace: str) -> None:
        bus = await connect(self.make_url(namespace), **self.connect_options)
        await bus.drop_namespace(force=True)

    def connect(self, *services: Service, namespace: str | None = None, **options: Any) -> connect:
        self.used_namespaces.add(namespace or self.namespace)
        return connect(
            self.make_url(namespace or self.namespace),
            services=list(services),
            **{**self.connect_options, **options},
        )

    @staticmethod
    def require(bus: Bus, capability: str) -> None:
        if not getattr(bus.capabilities, capability):
            pytest.skip(f"the transport declares {capability}=False")


async def dead_letters_of(bus: Bus, service: str, count: int, timeout: float = 20.0) -> list[Any]:
    """Wait until ``service`` has ``count`` dead letters and return them."""
    letters: list[Any] = []

    async def enough() -> bool:
        nonlocal letters
        letters = await bus.dead_letters(service)
        return len(letters) >= count

    await eventually(enough, timeout, f"{count} dead letter(s) in {service!r}")
    assert len(letters) == count, f"expected {count} dead letters, got {len(letters)}"
    return letters


async def sees(bus: Bus, node_id: str) -> bool:
    return node_id in {node.id for node in await bus.nodes()}


def recording(rec: Recorder) -> Callable[[Ping], Awaitable[None]]:
    async def handle(m: Ping) -> None:
        rec.add(m.n)

    return handle


def recording_job(rec: Recorder, offset: int = 0) -> Callable[[Job], Awaitable[None]]:
    async def handle(job: Job) -> None:
        rec.add(job.n + offset)

    return handle


def recording_typed(rec: Recorder) -> Callable[[Any], Awaitable[None]]:
    async def handle(m: Any) -> None:
        rec.add((m.type_name, m.n))

    return handle
