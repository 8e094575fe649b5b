"""``faststream-mqtt``: FastStream's MQTT broker (0.7, on zmqtt), used as documented.

An ``MQTTBroker`` (MQTT 5) with one ``@broker.subscriber(topic, qos=QoS.AT_LEAST_ONCE,
shared="bench", max_workers=concurrency)`` handler typed with the same pydantic model,
and ``broker.publish(event, topic, qos=QoS.AT_LEAST_ONCE)`` from every publisher task.
Receive Maximum 65535 as in the other MQTT runs. The session ends with the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from faststream.mqtt import MQTTBroker, QoS

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import fresh_name, strip_query


class FastStreamMqttSession:
    def __init__(self, broker: MQTTBroker, topic: str) -> None:
        self._broker = broker
        self._topic = topic

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        broker, topic = self._broker, self._topic
        await asyncio.gather(*(broker.publish(e, topic, qos=QoS.AT_LEAST_ONCE) for e in events))

    async def request(self, seq: int) -> None:
        raise Unsupported("faststream-mqtt baseline has no request/reply")

    async def close(self) -> None:
        await self._broker.stop()


class FastStreamMqtt:
    name = "faststream-mqtt"
    description = "FastStream MQTTBroker (MQTT 5), QoS 1 shared subscription, max_workers"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self._url = strip_query(url)

    async def open(self, tracker: Tracker, concurrency: int) -> FastStreamMqttSession:
        topic = f"bench/{fresh_name()}"
        broker = MQTTBroker(self._url, receive_maximum=65535, logger=None, graceful_timeout=5.0)

        @broker.subscriber(topic, qos=QoS.AT_LEAST_ONCE, shared="bench", max_workers=concurrency)
        async def on_event(event: BenchEvent) -> None:
            tracker.hit(event.seq)

        try:
            await broker.start()
        except BaseException:
            await broker.stop()
            raise
        return FastStreamMqttSession(broker, topic)


def make(url: str) -> FastStreamMqtt:
    return FastStreamMqtt(url)
