"""Ephemeral services on RabbitMQ leave nothing behind: their event queue auto-deletes
(the broker deletes it with its last consumer, at close or when the node dies) and
their empty dead-letter queue is deleted when they close."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from amqp_support import AMQP_URL, url_for

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, run_strict

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]


class Tick(Event, name="observers.tick"):
    n: int


def existing(queues: list[str]) -> list[bool]:
    """Which of ``queues`` exist, asked on a connection of its own in an event loop of
    its own (aio-pika may leave a closing task behind, which the scenario's strict
    check of its own loop would count)."""

    async def ask() -> list[bool]:
        connection = await aio_pika.connect(AMQP_URL)
        try:
            found = []
            for queue in queues:
                channel = await connection.channel()
                try:
                    await channel.declare_queue(queue, passive=True)
                    found.append(True)
                except ChannelNotFoundEntity:
                    found.append(False)
                finally:
                    if not channel.is_closed:
                        await channel.close()
            return found
        finally:
            await connection.close()

    return asyncio.run(ask())


def test_an_ephemeral_service_leaves_no_queue_behind(namespace: str) -> None:
    async def scenario() -> None:
        rec = Recorder()
        tail = Service("tail", ephemeral=True)

        @tail.on
        async def seen(msg: Tick) -> None:
            rec.add(msg.n)

        queues = [f"pycomms.{namespace}.svc.tail", f"pycomms.{namespace}.dlq.tail"]
        async with pycomms.connect(url_for(namespace)) as pub:
            async with pycomms.connect(url_for(namespace), services=[tail]):
                assert await asyncio.to_thread(existing, queues) == [True, True]
                await pub.publish(Tick(n=1))
                await rec.wait(1, 10)
            assert await asyncio.to_thread(existing, queues) == [False, False]

    run_strict(scenario, 30)
