"""``drop_namespace()`` on RabbitMQ: after traffic of every kind (events, commands, a
request, a delayed retry, dead letters, an ephemeral observer), dropping the namespace
leaves none of its queues or exchanges on the broker, as ``rabbitmqctl`` lists them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import pytest
from amqp_messages import Job
from amqp_support import broker_address, leftovers, url_for
from shared_services import AMQP_URL
from system_tools import sbin_tool

import pycomms
from pycomms import Event, Message, Reject, Request, RetryLater, Service
from pycomms.testing import Recorder, eventually, run_strict, unavailable
from pycomms_amqp._registry import COMPACT_AT


class Sighting(Event, name="amqp_drop.sighting"):
    n: int


class Answer(Message, name="amqp_drop.answer"):
    n: int


class Question(Request[Answer], name="amqp_drop.question"):
    n: int


@pytest.fixture
def listing(shared_broker: None) -> Callable[[str], list[str]]:
    """What the shared broker holds of a namespace, as ``rabbitmqctl`` lists it."""
    if sbin_tool("rabbitmqctl") is None or broker_address()[1] != 5672:
        unavailable("rabbitmqctl of the local shared RabbitMQ (port 5672) is needed to list its queues")
    return lambda namespace: leftovers([namespace])


def busy_service(rec: Recorder) -> Service:
    svc = Service("spotter", retry=pycomms.Retry(max_attempts=2, delay=0.2, jitter=0))

    @svc.on
    async def sighting(event: Sighting) -> None:
        if event.n == 1:
            raise Reject("no thanks")  # a dead letter
        if event.n == 2:
            raise RetryLater(0.2)  # through a delay queue, then dead-lettered (max_attempts=2)
        rec.add(event.n)

    @svc.on
    async def job(command: Job) -> None:
        rec.add(("job", command.n))

    @svc.on
    async def question(request: Question) -> Answer:
        return Answer(n=request.n)

    return svc


async def traffic_then_drop(url: str, listing: Callable[[str], list[str]], namespace: str) -> None:
    rec = Recorder()
    watcher = Service("watcher", ephemeral=True)

    @watcher.on
    async def seen(event: Sighting) -> None:
        pass

    async with pycomms.connect(url, services=[busy_service(rec), watcher]) as bus:
        await bus.publish(Sighting(n=0), Sighting(n=1), Sighting(n=2))
        await bus.send(Job(n=7))
        assert (await bus.request(Question(n=3), timeout=20)).n == 3
        await rec.wait(2, 20)

        async def two_letters() -> bool:
            return len(await bus.dead_letters("spotter")) == 2

        await eventually(two_letters, 20, "two dead letters of 'spotter'")
        assert sorted(letter.reason for letter in await bus.dead_letters("spotter")) == ["failed", "rejected"]
        during = await asyncio.to_thread(listing, namespace)
        assert any(".delay." in name for name in during), during  # the retry made a delay queue
        assert any(".dlq.spotter" in name for name in during), during
    left_by_services = await asyncio.to_thread(listing, namespace)
    assert left_by_services, "the services left nothing to drop: the test would prove nothing"
    async with pycomms.connect(url) as dropper:
        removed = await dropper.drop_namespace()
    assert dropper.closed
    assert await asyncio.to_thread(listing, namespace) == []
    # Everything the services left, the registry and the dropper's own queues were removed:
    assert removed >= len(left_by_services)


def test_drop_leaves_nothing_of_the_namespace(namespace: str, listing: Callable[[str], list[str]]) -> None:
    run_strict(lambda: traffic_then_drop(url_for(namespace), listing, namespace), 90)


def test_drop_of_a_compacted_registry_still_finds_every_queue(
    namespace: str, listing: Callable[[str], list[str]]
) -> None:
    """Records repeat across restarts; past `COMPACT_AT` a connecting node rewrites them
    as one message, and a drop still finds every queue they named."""

    async def scenario() -> None:
        prefix = f"pycomms.{namespace}."
        registry = f"{prefix}registry"
        extra = [f"{prefix}svc.old{n}" for n in range(3)]
        conn = await aio_pika.connect(AMQP_URL.split("?", 1)[0])
        async with conn:
            channel = await conn.channel()
            await channel.declare_queue(registry, durable=True, arguments={"x-queue-type": "classic"})
            for name in extra:
                await channel.declare_queue(name, durable=True)
            for n in range(COMPACT_AT + 1):
                body = f'{{"queues": ["{extra[n % len(extra)]}"]}}'.encode()
                await channel.default_exchange.publish(aio_pika.Message(body), routing_key=registry)

            async def compacted() -> bool:
                declared = await channel.declare_queue(registry, passive=True)
                return declared.declaration_result.message_count == 1

            async with pycomms.connect(url_for(namespace)) as bus:
                await eventually(compacted, 20, "the registry compacted to one record")
                assert await bus.drop_namespace() >= len(extra) + 5  # + 4 exchanges and the registry
        assert await asyncio.to_thread(listing, namespace) == []

    run_strict(scenario, 60)


def test_a_node_running_through_a_forced_drop_declares_its_topology_again(namespace: str) -> None:
    """Its exchanges and queues deleted under it, a running node finds out on its next
    publish (NOT_FOUND), reconnects and declares everything again: presence, publishing
    and its own service work as before."""

    async def scenario() -> None:
        rec = Recorder()
        svc = busy_service(rec)
        async with pycomms.connect(url_for(namespace), services=[svc]) as bus:
            async with pycomms.connect(url_for(namespace, presence_interval=0.2)) as dropper:
                assert await dropper.drop_namespace(force=True) > 0
            await bus.publish(Sighting(n=10))  # to a deleted exchange: the node reconnects
            await rec.wait(1, 20)
            assert bus.node.id in {node.id for node in await bus.nodes()}
            await bus.send(Job(n=11))
            await rec.wait(2, 20)
        rec.assert_exactly_once([10, ("job", 11)])

    run_strict(scenario, 60)
