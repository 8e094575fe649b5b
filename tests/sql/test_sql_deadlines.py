"""Deadlines on PostgreSQL and MariaDB: a server that never greets, a link that goes
silent mid-session (a proxy that stops forwarding while the sockets stay open) and a
link closed mid-session. Every call ends with the documented error within its deadline
(plus a margin), settling never hangs, and close(grace) returns within grace + 5 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fault_proxy import FaultProxy, SilentServer, free_port
from sql_helpers import MYSQL_URL, POSTGRES_URL, drop_namespace, via, with_options

import pycomms
from pycomms import Command, Message, Request, Service
from pycomms.spi import CLOSE_BOUND
from pycomms.testing import Recorder, eventually, require_reachable, run_strict

# What a deadline may be passed by: cancelling the call and cutting its connection.
MARGIN = 2.5
OPERATION_TIMEOUT = 1.5
SERVERS = {"postgresql": (POSTGRES_URL, 5432), "mariadb": (MYSQL_URL, 3306)}


class Chore(Command, name="sqldeadline.chore"):
    n: int


class Pong(Message, name="sqldeadline.pong"):
    n: int


class Ping(Request[Pong], name="sqldeadline.ping"):
    n: int


@pytest.fixture(params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> str:
    base, port = SERVERS[request.param]
    require_reachable(base, port)
    return base


@pytest.fixture
def proxied_namespace(server: str, namespace: str) -> Iterator[str]:
    """A fresh namespace, reached through a proxy by the test, dropped directly after it."""
    yield namespace
    drop_namespace(with_options(server, namespace=namespace))


async def timed(call: Awaitable[Any], error: type[BaseException], within: float) -> BaseException:
    """Await ``call``; it must raise ``error`` in at most ``within`` seconds."""
    started = time.monotonic()
    with pytest.raises(error) as info:
        await call
    took = time.monotonic() - started
    assert took <= within, f"{error.__name__} after {took:.1f}s, expected within {within:.1f}s: {info.value}"
    return info.value


def _assert_one_line(error: BaseException) -> None:
    """A connection failure reads as one line: no newline, no chained driver traceback."""
    assert "\n" not in str(error), str(error)
    assert error.__cause__ is None, repr(error.__cause__)
    assert error.__suppress_context__


def test_a_server_that_never_greets_is_a_connect_error_within_connect_timeout(server: str) -> None:
    async def main() -> None:
        with SilentServer() as mute:
            url = with_options(via(server, mute.port), connect_timeout=2)
            error = await timed(pycomms.connect(url), pycomms.ConnectError, 2 + MARGIN)
            assert mute.accepted >= 1
        message = str(error)
        assert f"connect to 127.0.0.1:{mute.port} timed out after 2s (connect_timeout)" in message, message
        _assert_one_line(error)

    run_strict(main, 60)


def test_nothing_listening_is_one_connect_error_line_without_the_password(server: str) -> None:
    async def main() -> None:
        scheme, _, rest = via(server, free_port()).partition("://")
        user, _, hostpath = rest.partition("@")
        url = f"{scheme}://{user}:hunter2@{hostpath}"
        error = await timed(pycomms.connect(url), pycomms.ConnectError, 5)
        message = str(error)
        assert "hunter2" not in message, message
        assert "connect to 127.0.0.1:" in message, message
        _assert_one_line(error)

    run_strict(main, 60)


def test_a_silent_link_fails_every_call_within_its_deadline_and_close_returns(
    server: str, proxied_namespace: str
) -> None:

    async def main() -> None:
        handled = Recorder()
        release = asyncio.Event()
        svc = Service("chores")

        @svc.on
        async def chore(job: Chore) -> None:
            handled.add(job.n)
            await release.wait()  # its ack goes into the silence

        with FaultProxy(("127.0.0.1", urlsplit(server).port or 0)) as proxy:
            url = with_options(
                via(server, proxy.port), namespace=proxied_namespace, operation_timeout=OPERATION_TIMEOUT, heartbeat=0.5
            )
            bus = await pycomms.connect(url, services=[svc])
            await bus.send(Chore(n=1))
            await handled.wait(1, 20)
            proxy.silence()
            bound = OPERATION_TIMEOUT + MARGIN
            error = await timed(bus.send(Chore(n=2)), pycomms.PublishError, bound)
            assert f"send to 127.0.0.1:{proxy.port} timed out after {OPERATION_TIMEOUT:g}s" in str(error)
            await timed(bus.nodes(), pycomms.OperationError, bound)
            await timed(bus.dead_letters("chores"), pycomms.OperationError, bound)
            await timed(bus.replay("chores"), pycomms.OperationError, bound)
            await timed(bus.purge("chores"), pycomms.OperationError, bound)
            await timed(bus.request(Ping(n=1), timeout=1.0), pycomms.RequestTimeout, 1.0 + MARGIN)
            release.set()  # the handler returns: its ack passes its deadline, logged
            await timed(_closing(bus, grace=2.0), _Closed, 2.0 + CLOSE_BOUND)

    run_strict(main, 120)


class _Closed(Exception):
    pass


async def _closing(bus: pycomms.Bus, grace: float) -> None:
    await bus.close(grace=grace)
    raise _Closed


def test_a_link_closed_mid_session_fails_calls_and_recovers_when_the_server_is_back(
    server: str, proxied_namespace: str
) -> None:

    async def main() -> None:
        handled = Recorder()
        svc = Service("chores")

        @svc.on
        async def chore(job: Chore) -> None:
            handled.add(job.n)

        with FaultProxy(("127.0.0.1", urlsplit(server).port or 0)) as proxy:
            url = with_options(
                via(server, proxy.port), namespace=proxied_namespace, operation_timeout=OPERATION_TIMEOUT, heartbeat=0.5
            )
            async with pycomms.connect(url, services=[svc]) as bus:
                await bus.send(Chore(n=1))
                await handled.wait(1, 20)
                proxy.cut(new_links="refuse", reset=True)
                bound = OPERATION_TIMEOUT + MARGIN
                error = await timed(bus.send(Chore(n=2)), pycomms.PublishError, bound)
                assert f"send to 127.0.0.1:{proxy.port}" in str(error), str(error)
                await timed(bus.nodes(), pycomms.OperationError, bound)
                await timed(bus.dead_letters("chores"), pycomms.OperationError, bound)
                proxy.resume()

                async def sent() -> bool:
                    try:
                        await bus.send(Chore(n=3))
                    except pycomms.PublishError:
                        return False
                    return True

                await eventually(sent, 20, "a send to succeed once the server is back")
                await handled.wait(2, 30)
                assert handled.counts[3] >= 1
                assert handled.counts[2] == 0
                assert [n.id for n in await bus.nodes()] == [bus.node.id]
            await timed(_closing(bus, grace=2.0), _Closed, 2.0 + CLOSE_BOUND)

    run_strict(main, 120)
