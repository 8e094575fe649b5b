"""Deadlines on ``nats://``: nothing listening, a server that never answers, a link that
goes silent mid-session. Errors name the backend, host:port and operation, never a
password; close stays bounded."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from fault_proxy import FaultProxy, SilentServer, free_port
from nats_support import NATS_URL, drop_namespace, new_namespace

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, run_strict, scale

pytestmark = pytest.mark.timeout(120)


class Tick(Event, name="natsdl.tick"):
    n: int


def test_nothing_listening_fails_fast_naming_the_server() -> None:
    port = free_port()

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(pycomms.ConnectError) as caught:
            await pycomms.connect(f"nats://bob:hunter2@127.0.0.1:{port}?connect_timeout=2")
        assert time.monotonic() - started < 2 + 2 * scale()
        text = str(caught.value)
        assert text.startswith(f"nats: connect to 127.0.0.1:{port} timed out after 2s (last error: ")
        assert "ConnectionRefusedError" in text
        assert "hunter2" not in text

    run_strict(scenario, 30)


def test_a_server_that_never_answers_fails_at_connect_timeout() -> None:
    with SilentServer() as silent:

        async def scenario() -> None:
            started = time.monotonic()
            with pytest.raises(pycomms.ConnectError, match=rf"nats: connect to 127.0.0.1:{silent.port} timed out"):
                await pycomms.connect(f"nats://u:secretpw@127.0.0.1:{silent.port}?connect_timeout=1.5")
            assert 1.4 < time.monotonic() - started < 1.5 + 2 * scale()

        run_strict(scenario, 30)


class _Watch(logging.Handler):
    """Sets ``event`` when a log line holding ``text`` is emitted (on the loop's thread)."""

    def __init__(self, text: str, event: asyncio.Event) -> None:
        super().__init__(logging.WARNING)
        self.text, self.event = text, event

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_silent_link_publish_fails_at_operation_timeout_is_detected_and_close_is_bounded() -> None:
    """With ping_interval=0.5 and max_outstanding_pings=2 the client notices the silent
    link within 0.5 * (2 + 1) s and reconnects (the proxy holds new links silent too);
    a publish meanwhile fails after operation_timeout naming the operation; close returns
    within grace + the documented bound."""
    namespace = new_namespace()
    host, _, port = NATS_URL.partition("://")[2].partition("?")[0].partition(",")[0].rpartition(":")
    with FaultProxy((host or "127.0.0.1", int(port or 4222))) as proxy:
        url = (
            f"nats://127.0.0.1:{proxy.port}?namespace={namespace}&operation_timeout=2"
            "&ping_interval=0.5&max_outstanding_pings=2"
        )

        async def scenario() -> None:
            rec = Recorder()
            svc = Service("dl")

            @svc.on
            async def tick(m: Tick) -> None:
                rec.add(m.n)

            disconnected = asyncio.Event()
            watch = _Watch("disconnected from", disconnected)
            logging.getLogger("pycomms.nats").addHandler(watch)
            bus = await pycomms.connect(url, services=[svc])
            await bus.publish(Tick(n=1))
            await rec.wait(1, 10)
            proxy.silence()
            silenced = time.monotonic()
            with pytest.raises(
                pycomms.PublishError, match=rf"nats: publish to \S+ on 127.0.0.1:{proxy.port} timed out"
            ):
                await bus.publish(Tick(n=2))
            assert time.monotonic() - silenced < 2 + 2 * scale()

            async with asyncio.timeout(0.5 * 3 + 2 * scale()):
                await disconnected.wait()
            started = time.monotonic()
            await bus.close(grace=0.5)
            assert time.monotonic() - started < 0.5 + pycomms.spi.CLOSE_BOUND
            logging.getLogger("pycomms.nats").removeHandler(watch)

        run_strict(scenario, 60)
    drop_namespace(f"{NATS_URL}{'&' if '?' in NATS_URL else '?'}namespace={namespace}")
