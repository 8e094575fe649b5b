"""Reconnection: connections cut through a proxy; consumers come back, nothing is lost,
and a stale delivery settles nothing."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest
from amqp_support import AMQP_URL, broker_address, url_at, url_for
from fault_proxy import FaultProxy

import pycomms
from pycomms import Command, Event, Message, Request, Service
from pycomms.spi import BackendConfig, NodeInfo, Subscription
from pycomms.testing import Recorder, eventually, run_strict, scale
from pycomms_amqp import AmqpTransport


class Tick(Event, name="amqp_test.tick"):
    n: int


class Work(Command, name="amqp_test.work"):
    n: int


class Echoed(Message, name="amqp_test.echoed"):
    n: int


class Echo(Request[Echoed], name="amqp_test.echo"):
    n: int


async def consumer_counts(namespace: str, queues: list[str]) -> dict[str, int]:
    """Consumers per queue, asked of the broker with passive declarations."""
    conn = await aio_pika.connect(AMQP_URL.split("?", 1)[0])
    async with conn:
        channel = await conn.channel()
        counts = {}
        for name in queues:
            queue = await channel.declare_queue(f"pycomms.{namespace}.{name}", passive=True)
            result = queue.declaration_result
            counts[name] = result.consumer_count or 0
        return counts


def test_fifty_connection_drops_lose_nothing(namespace: str) -> None:
    """50 forced drops in a row of a bus that consumes and publishes: afterwards exactly one
    consumer per queue, every confirmed message handled (duplicates allowed: at-least-once)."""

    async def scenario() -> None:
        proxy = FaultProxy(broker_address()).start()
        rec = Recorder()
        svc = Service("flaky", concurrency=8)

        @svc.on
        async def tick(event: Tick) -> None:
            rec.add(("tick", event.n))

        @svc.on
        async def work(command: Work) -> None:
            rec.add(("work", command.n))

        confirmed: set[tuple[str, int]] = set()
        try:
            async with (
                pycomms.connect(url_for(namespace, url_at(proxy.port), publish_timeout=20), services=[svc]) as bus,
                pycomms.connect(url_for(namespace)) as direct,
            ):
                stop = asyncio.Event()

                through_proxy = asyncio.Event()  # set at each confirm of a publish through the proxy

                async def publish_through_proxy() -> None:
                    n = 0
                    while not stop.is_set():
                        await bus.send(Work(n=n))
                        confirmed.add(("work", n))
                        through_proxy.set()
                        n += 1

                async def publish_directly() -> None:
                    n = 0
                    while not stop.is_set():
                        await direct.publish(Tick(n=n))
                        confirmed.add(("tick", n))
                        n += 1
                        await asyncio.sleep(0.005)

                publishers = [asyncio.create_task(publish_through_proxy()), asyncio.create_task(publish_directly())]
                for drop in range(50):
                    reconnected = proxy.next_link(30 * scale())
                    assert proxy.cut(new_links="forward", reset=True), "the bus had no connection to cut"
                    await reconnected
                    if drop % 5 == 4:
                        await asyncio.sleep(0.01)  # cut the next one while the topology is restored
                    else:
                        through_proxy.clear()  # cut the next one once it carries publishes again
                        async with asyncio.timeout(30 * scale()):
                            await through_proxy.wait()
                stop.set()
                await asyncio.gather(*publishers)
                await rec.wait(len(confirmed), 60)

                expected = {"svc.flaky": 1, "cmd.amqp_test.work": 1}

                async def one_consumer_each() -> bool:
                    return await consumer_counts(namespace, list(expected)) == expected

                await eventually(one_consumer_each, 10, "exactly one consumer per queue")
                assert len(confirmed) > 100
        finally:
            proxy.stop()
        missing = confirmed - set(rec.counts)
        assert not missing, f"{len(missing)} confirmed messages never handled, e.g. {sorted(missing)[:5]}"

    run_strict(scenario, 150)


def test_stale_delivery_settles_nothing(namespace: str) -> None:
    """A delivery whose channel died with its connection: ack/retry/dead_letter neither
    raise nor settle; the message comes back after the reconnection."""

    async def scenario() -> None:
        proxy = FaultProxy(broker_address()).start()
        url = url_for(namespace, url_at(proxy.port))
        transport = AmqpTransport(BackendConfig(url=url, scheme="amqp", namespace=namespace))
        node = NodeInfo(id="stale0000000001", name="stale")
        try:
            await transport.open(node, lambda data: None)
            receiver = await transport.subscribe(Subscription("stale", frozenset({"amqp_test.tick"}), frozenset(), 4))
            envelope = pycomms.spi.Envelope(id="m1", type="amqp_test.tick", kind="event", source="x", body=b'{"n":1}')
            await transport.publish([envelope])
            (first,) = await receiver.receive(4)
            assert first.attempt == 1
            reconnected = proxy.next_link(30 * scale())
            proxy.cut(new_links="forward", reset=True)
            await reconnected
            async with asyncio.timeout(30 * scale()):
                (again,) = await receiver.receive(4)
            await first.ack()
            await first.retry(0)
            await first.dead_letter(pycomms.DeadLetter("m1", "t", "stale", "failed", "", 1, 0.0))
            assert again.data == first.data
            assert again.attempt == 2, "a redelivery counts as an attempt"
            await again.ack()
            assert await transport.dead_letters("stale", 10) == []
            await receiver.close()
        finally:
            await transport.close()
            proxy.stop()

    run_strict(scenario, 60)


def test_publish_raises_within_timeout_while_broker_unreachable(namespace: str) -> None:
    async def scenario() -> None:
        proxy = FaultProxy(broker_address()).start()
        try:
            async with pycomms.connect(url_for(namespace, url_at(proxy.port), operation_timeout=1.0)) as bus:
                proxy.cut(new_links="refuse", reset=True)
                started = time.monotonic()
                with pytest.raises(pycomms.PublishError, match="operation_timeout"):
                    await bus.publish(Tick(n=1))
                assert time.monotonic() - started < 5 * scale()
                proxy.resume()
                async with asyncio.timeout(30 * scale()):
                    while True:  # back once the proxy lets it reconnect
                        try:
                            await bus.publish(Tick(n=2))
                            break
                        except pycomms.PublishError:
                            continue
        finally:
            proxy.stop()

    run_strict(scenario, 60)


def test_consumer_comes_back_after_its_queue_was_deleted(namespace: str) -> None:
    """The broker cancels the consumer of a deleted queue; the receiver declares the queue
    again on a new channel and consumes it."""

    async def scenario() -> None:
        rec = Recorder()
        svc = Service("phoenix")

        @svc.on
        async def tick(event: Tick) -> None:
            rec.add(event.n)

        async with pycomms.connect(url_for(namespace), services=[svc]) as bus:
            conn = await aio_pika.connect(AMQP_URL.split("?", 1)[0])
            async with conn:
                channel = await conn.channel()
                await channel.queue_delete(f"pycomms.{namespace}.svc.phoenix")

            async def consumed_again() -> bool:
                try:
                    return (await consumer_counts(namespace, ["svc.phoenix"]))["svc.phoenix"] == 1
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    return False

            await eventually(consumed_again, 20, "the deleted queue declared and consumed again")
            await bus.publish(Tick(n=1))
            await rec.wait(1, 20)
        rec.assert_exactly_once([1])

    run_strict(scenario, 60)


def test_silent_connection_is_detected_by_heartbeats_and_replaced(namespace: str) -> None:
    """The network goes silent (no reset): heartbeats notice, the bus reconnects while the
    broker still holds the old connection, and consuming and request/reply work again."""

    async def scenario() -> None:
        proxy = FaultProxy(broker_address()).start()
        rec = Recorder()
        svc = Service("quiet")

        @svc.on
        async def tick(event: Tick) -> None:
            rec.add(event.n)

        @svc.on
        async def echo(request: Echo) -> Echoed:
            return Echoed(n=request.n)

        try:
            url = url_for(namespace, url_at(proxy.port), heartbeat=1)
            async with pycomms.connect(url, services=[svc]) as bus, pycomms.connect(url_for(namespace)) as direct:
                reconnected = proxy.next_link(30 * scale())
                assert proxy.silence(new_links="forward")
                await reconnected
                await direct.publish(Tick(n=1))
                await rec.wait(1, 30)
                assert (await bus.request(Echo(n=5), timeout=20 * scale())).n == 5

                async def sees_itself() -> bool:
                    return bus.node.id in {n.id for n in await direct.nodes()}

                await eventually(sees_itself, 10, "the reconnected node in presence")
        finally:
            proxy.stop()
        rec.assert_exactly_once([1])

    run_strict(scenario, 90)
