"""The AMQP transport through the SPI, against the shared broker: prefetch bound, delayed
retries, dead-letter listing, error mapping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from amqp_support import url_for

import pycomms
from pycomms.spi import BackendConfig, DeadLetter, Envelope, NodeInfo, Subscription
from pycomms.testing import run_strict, scale
from pycomms_amqp import AmqpTransport


@asynccontextmanager
async def transport(namespace: str, **options: Any) -> AsyncIterator[AmqpTransport]:
    config = BackendConfig(url=url_for(namespace), scheme="amqp", namespace=namespace, options=options)
    opened = AmqpTransport(config)
    await opened.open(NodeInfo(id=f"node{time.monotonic_ns()}", name="spi-test"), lambda data: None)
    try:
        yield opened
    finally:
        await opened.close()


def job(n: int) -> Envelope:
    return Envelope(id=f"job-{n}", type="amqp_test.job", kind="command", source="x", body=f'{{"n":{n}}}'.encode())


JOBS = frozenset({"amqp_test.job"})


def test_prefetch_never_exceeds_concurrency(namespace: str) -> None:
    """An instance with concurrency 2 holds at most 2 messages; a second instance gets
    the other 8 while the first sits on its two."""

    async def scenario() -> None:
        async with transport(namespace) as spi:
            slow = await spi.subscribe(Subscription("pool", frozenset(), JOBS, 2))
            await spi.publish([job(n) for n in range(10)])
            held = list(await slow.receive(10))
            fast = await spi.subscribe(Subscription("pool", frozenset(), JOBS, 8))
            got: list[Any] = []
            async with asyncio.timeout(20 * scale()):
                while len(got) < 10 - len(held):
                    got += await fast.receive(8)
            assert len(held) <= 2
            assert len(got) == 10 - len(held)
            for delivery in (*held, *got):
                await delivery.ack()
            await slow.close()
            await fast.close()

    run_strict(scenario, 60)


def test_delayed_retry_waits_its_delay_without_blocking(namespace: str) -> None:
    async def scenario() -> None:
        async with transport(namespace) as spi:
            receiver = await spi.subscribe(Subscription("later", frozenset(), JOBS, 4))
            await spi.publish([job(1)])
            (first,) = await receiver.receive(4)
            started = time.monotonic()
            await first.retry(0.6)
            await spi.publish([job(2)])
            (second,) = await receiver.receive(4)  # not held up by the waiting retry
            assert second.data == job(2).encode()
            assert time.monotonic() - started < 0.5
            await second.ack()
            (again,) = await receiver.receive(4)
            elapsed = time.monotonic() - started
            assert again.data == first.data
            assert again.attempt == 2
            assert 0.55 <= elapsed < 5 * scale()
            await again.ack()
            await receiver.close()

    run_strict(scenario, 60)


def test_dead_letters_are_listed_without_being_consumed(namespace: str) -> None:
    async def scenario() -> None:
        async with transport(namespace) as spi:
            receiver = await spi.subscribe(Subscription("dlq", frozenset(), JOBS, 8))
            await spi.publish([job(n) for n in range(5)])
            deliveries: list[Any] = []
            async with asyncio.timeout(20 * scale()):
                while len(deliveries) < 5:
                    deliveries += await receiver.receive(8)
            for delivery in sorted(deliveries, key=lambda d: d.data):
                n = delivery.data.split(b'"n":')[1][0] - ord("0")
                letter = DeadLetter(f"job-{n}", "amqp_test.job", "dlq", "failed", "", 1, 0.0, envelope=delivery.data)
                await delivery.dead_letter(letter)
            first = await spi.dead_letters("dlq", 3)
            assert [d.id for d in first] == ["job-0", "job-1", "job-2"]
            assert [d.id for d in await spi.dead_letters("dlq", 100)] == [f"job-{n}" for n in range(5)]
            assert await spi.purge("dlq", ["job-1", "nope"]) == 1
            assert await spi.replay("dlq", ["job-3"]) == 1
            (replayed,) = await receiver.receive(8)
            assert replayed.data == job(3).encode()
            assert replayed.attempt == 1
            await replayed.ack()
            assert [d.id for d in await spi.dead_letters("dlq", 100)] == ["job-0", "job-2", "job-4"]
            await receiver.close()

    run_strict(scenario, 60)


def test_unreachable_broker_is_a_connect_error_without_the_password(namespace: str) -> None:
    async def scenario() -> None:
        url = f"amqp://guest:s3cret-pw@127.0.0.1:1/?namespace={namespace}&connect_timeout=5"
        with pytest.raises(pycomms.ConnectError) as caught:
            async with pycomms.connect(url):
                pass
        message = str(caught.value)
        assert "s3cret-pw" not in message
        assert "amqp: connect to 127.0.0.1:1 failed: ConnectionRefusedError" in message
        assert caught.value.__suppress_context__, "one clear line, not a chain of driver tracebacks"

    run_strict(scenario, 30)


def test_queue_type_mismatch_is_reported(namespace: str) -> None:
    """Nodes of one namespace must agree on queue_type; a mismatch names the option."""

    async def scenario() -> None:
        async with transport(namespace) as classic:
            await classic.publish([job(1)])
            async with transport(namespace, queue_type="quorum") as quorum:
                with pytest.raises(pycomms.PublishError, match="queue_type"):
                    await quorum.publish([job(2)])

    run_strict(scenario, 30)
