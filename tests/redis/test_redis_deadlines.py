"""Every call has a deadline: against nothing listening, a server that accepts and never
answers, a link that goes silent mid-session (a proxy that stops forwarding, sockets
open) and a link closed mid-session, each call raises the documented error naming the
backend, the server and the operation within its deadline (plus a margin), and
``close(grace=2)`` returns within grace + `CLOSE_BOUND`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from fault_proxy import FaultProxy, SilentServer, free_port
from redis_support import REDIS_URL, url_for

import pycomms
from pycomms import Command, ConnectError, Event, Message, OperationError, PublishError, Request, Service
from pycomms.spi import CLOSE_BOUND
from pycomms.testing import Recorder, run_strict, scale

OPERATION_TIMEOUT = 2.0
MARGIN = 2.0  # a loaded 2-core machine; the deadlines themselves are exact
GRACE = 2.0


class Ping(Event, name="deadlines.ping"):
    n: int


class Poke(Command, name="deadlines.poke"):
    n: int


class Answer(Message, name="deadlines.answer"):
    n: int


class Ask(Request[Answer], name="deadlines.ask"):
    n: int


def _worker() -> Service:
    svc = Service("deadline-worker")

    @svc.on
    async def ping(event: Ping) -> None:
        pass

    @svc.on
    async def poke(command: Poke) -> None:
        pass

    @svc.on
    async def ask(request: Ask) -> Answer:
        return Answer(n=request.n)

    return svc


def _via(port: int, namespace: str, **options: object) -> str:
    parts = urlsplit(REDIS_URL)
    userinfo = parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""
    base = f"redis://{userinfo}127.0.0.1:{port}{parts.path}"
    return url_for(namespace, base=base, aof_warning="false", **options)


async def _timed(call: Awaitable[Any]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await call
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _check(what: str, took: float, error: BaseException | None, expected: type[Exception], server: str) -> None:
    print(f"\n[measured] {what}: {type(error).__name__} after {took:.2f}s: {error}")
    assert isinstance(error, expected), f"{what}: expected {expected.__name__}, got {error!r}"
    message = str(error)
    assert message.startswith("redis: "), message
    assert server in message, message
    assert took < (OPERATION_TIMEOUT + MARGIN) * scale(), f"{what} took {took:.1f}s"


async def _calls_fail_in_time(client: pycomms.Bus, server: str) -> None:
    """Every kind of call, all at once, each against its own deadline."""
    transport: Any = client._transport
    calls: dict[str, tuple[Callable[[], Awaitable[Any]], type[Exception]]] = {
        "publish": (lambda: client.publish(Ping(n=1)), PublishError),
        "send": (lambda: client.send(Poke(n=1)), PublishError),
        "request": (lambda: client.request(Ask(n=1), timeout=30), PublishError),
        "nodes": (client.nodes, OperationError),
        "dead_letters": (lambda: client.dead_letters("deadline-worker"), OperationError),
        "replay": (lambda: client.replay("deadline-worker"), OperationError),
        "purge": (lambda: client.purge("deadline-worker"), OperationError),
        "drop_namespace": (transport.drop_namespace, OperationError),
    }
    results = await asyncio.gather(*(_timed(call()) for call, _ in calls.values()))
    for (what, (_, expected)), (took, error) in zip(calls.items(), results, strict=True):
        _check(what, took, error, expected, server)
        if isinstance(error, PublishError | OperationError) and "timed out" in str(error):
            assert f"after {OPERATION_TIMEOUT}s (operation_timeout)" in str(error)


async def _close_in_time(what: str, bus: pycomms.Bus) -> None:
    took, error = await _timed(bus.close(grace=GRACE))
    print(f"\n[measured] {what}: close(grace={GRACE}) returned after {took:.2f}s")
    assert error is None
    assert bus.closed
    assert took < (GRACE + CLOSE_BOUND) * scale(), f"close took {took:.1f}s"


def test_nothing_listening_fails_connect_at_once() -> None:
    port = free_port()

    async def scenario() -> None:
        took, error = await _timed(pycomms.connect(_via(port, "nowhere", connect_timeout=2)))
        _check("connect, nothing listening", took, error, ConnectError, f"127.0.0.1:{port}")
        assert "connect to" in str(error)
        assert "refused" in str(error).lower()

    run_strict(scenario, 30)


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_a_server_that_never_answers_fails_connect_within_connect_timeout(scheme: str) -> None:
    async def scenario() -> None:
        with SilentServer() as server:
            url = f"{scheme}://user:s3cret@127.0.0.1:{server.port}/0?namespace=silent&connect_timeout=1"
            took, error = await _timed(pycomms.connect(url, aof_warning=False))
            _check(f"{scheme} connect, server never answers", took, error, ConnectError, f"127.0.0.1:{server.port}")
            assert "connect to" in str(error)
            assert "timed out" in str(error)
            assert "s3cret" not in str(error)
            assert took < (1.0 + MARGIN) * scale()
            assert server.accepted >= 1

    run_strict(scenario, 30)


@pytest.mark.parametrize("fault", ["silent", "closed"])
def test_every_call_has_a_deadline_when_the_link_fails_mid_session(
    namespace: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """(c) the proxy stops forwarding, sockets open; (d) the proxy resets every
    connection and refuses new ones."""
    caplog.set_level(logging.ERROR, logger="pycomms")

    async def scenario() -> None:
        proxy = FaultProxy(("127.0.0.1", urlsplit(REDIS_URL).port or 6379)).start()
        server = f"127.0.0.1:{proxy.port}"
        url = _via(proxy.port, namespace, operation_timeout=OPERATION_TIMEOUT)
        try:
            worker = await pycomms.connect(url, services=[_worker()])
            client = await pycomms.connect(url)
            assert (await client.request(Ask(n=7), timeout=10)).n == 7  # the session works
            await client.send(Poke(n=1))
            if fault == "silent":
                proxy.silence()
            else:
                proxy.cut(new_links="refuse", reset=True)
            await _calls_fail_in_time(client, server)
            await _close_in_time(f"{fault} link, client", client)
            await _close_in_time(f"{fault} link, worker with a service", worker)
        finally:
            proxy.stop()

    run_strict(scenario, 60)


def test_a_closed_link_that_comes_back_is_used_again(namespace: str) -> None:
    """The connections are reset but the server is still there: calls carry on over new ones."""

    async def scenario() -> None:
        proxy = FaultProxy(("127.0.0.1", urlsplit(REDIS_URL).port or 6379)).start()
        try:
            url = _via(proxy.port, namespace, operation_timeout=OPERATION_TIMEOUT)
            async with pycomms.connect(url, services=[_worker()]) as worker, pycomms.connect(url) as client:
                assert (await client.request(Ask(n=1), timeout=10)).n == 1
                proxy.cut(new_links="forward", reset=True)
                assert (await client.request(Ask(n=2), timeout=10)).n == 2
                assert {n.id for n in await client.nodes()} >= {worker.node.id, client.node.id}
        finally:
            proxy.stop()

    run_strict(scenario, 60)


class Slow(Command, name="deadlines.slow"):
    n: int


def test_settles_on_a_silent_link_are_bounded_and_lose_nothing(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Handlers finish (one acks, one asks for a retry) after the worker's link went
    silent: the settles pass their deadline, close returns in time, and both messages
    are handled again by another worker once the visibility timeout is over."""
    caplog.set_level(logging.CRITICAL, logger="pycomms")
    visibility = 2.0

    async def scenario() -> None:
        started, again = Recorder(), Recorder()
        release = asyncio.Event()
        silent_svc, healthy_svc = Service("slowpoke"), Service("slowpoke")

        @silent_svc.on
        async def stuck(command: Slow) -> None:
            started.add(command.n)
            await release.wait()
            if command.n == 2:
                raise RuntimeError("retry me")

        @healthy_svc.on
        async def fine(command: Slow) -> None:
            again.add(command.n)

        proxy = FaultProxy(("127.0.0.1", urlsplit(REDIS_URL).port or 6379)).start()
        options = {"operation_timeout": OPERATION_TIMEOUT, "visibility_timeout": visibility}
        try:
            worker = await pycomms.connect(_via(proxy.port, namespace, **options), services=[silent_svc])
            async with pycomms.connect(url_for(namespace, aof_warning="false")) as sender:
                await sender.send(Slow(n=1), Slow(n=2))
                await started.wait(2, 10)
                proxy.silence()
                release.set()  # the ack and the retry go into the silent link
                await _close_in_time("silent link, settles in flight", worker)
                async with pycomms.connect(url_for(namespace, **options), services=[healthy_svc]):
                    took, error = await _timed(again.wait(2, 30))
                    assert error is None
                    print(f"\n[measured] both messages handled elsewhere {took:.2f}s after the silent worker closed")
                    assert sorted(again.items) == [1, 2]
        finally:
            proxy.stop()

    run_strict(scenario, 60)
