"""``aiomqtt``: a hand-written MQTT 5 queue with aiomqtt, the client pycomms-mqtt uses.

Publishers: every event is one QoS 1 PUBLISH awaited until its PUBACK, from one shared
connection. Consumer: one connection with a shared subscription (``$share/bench/...``),
Receive Maximum 65535 (so Mosquitto's 1000-message queue bound is not what limits it)
and paho's manual acknowledgement: ``concurrency`` workers validate and handle each
message, and its PUBACK leaves after the handler. The session is not persistent (it
ends with the connection), so nothing is left on the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import WorkerPool, cancel, fresh_name, started


class MqttSession:
    def __init__(self, url: str, topic: str, tracker: Tracker) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 1883
        self._topic = topic
        self._tracker = tracker
        self._publisher: aiomqtt.Client | None = None
        self._consumer: aiomqtt.Client | None = None
        self._pool: WorkerPool[aiomqtt.Message] | None = None
        self._loop: asyncio.Task[None] | None = None

    async def start(self, concurrency: int) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = 65535
        self._consumer = aiomqtt.Client(
            self._host, self._port, protocol=aiomqtt.ProtocolVersion.V5, properties=props, identifier=fresh_name()
        )
        self._consumer._client.manual_ack_set(True)
        await self._consumer.__aenter__()
        await self._consumer.subscribe(f"$share/bench/{self._topic}", qos=1)
        self._publisher = aiomqtt.Client(self._host, self._port, protocol=aiomqtt.ProtocolVersion.V5)
        self._publisher.pending_calls_threshold = 1 << 30  # 64 concurrent publishers are normal here
        await self._publisher.__aenter__()
        self._pool = WorkerPool(concurrency, self._handle)
        self._loop = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._consumer is not None
        assert self._pool is not None
        async for message in self._consumer.messages:
            self._pool.put(message)

    async def _handle(self, message: aiomqtt.Message) -> None:
        assert self._consumer is not None
        body = message.payload if isinstance(message.payload, bytes) else b""
        event = BenchEvent.model_validate_json(body)
        self._tracker.hit(event.seq)
        self._consumer._client.ack(message.mid, 1)

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        assert self._publisher is not None
        publisher = self._publisher
        await asyncio.gather(*(publisher.publish(self._topic, e.model_dump_json(), qos=1) for e in events))

    async def request(self, seq: int) -> None:
        raise Unsupported("aiomqtt baseline has no request/reply")

    async def close(self) -> None:
        await cancel(self._loop)
        if self._pool is not None:
            await self._pool.close()
        for client in (self._publisher, self._consumer):
            if client is not None:
                try:
                    await client.__aexit__(None, None, None)
                except aiomqtt.MqttError:
                    pass


class MqttRaw:
    name = "aiomqtt"
    description = "hand-written aiomqtt: QoS 1, shared subscription, PUBACK after the handler"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self._url = url

    async def open(self, tracker: Tracker, concurrency: int) -> MqttSession:
        return await started(MqttSession(self._url, f"bench/{fresh_name()}", tracker), concurrency)


def make(url: str) -> MqttRaw:
    return MqttRaw(url)
