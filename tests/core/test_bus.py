"""Core behaviour beyond the conformance suite, over the in-process backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import pycomms
from pycomms import Command, ConfigError, Context, Event, Message, RemoteError, Request, Service
from pycomms._memory import _Item
from pycomms._plugins import plugin_manager
from pycomms.spi import DeadLetter, Envelope, new_id
from pycomms.testing import Recorder, eventually, run_strict


class Ping(Event):
    n: int


class OtherPing(Event, name="Ping"):
    n: str


class Job(Command):
    n: int


class Reply(Message):
    n: int


class Ask(Request[Reply]):
    n: int


def url() -> str:
    return f"memory://core?namespace=n{new_id()[-12:]}"


def test_two_classes_with_one_name_fail_at_start() -> None:
    a, b = Service("a"), Service("b")
    a.on(Ping)(lambda m: None)
    b.on(OtherPing)(lambda m: None)
    with pytest.raises(ConfigError, match="two different classes use the message type name 'Ping'"):
        pycomms.connect(url(), services=[a, b])


def test_service_given_twice() -> None:
    a = Service("a")
    with pytest.raises(ConfigError, match="given twice"):
        pycomms.connect(url(), services=[a, a])


def _inject(bus: pycomms.Bus, service: str, data: bytes) -> None:
    bus._transport._broker.queue(service).put(_Item(data, 1))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00 not json", "malformed"),
        (b"[" * (2 * 1024 * 1024), "too_large"),
        (
            Envelope(id="m1", type="Nobody", kind="event", source="s", body=b"{}").encode(),
            "unknown_type",
        ),
    ],
)
def test_undeliverable_bytes_are_dead_lettered_at_once(data: bytes, reason: str) -> None:
    async def scenario() -> list[DeadLetter]:
        svc = Service("victim")
        svc.on(Ping)(lambda m: None)
        async with pycomms.connect(url(), services=[svc]) as bus:
            _inject(bus, "victim", data)
            letters: list[DeadLetter] = []

            async def lettered() -> bool:
                letters[:] = await bus.dead_letters("victim")
                return bool(letters)

            await eventually(lettered, 5, "the dead letter")
            return letters

    [letter] = run_strict(scenario, 10)
    assert (letter.reason, letter.attempts) == (reason, 1)
    assert letter.envelope == data


def test_request_handler_returning_the_wrong_type_is_a_remote_error() -> None:
    async def scenario() -> None:
        svc = Service("wrong")

        @svc.on
        async def answer(req: Ask) -> Any:
            return Job(n=1)

        async with pycomms.connect(url(), services=[svc]) as bus:
            with pytest.raises(RemoteError, match="returned Job, expected Reply"):
                await bus.request(Ask(n=1), timeout=5)

    run_strict(scenario, 10)


class Plugin:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.seen: list[str] = []

    @pycomms.hookimpl
    def pycomms_middleware(self, service: Service) -> Any:
        def wrap(handler: Any) -> Any:
            async def wrapped(message: Message, ctx: Context) -> Any:
                self.seen.append(f"{service.name}:{message.type_name}")
                return await handler(message, ctx)

            return wrapped

        return wrap

    @pycomms.hookimpl
    def pycomms_dead_lettered(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


@pytest.fixture
def plugin() -> Iterator[Plugin]:
    p = Plugin()
    plugin_manager().register(p, name="test-plugin")
    try:
        yield p
    finally:
        plugin_manager().unregister(name="test-plugin")


def test_middleware_and_dead_letter_hooks(plugin: Plugin) -> None:
    async def scenario() -> None:
        rec = Recorder()
        svc = Service("hooked")

        @svc.on
        async def handle(job: Job) -> None:
            if job.n < 0:
                raise pycomms.Reject("negative")
            rec.add(job.n)

        async with pycomms.connect(url(), services=[svc]) as bus:
            await bus.send(Job(n=1), Job(n=-1))
            await rec.wait(1, 5)

            async def hooked() -> bool:
                return bool(plugin.letters)

            await eventually(hooked, 5, "the dead-letter hook")

    run_strict(scenario, 10)
    assert sorted(plugin.seen) == ["hooked:Job", "hooked:Job"]
    assert [letter.reason for letter in plugin.letters] == ["rejected"]


def test_cancelled_request_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        svc = Service("slow")

        @svc.on
        async def answer(req: Ask) -> Reply:
            await asyncio.sleep(0.2)
            return Reply(n=req.n)

        async with pycomms.connect(url(), services=[svc]) as bus:
            tasks = [asyncio.create_task(bus.request(Ask(n=i), timeout=5)) for i in range(50)]

            async def all_waiting() -> bool:
                return bus._requests.pending == 50

            await eventually(all_waiting, 5, "50 requests waiting for their replies")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert bus._requests.pending == 0
            assert await bus.request(Ask(n=99), timeout=5) == Reply(n=99)

    run_strict(scenario, 20)


def test_pending_request_fails_with_bus_closed_on_close() -> None:
    async def scenario() -> None:
        async with pycomms.connect(url()) as bus:
            task = asyncio.create_task(bus.request(Ask(n=1), timeout=30))

            async def waiting() -> bool:
                return bus._requests.pending == 1

            await eventually(waiting, 5, "the request waiting for its reply")
            await bus.close()
            with pytest.raises(pycomms.BusClosed):
                await task

    run_strict(scenario, 10)


def test_lifecycle_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with pycomms.connect(url(), name="logged"):
            pass

    with caplog.at_level(logging.INFO, logger="pycomms"):
        run_strict(scenario, 10)
    messages = [r.getMessage() for r in caplog.records]
    assert any("bus open" in m and "name=logged" in m for m in messages)
    assert any("bus closed" in m for m in messages)


def test_serve_returns_when_the_bus_is_closed() -> None:
    async def scenario() -> None:
        async with pycomms.connect(url()) as bus:
            server = asyncio.create_task(bus.serve(handle_signals=False))
            await asyncio.sleep(0.01)  # a bounded negative check: serve() must still be running
            assert not server.done()
            await bus.close()
            await asyncio.wait_for(server, 5)

    run_strict(scenario, 10)


def test_request_timeout_must_be_positive() -> None:
    async def scenario() -> None:
        async with pycomms.connect(url()) as bus:
            with pytest.raises(ValueError, match="timeout"):
                await bus.request(Ask(n=1), timeout=0)

    run_strict(scenario, 10)
