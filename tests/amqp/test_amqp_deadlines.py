"""Deadlines of the AMQP backend (issue 11): nothing listening, a server that accepts and
never answers, a link that goes silent mid-session (a proxy that stops forwarding,
sockets open) and a link closed mid-session. Every call raises the documented error
within its deadline (plus a margin), naming the backend, host:port, the operation and
the deadline, and ``close(grace)`` returns on its own, well within core's bound."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from amqp_messages import Job
from amqp_support import broker_address, url_at, url_for
from fault_proxy import FaultProxy, SilentServer, free_port

import pycomms
from pycomms import ConnectError, Event, OperationError, PublishError, Service
from pycomms.spi import CLOSE_BOUND
from pycomms.testing import run_strict, scale
from pycomms_amqp._connection import CLOSE_TIMEOUT, finish_within

CONNECT_TIMEOUT = 1.0
OPERATION_TIMEOUT = 1.5
MARGIN = 2.0 * scale()
GRACE = 1.0
CLOSE_WITHIN = GRACE + 2 * CLOSE_TIMEOUT
"""What docs/backends/amqp.md promises for close(grace) on a silent link: each close
step waits `CLOSE_TIMEOUT`, the first one that passes it drops the socket."""
SECRET = "s3cret-deadline-pw"


class Beep(Event, name="amqp_deadline.beep"):
    n: int


def beeper() -> Service:
    svc = Service("beeper")

    @svc.on
    async def beep(event: Beep) -> None:
        pass

    @svc.on
    async def job(command: Job) -> None:
        pass

    return svc


async def timed(call: Awaitable[Any]) -> tuple[BaseException | None, float]:
    """The error ``call`` raised (``None`` if it returned) and how long it took."""
    started = time.monotonic()
    try:
        await call
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def check(outcome: tuple[BaseException | None, float], error: type[Exception], text: str, deadline: float) -> None:
    exc, took = outcome
    assert isinstance(exc, error), f"expected {error.__name__} ({text}), got {exc!r}"
    assert text in str(exc), str(exc)
    assert took <= deadline + MARGIN, f"{error.__name__} after {took:.1f}s, deadline {deadline}s: {exc}"


def core_gave_up(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Core's own bound cut the close short (the transport did not finish by itself)."""
    return [r.getMessage() for r in caplog.records if r.name == "pycomms" and "passed its deadline" in r.getMessage()]


def test_nothing_listening_is_one_clear_connect_error(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        port = free_port()
        url = url_for(namespace, f"amqp://guest:{SECRET}@127.0.0.1:{port}/", connect_timeout=CONNECT_TIMEOUT)
        outcome = await timed(pycomms.connect(url))
        check(outcome, ConnectError, f"amqp: connect to 127.0.0.1:{port} failed: ConnectionRefusedError", 0)
        exc = outcome[0]
        assert exc is not None
        assert SECRET not in str(exc)
        assert exc.__cause__ is None
        assert exc.__suppress_context__, "one line, not a chain of driver tracebacks"

    run_strict(scenario, 30)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [], "the error is logged twice"


@pytest.mark.parametrize("scheme", ["amqp", "amqps"])
def test_server_that_never_answers_is_a_connect_error_within_connect_timeout(namespace: str, scheme: str) -> None:
    """TCP is accepted, the AMQP greeting (or the TLS handshake) never comes."""

    async def scenario() -> None:
        server = SilentServer().start()
        try:
            url = url_for(namespace, f"{scheme}://guest:{SECRET}@127.0.0.1:{server.port}/", connect_timeout=1.0)
            exc, took = outcome = await timed(pycomms.connect(url))
            check(outcome, ConnectError, f"amqp: connect to 127.0.0.1:{server.port} timed out after 1.0s", 1.0)
            assert "(connect_timeout)" in str(exc)
            assert took >= 1.0 - 0.05, "raised before the deadline: not the deadline that ended it"
            assert server.accepted == 1
            assert SECRET not in str(exc)
        finally:
            server.stop()

    run_strict(scenario, 30)


async def _operations_fail(bus: pycomms.Bus, where: str) -> None:
    """Every call of a bus whose link is gone raises its documented error in time."""
    results = await asyncio.gather(
        timed(bus.publish(Beep(n=1))),
        timed(bus.send(Job(n=1))),
        timed(bus.nodes()),
        timed(bus.dead_letters("beeper")),
        timed(bus.replay("beeper")),
        timed(bus.purge("beeper")),
    )
    publish, send, nodes, listing, replay, purge = results
    check(publish, PublishError, f"amqp: publish to {where} timed out after {OPERATION_TIMEOUT}s", OPERATION_TIMEOUT)
    check(send, PublishError, f"amqp: publish to {where} timed out after {OPERATION_TIMEOUT}s", OPERATION_TIMEOUT)
    check(nodes, OperationError, f"amqp: presence (nodes) on {where} timed out", OPERATION_TIMEOUT)
    check(listing, OperationError, f"amqp: listing dead letters of 'beeper' on {where} timed out", OPERATION_TIMEOUT)
    check(replay, OperationError, f"amqp: replaying dead letters of 'beeper' on {where}", OPERATION_TIMEOUT)
    check(purge, OperationError, f"amqp: purging dead letters of 'beeper' on {where}", OPERATION_TIMEOUT)
    for exc, _ in results:
        assert "(operation_timeout)" in str(exc)


Fault = Callable[[FaultProxy], None]


def _silence(proxy: FaultProxy) -> None:
    assert proxy.silence(new_links="forward")


def _cut(proxy: FaultProxy) -> None:
    assert proxy.cut(new_links="refuse", reset=True)


@pytest.mark.parametrize(("fault", "state"), [(_silence, "connected"), (_cut, "reconnecting")], ids=["silent", "cut"])
def test_every_call_has_a_deadline_and_close_returns_by_itself(
    namespace: str, fault: Fault, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Mid-session, the link goes silent (sockets stay open) or is cut (and stays down)."""

    async def scenario() -> None:
        proxy = FaultProxy(broker_address()).start()
        try:
            url = url_for(
                namespace, url_at(proxy.port), connect_timeout=CONNECT_TIMEOUT, operation_timeout=OPERATION_TIMEOUT
            )
            bus = await pycomms.connect(url, services=[beeper()])
            await bus.publish(Beep(n=0))
            fault(proxy)
            where = f"127.0.0.1:{proxy.port}"
            await _operations_fail(bus, where)
            exc, _ = await timed(bus.publish(Beep(n=2)))
            assert f"; {state}" in str(exc), str(exc)
            _, took = await timed(bus.close(grace=GRACE))
            assert took <= CLOSE_WITHIN + MARGIN, f"close(grace={GRACE}) took {took:.1f}s"
            assert bus.closed
        finally:
            proxy.stop()

    caplog.set_level(logging.INFO)
    run_strict(scenario, 60)
    assert not core_gave_up(caplog), "the transport did not close by itself within grace + CLOSE_BOUND"


def test_drop_on_a_silent_link_is_an_operation_error(namespace: str) -> None:
    async def scenario() -> None:
        proxy = FaultProxy(broker_address()).start()
        try:
            url = url_for(namespace, url_at(proxy.port), operation_timeout=OPERATION_TIMEOUT)
            bus = await pycomms.connect(url)
            _silence(proxy)
            outcome = await timed(bus.drop_namespace(force=True))
            check(outcome, OperationError, f"on 127.0.0.1:{proxy.port} timed out", OPERATION_TIMEOUT)
            _, took = await timed(bus.close(grace=0))
            assert took <= 2 * CLOSE_TIMEOUT + MARGIN
        finally:
            proxy.stop()

    run_strict(scenario, 60)


def test_a_close_step_that_swallows_cancellation_is_abandoned_in_time() -> None:
    """A driver that swallows a cancellation (and then another) cannot hang close:
    `finish_within` cancels again until the step ends, within its bound."""

    async def scenario() -> None:
        swallowed = 0
        aborted = asyncio.Event()

        async def stubborn() -> None:
            nonlocal swallowed
            while swallowed < 3:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    swallowed += 1

        started = time.monotonic()
        assert not await finish_within(stubborn(), 0.2, aborted.set)
        assert aborted.is_set(), "on_timeout was not called"
        assert swallowed == 3
        assert time.monotonic() - started <= 0.2 + 2 * CLOSE_TIMEOUT + MARGIN
        assert CLOSE_WITHIN < GRACE + CLOSE_BOUND, "the documented close bound must be within core's"

    run_strict(scenario, 30)
