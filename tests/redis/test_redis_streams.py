"""The mapping onto Redis: trimming never drops what a known group still needs, the AOF
warning, group recreation after the server lost its data."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from redis_support import REDIS_URL, PrivateRedis, new_namespace, url_for

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, eventually, run_strict
from pycomms_redis import _connection


class Tick(Event, name="streams.tick"):
    n: int


def test_trimming_keeps_what_a_stopped_service_has_not_acked(namespace: str) -> None:
    url = url_for(namespace, aof_warning="false", trim_interval=0.2)
    stream = f"pycomms:{{{namespace}}}:ev:streams.tick"

    def service(name: str, rec: Recorder) -> Service:
        svc = Service(name, concurrency=64)

        @svc.on
        async def handle(tick: Tick) -> None:
            rec.add(tick.n)

        return svc

    async def scenario() -> None:
        fast, late = Recorder(), Recorder()
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            async with pycomms.connect(url, services=[service("late", late)]):
                pass  # "late" has started once: its events are now kept for it
            async with pycomms.connect(url, services=[service("fast", fast)]) as bus:
                await bus.publish(*(Tick(n=i) for i in range(1000)))
                await fast.wait(1000, 30)
                await asyncio.sleep(1.0)  # five trim periods pass with "late" still behind
                assert await client.xlen(stream) == 1000
                async with pycomms.connect(url, services=[service("late", late)]):
                    await late.wait(1000, 30)

                    async def trimmed() -> bool:
                        return int(await client.xlen(stream)) < 1000

                    await eventually(trimmed, 10, "acknowledged entries to be trimmed")
            fast.assert_exactly_once(list(range(1000)))
            late.assert_exactly_once(list(range(1000)))
        finally:
            await client.aclose()

    run_strict(scenario, 60)


def test_warns_once_per_process_when_the_server_has_no_aof(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first server without AOF: one warning; more connects, or other such servers:
    no more warnings (another server is named once at info level)."""
    monkeypatch.setattr(_connection, "_warned_no_aof", set())  # as in a fresh process
    caplog.set_level(logging.INFO, logger="pycomms.redis")
    volatile, other, durable = PrivateRedis(appendonly=False), PrivateRedis(appendonly=False), PrivateRedis()
    for server in (volatile, other, durable):
        server.start()
    try:

        async def scenario() -> None:
            for url in (volatile.url, volatile.url, other.url, other.url):
                async with pycomms.connect(url_for(new_namespace(), base=url)) as bus:
                    assert bus.capabilities.persistent is False
            async with pycomms.connect(url_for(new_namespace(), base=durable.url)) as bus:
                assert bus.capabilities.persistent is True

        run_strict(scenario, 30)
    finally:
        for server in (volatile, other, durable):
            server.stop()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "appendonly=no" in r.getMessage()]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO], said
    assert f"127.0.0.1:{volatile.port}" in said[0][1]
    assert "once per process" in said[0][1]
    assert f"127.0.0.1:{other.port}" in said[1][1]
    assert not any(f"127.0.0.1:{durable.port}" in message for _, message in said)


def test_consumers_recreate_their_groups_after_the_server_lost_its_data(caplog: pytest.LogCaptureFixture) -> None:
    """A server restarted without persistence comes back empty: groups are recreated and
    consumption resumes without a restart of the application."""
    caplog.set_level(logging.ERROR, logger="pycomms.redis")
    server = PrivateRedis(appendonly=False)
    server.start()
    url = url_for(new_namespace(), base=server.url, aof_warning="false")
    try:

        async def scenario() -> None:
            rec = Recorder()
            svc = Service("phoenix")

            @svc.on
            async def handle(tick: Tick) -> None:
                rec.add(tick.n)

            async with pycomms.connect(url, services=[svc]) as bus:
                await bus.publish(Tick(n=1))
                await rec.wait(1, 10)
                server.kill()
                await asyncio.to_thread(server.start)

                async def resumed() -> bool:
                    await bus.publish(Tick(n=rec.total + 100))
                    return rec.total >= 2

                await eventually(resumed, 20, "consumption to resume", interval=0.5)

        run_strict(scenario, 60)
    finally:
        server.stop()
