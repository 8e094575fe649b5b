"""docs/interop/mqtt.md with the CloudEvents SDK (PyPI ``cloudevents``) and a plain MQTT 5
client (aiomqtt, no PyComms): the SDK's events are handled by a PyComms service, and the
SDK reads what PyComms sends (an event to an observer, a reply to a request)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiomqtt
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from mqtt_support import url_of
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from shared_services import MQTT_URL

import pycomms
from pycomms import Event, Message, Request, Service
from pycomms.testing import Recorder, run_strict, scale


class Reading(Event, name="ce.reading"):
    celsius: float


class Answer(Message, name="ce.answer"):
    doubled: int


class Ask(Request[Answer], name="ce.ask"):
    n: int


def structured(type_name: str, kind: str, data: dict[str, Any], **extra: str) -> tuple[bytes, Properties]:
    """An SDK event in the binding's structured mode: the JSON event, its content type."""
    event = CloudEvent(
        attributes={"id": uuid.uuid4().hex, "source": "/sensor-7", "type": type_name, "kind": kind, **extra}, data=data
    )
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ContentType = "application/cloudevents+json"
    return JSONFormat().write(event), properties


def read(payload: Any) -> CloudEvent:
    event = JSONFormat().read(CloudEvent, bytes(payload))
    assert isinstance(event, CloudEvent)
    return event


def test_the_sdk_and_pycomms_understand_each_other(namespace: str) -> None:
    host, _, port = MQTT_URL.removeprefix("mqtt://").partition("?")[0].partition(":")
    root = f"pycomms/{namespace}"

    async def scenario() -> None:
        readings = Recorder()
        svc = Service("sensors")

        @svc.on
        async def reading(event: Reading) -> None:
            readings.add(event.celsius)

        @svc.on
        async def ask(request: Ask) -> Answer:
            return Answer(doubled=request.n * 2)

        async with (
            pycomms.connect(url_of(namespace), services=[svc]) as bus,
            aiomqtt.Client(host, int(port or 1883), protocol=aiomqtt.ProtocolVersion.V5) as client,
        ):
            me = uuid.uuid4().hex[:16]
            await client.subscribe(f"{root}/e/ce.reading", qos=1)  # a passing observer
            await client.subscribe(f"{root}/r/{me}", qos=1)  # its replies

            payload, properties = structured("ce.reading", "event", {"celsius": 21.5})
            await client.publish(f"{root}/e/ce.reading", payload, qos=1, properties=properties)
            await readings.wait(1, 10)
            assert readings.items == [21.5]

            await bus.publish(Reading(celsius=22.0))
            payload, properties = structured("ce.ask", "request", {"n": 21}, replyto=me)
            asked = read(payload)
            await client.publish(f"{root}/c/ce.ask", payload, qos=1, properties=properties)

            seen: dict[str, CloudEvent] = {}
            async with asyncio.timeout(10 * scale()):
                async for message in client.messages:
                    event = read(message.payload)
                    seen[event.get_type()] = event
                    if {"ce.answer", "ce.reading"} <= seen.keys() and seen["ce.reading"].get_data() == {
                        "celsius": 22.0
                    }:
                        break
            reply = seen["ce.answer"]
            assert (reply.get_extension("kind"), reply.get_extension("causationid")) == ("reply", asked.get_id())
            assert reply.get_data() == {"doubled": 42}
            assert seen["ce.reading"].get_extension("kind") == "event"
            assert seen["ce.reading"].get_source() == bus.node.id

    run_strict(scenario, 60)
