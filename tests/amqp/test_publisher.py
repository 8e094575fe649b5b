"""Pipelined publishing (`Publisher`) against the shared broker: confirms of one write
come back to the right callers, and a negative confirm is a `PublishError`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection
from amqp_support import AMQP_URL
from pamqp.commands import Basic

import pycomms
from pycomms.testing import run_strict
from pycomms_amqp._link import Link
from pycomms_amqp._options import AmqpOptions
from pycomms_amqp._publisher import Outgoing, Publisher

_names = itertools.count()


@asynccontextmanager
async def link() -> AsyncIterator[Link]:
    async def nothing(conn: AbstractConnection) -> None:
        pass

    opened = Link(AMQP_URL, None, AmqpOptions(operation_timeout=20), f"publisher-test-{next(_names)}", nothing)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def message(queue: str, n: int) -> Outgoing:
    return Outgoing("", queue, b"x" * n, Basic.Properties(delivery_mode=2, message_id=f"m{n}"))


def test_the_driver_offers_what_the_publisher_relies_on() -> None:
    """Else `Link` silently falls back to one ``basic_publish`` per message."""

    async def scenario() -> None:
        async with link() as opened:
            assert isinstance(await opened._publisher_channel(), Publisher)

    run_strict(scenario, 30)


def test_concurrent_publishes_and_batches_all_arrive_once(namespace: str) -> None:
    """Many callers, single messages and batches (bodies of 0 bytes to several frames):
    every message is stored once, with its own body."""

    async def scenario() -> None:
        queue = f"pycomms.{namespace}.publisher"
        async with link() as opened:
            channel = await opened.admin()
            declared = await channel.declare_queue(queue, exclusive=True)
            sizes = [0, 1, 200, 140_000, *range(300, 700)]  # 140 kB spans several frames
            singles = [opened.publish([message(queue, n)]) for n in sizes[:50]]
            batches = [opened.publish([message(queue, n) for n in sizes[i : i + 100]]) for i in range(50, 450, 100)]
            await asyncio.gather(*singles, *batches)
            bodies = []
            while (got := await declared.get(no_ack=True, fail=False)) is not None:
                bodies.append(len(got.body))
            assert sorted(bodies) == sorted(sizes)

    run_strict(scenario, 60)


def test_a_negative_confirm_is_a_publish_error(namespace: str) -> None:
    """A full queue with ``x-overflow=reject-publish`` makes the broker ``basic.nack``."""

    async def scenario() -> None:
        queue = f"pycomms.{namespace}.full"
        async with link() as opened:
            channel = await opened.admin()
            arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
            await channel.declare_queue(queue, exclusive=True, arguments=arguments)
            await opened.publish([message(queue, 1)])
            with pytest.raises(pycomms.PublishError, match="negative publisher confirm"):
                await opened.publish([message(queue, 2), message(queue, 3)])
            await opened.publish([message(f"pycomms.{namespace}.nowhere", 4)])  # unroutable: confirmed
            await channel.queue_delete(queue)

    run_strict(scenario, 30)


def test_a_message_amqp_cannot_carry_is_a_publish_error_and_the_channel_stays_in_step(namespace: str) -> None:
    async def scenario() -> None:
        queue = f"pycomms.{namespace}.long"
        async with link() as opened:
            channel = await opened.admin()
            declared = await channel.declare_queue(queue, exclusive=True)
            publisher = await opened._publisher_channel()
            with pytest.raises(pycomms.PublishError, match="cannot encode"):
                await opened.publish([message(queue, 1), message("x" * 300, 2)])  # routing key > 255 bytes
            await opened.publish([message(queue, 3)])
            assert (await opened._publisher_channel()) is publisher
            got = await declared.get(no_ack=True)
            assert len(got.body) == 3
            assert await declared.get(no_ack=True, fail=False) is None

    run_strict(scenario, 30)


def test_publishing_goes_on_after_the_channel_is_closed_under_it(namespace: str) -> None:
    """A channel error closes the publisher's channel while messages are in flight: they
    are published again on a new channel; none is lost."""

    async def scenario() -> None:
        queue = f"pycomms.{namespace}.reopen"
        async with link() as opened:
            channel = await opened.admin()
            declared = await channel.declare_queue(queue, exclusive=True)
            publisher = await opened._publisher_channel()
            assert isinstance(publisher, Publisher)
            first = asyncio.ensure_future(opened.publish([message(queue, n) for n in range(200)]))
            await asyncio.sleep(0)
            missing = f"pycomms.{namespace}.missing"
            with pytest.raises(aio_pika.exceptions.ChannelClosed):  # NOT_FOUND closes the channel
                await publisher._channel.basic_publish(b"", exchange=missing, routing_key="x")
            await first
            await opened.publish([message(queue, 1000)])
            assert (await opened._publisher_channel()) is not publisher
            count = 0
            while await declared.get(no_ack=True, fail=False) is not None:
                count += 1
            assert count >= 201  # at-least-once: a message may be stored twice

    run_strict(scenario, 60)


def test_a_cancelled_publish_leaves_the_channel_in_step(namespace: str) -> None:
    """Cancelled while its confirms are pending (``operation_timeout``, a caller's own
    timeout): nothing is left running or unretrieved, and the next publish works."""

    async def scenario() -> None:
        queue = f"pycomms.{namespace}.cancelled"
        async with link() as opened:
            channel = await opened.admin()
            await channel.declare_queue(queue, exclusive=True)
            for turns in range(4):
                task = asyncio.ensure_future(opened.publish([message(queue, n) for n in range(300)]))
                for _ in range(turns):
                    await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await opened.publish([message(queue, 1)])

    run_strict(scenario, 30)


def test_without_the_driver_internals_publishing_falls_back_to_basic_publish(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Publisher, "usable", staticmethod(lambda channel: False))

    async def scenario() -> None:
        queue = f"pycomms.{namespace}.fallback"
        async with link() as opened:
            channel = await opened.admin()
            declared = await channel.declare_queue(queue, exclusive=True)
            assert not isinstance(await opened._publisher_channel(), Publisher)
            batch = [message(queue, n) for n in range(2, 52)]
            await asyncio.gather(opened.publish([message(queue, 1)]), opened.publish(batch))
            count = 0
            while await declared.get(no_ack=True, fail=False) is not None:
                count += 1
            assert count == 51

    run_strict(scenario, 30)
