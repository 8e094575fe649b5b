"""A command sent while no service subscribes to its type is parked: kept as a retained
message that the first service to subscribe takes after its SUBACK. A service may
subscribe, and take what is parked, between the broker's "no subscriber matched" (PUBACK
0x10) and the parking of the copy: seen after a broker restart, when a restored session
subscribed again while 32 senders were parking (2026-12-07, CI: sends never handled).

Here that order is forced on the shared broker: the producer's parking waits until a
service has subscribed and taken the parked commands."""

from __future__ import annotations

from typing import Any

from mqtt_support import url_of
from pycomms_mqtt._retained import read_retained

import pycomms
from pycomms import Command, Service
from pycomms.testing import Recorder, run_strict


class Order(Command, name="mqttpark.order"):
    n: int


def _service(handled: Recorder) -> Service:
    svc = Service("parking", concurrency=4)

    @svc.on
    async def order(command: Order) -> None:
        handled.add(command.n)

    return svc


def test_a_command_parked_after_a_service_took_the_parked_ones_still_reaches_it(namespace: str) -> None:
    url = url_of(namespace)

    async def scenario() -> None:
        handled = Recorder()
        consumers: list[pycomms.Bus] = []
        async with pycomms.connect(url) as producer:
            transport: Any = producer._transport  # the publisher link, to hold its parking back
            link = transport._link
            publish = link.publish

            async def publish_late(topic: str, payload: bytes, **kwargs: Any) -> int:
                if kwargs.get("what") == "send (parking)" and not consumers:
                    # the service subscribes and takes the parked commands first
                    consumers.append(await pycomms.connect(url, services=[_service(handled)]))
                code: int = await publish(topic, payload, **kwargs)
                return code

            link.publish = publish_late
            try:
                await producer.send(Order(n=1))
                assert consumers, "the send was not parked: a service was subscribed already"
                await handled.wait(1, 10)
                assert handled.items == [1]
                # the copy was taken back: a service started later gets nothing parked
                topics = transport.topics
                left = await read_retained(transport.endpoint, topics, [topics.parked_all(Order.type_name)], "test")
                assert left == {}, f"a parked copy was left: {sorted(left)}"
                await producer.send(Order(n=2))
                await handled.wait(2, 10)
                assert sorted(handled.items) == [1, 2]
            finally:
                for consumer in consumers:
                    await consumer.close()

    run_strict(scenario, 60)
