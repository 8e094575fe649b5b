"""Faults of the broker itself, on a private RabbitMQ node: SIGKILL and restart while
publishing, and a memory alarm while publishing."""

from __future__ import annotations

import asyncio
import time

import pytest
from amqp_messages import Job
from amqp_support import PrivateBroker, url_for

import pycomms
from pycomms import Event, Service
from pycomms.testing import run_strict, scale

TOTAL = 10_000
PUBLISHERS = 20


class Beat(Event, name="amqp_test.beat"):
    n: int


@pytest.mark.faults
@pytest.mark.slow
def test_broker_killed_twice_loses_no_confirmed_message(private_broker: PrivateBroker, namespace: str) -> None:
    """20 publisher tasks send 10,000 messages (events and commands) while the broker is
    SIGKILLed and restarted twice: every confirmed message is handled, consumers resume
    by themselves (duplicates are allowed: at-least-once)."""

    async def scenario() -> None:
        url = url_for(namespace, private_broker.url, publish_timeout=60, reconnect_max_delay=0.5)
        seen: set[int] = set()
        all_seen = asyncio.Event()
        confirmed: set[int] = set()
        svc = Service("survivor", concurrency=32)

        def record(n: int) -> None:
            seen.add(n)
            if len(seen) == TOTAL:
                all_seen.set()

        @svc.on
        async def beat(event: Beat) -> None:
            record(event.n)

        @svc.on
        async def job(command: Job) -> None:
            record(command.n)

        async with pycomms.connect(url, services=[svc]) as consumer, pycomms.connect(url) as producer:
            progress = asyncio.Condition()

            async def publisher(first: int) -> None:
                for n in range(first, TOTAL, PUBLISHERS):
                    while True:
                        try:
                            if n % 2:
                                await producer.send(Job(n=n))
                            else:
                                await producer.publish(Beat(n=n))
                            break
                        except pycomms.PublishError:
                            continue  # not confirmed: publish it again
                    confirmed.add(n)
                    async with progress:
                        progress.notify_all()

            async def kill_when(count: int) -> None:
                async with progress:
                    await progress.wait_for(lambda: len(confirmed) >= count)
                await asyncio.to_thread(private_broker.kill)
                await asyncio.to_thread(private_broker.start)

            publishers = [asyncio.create_task(publisher(i)) for i in range(PUBLISHERS)]
            await kill_when(TOTAL // 5)
            await kill_when(TOTAL * 3 // 5)
            async with asyncio.timeout(120 * scale()):
                await asyncio.gather(*publishers)
            assert len(confirmed) == TOTAL
            try:
                async with asyncio.timeout(60 * scale()):
                    await all_seen.wait()
            except TimeoutError:
                missing = confirmed - seen
                raise AssertionError(f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:10]}") from None
            assert consumer.closed is False

    run_strict(scenario, 240)


@pytest.mark.faults
def test_publish_during_memory_alarm_raises_within_ten_seconds(private_broker: PrivateBroker, namespace: str) -> None:
    async def scenario() -> None:
        async with pycomms.connect(url_for(namespace, private_broker.url)) as bus:
            await bus.publish(Beat(n=0))
            await asyncio.to_thread(private_broker.ctl, "set_vm_memory_high_watermark", "0.0000001")
            try:
                started = time.monotonic()
                with pytest.raises(pycomms.PublishError, match="resource alarm"):
                    await bus.send(Job(n=1))
                assert time.monotonic() - started <= 10.5
            finally:
                await asyncio.to_thread(private_broker.ctl, "set_vm_memory_high_watermark", "0.4")
            async with asyncio.timeout(30 * scale()):
                await bus.send(Job(n=2))  # accepted again once the alarm is cleared

    run_strict(scenario, 90)
