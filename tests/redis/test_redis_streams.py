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


def test_warns_at_connect_when_the_server_has_no_aof(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pycomms.redis")
    volatile, durable = PrivateRedis(appendonly=False), PrivateRedis(appendonly=True)
    volatile.start()
    durable.start()
    try:

        async def scenario() -> None:
            async with pycomms.connect(url_for(new_namespace(), base=volatile.url)) as bus:
                assert bus.capabilities.persistent is False
            async with pycomms.connect(url_for(new_namespace(), base=durable.url)) as bus:
                assert bus.capabilities.persistent is True

        run_strict(scenario, 30)
    finally:
        volatile.stop()
        durable.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"127.0.0.1:{volatile.port}" in w and "appendonly=no" in w for w in warnings)
    assert not any(f"127.0.0.1:{durable.port}" in w for w in warnings)


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
