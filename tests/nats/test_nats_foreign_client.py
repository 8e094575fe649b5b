"""docs/interop/nats.md, followed by a "foreign" program written with plain nats-py and
the CloudEvents SDK (PyPI ``cloudevents``; no PyComms): it publishes an event, sends a
command, makes a request and reads the reply, consumes events as a durable subscriber
and as a passing observer, and leaves nothing behind, beside a PyComms service on the same namespace."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import nats
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats_support import NATS_URL, url_for

import pycomms
from pycomms import Command, Event, Message, Request, Service
from pycomms.testing import Recorder, run_strict, scale


class Placed(Event, name="interop.placed"):
    order_id: int


class Work(Command, name="interop.work"):
    n: int


class Answer(Message, name="interop.answer"):
    doubled: int


class Ask(Request[Answer], name="interop.ask"):
    n: int


HEADERS = {"Content-Type": "application/cloudevents+json"}


def cloudevent(type_name: str, kind: str, data: dict[str, Any], **extra: str) -> tuple[str, bytes]:
    """An event as the SDK writes it in structured mode, PyComms' attributes as extensions."""
    event = CloudEvent(
        attributes={"id": uuid.uuid4().hex, "source": "/foreign", "type": type_name, "kind": kind, **extra},
        data=data,
    )
    return event.get_id(), JSONFormat().write(event)


def read(data: bytes) -> CloudEvent:
    """What PyComms sent, read by the SDK."""
    event = JSONFormat().read(CloudEvent, data)
    assert isinstance(event, CloudEvent)
    return event


def test_a_foreign_nats_client_takes_part(namespace: str) -> None:
    url = url_for(namespace)
    prefix = f"pycomms.{namespace}"

    async def scenario() -> None:
        rec = Recorder()
        svc = Service("shop")

        @svc.on
        async def placed(m: Placed) -> None:
            rec.add(("placed", m.order_id))

        @svc.on
        async def work(m: Work) -> None:
            rec.add(("work", m.n))

        @svc.on
        async def ask(m: Ask) -> Answer:
            return Answer(doubled=m.n * 2)

        async with pycomms.connect(url, services=[svc]) as bus:
            nc = await nats.connect(NATS_URL.split("?")[0])
            js = nc.jetstream()
            try:
                # a passing observer: a plain subscription, nothing on the server
                observed: asyncio.Queue[bytes] = asyncio.Queue()

                async def observe(msg: Any) -> None:
                    observed.put_nowait(msg.data)

                observer = await nc.subscribe(f"{prefix}.e.>", cb=observe)
                # a durable subscriber of its own on the events stream
                events_stream = f"PYCOMMS_{namespace}_EVENTS"
                await js.add_consumer(
                    events_stream,
                    ConsumerConfig(
                        durable_name="audit",
                        filter_subject=f"{prefix}.e.interop.placed",
                        deliver_policy=DeliverPolicy.NEW,
                        ack_policy=AckPolicy.EXPLICIT,
                        max_deliver=-1,
                    ),
                )
                audit = await js.pull_subscribe_bind("audit", events_stream)

                # publish an event and send a command
                event_id, event = cloudevent("interop.placed", "event", {"order_id": 1})
                await js.publish(f"{prefix}.e.interop.placed", event, headers={**HEADERS, "Nats-Msg-Id": event_id})
                command_id, command = cloudevent("interop.work", "command", {"n": 5})
                await js.publish(f"{prefix}.c.interop.work", command, headers={**HEADERS, "Nats-Msg-Id": command_id})
                await rec.wait(2, 10)
                assert sorted(rec.items) == [("placed", 1), ("work", 5)]

                # a request and its reply
                me = uuid.uuid4().hex[:16]
                replies = await nc.subscribe(f"{prefix}.r.{me}")
                request_id, request = cloudevent("interop.ask", "request", {"n": 21}, replyto=me)
                await js.publish(f"{prefix}.c.interop.ask", request, headers={**HEADERS, "Nats-Msg-Id": request_id})
                reply = read((await replies.next_msg(timeout=10 * scale())).data)
                assert (reply.get_extension("kind"), reply.get_type()) == ("reply", "interop.answer")
                assert reply.get_extension("causationid") == request_id
                assert reply.get_data() == {"doubled": 42}
                await replies.unsubscribe()

                # a PyComms publish reaches the PyComms service, the durable subscriber and the observer too
                await bus.publish(Placed(order_id=2))
                audited: list[int] = []
                while len(audited) < 2:
                    for got in await audit.fetch(2 - len(audited), timeout=10 * scale()):
                        assert got.headers is not None
                        assert got.headers["Content-Type"] == "application/cloudevents+json"
                        data = read(got.data).get_data()
                        assert isinstance(data, dict)
                        audited.append(data["order_id"])
                        await got.ack()
                assert audited == [1, 2], "the durable subscriber gets the foreign and the PyComms event"
                seen = [read(await asyncio.wait_for(observed.get(), 10 * scale())) for _ in range(2)]
                assert [e.get_data() for e in seen] == [{"order_id": 1}, {"order_id": 2}]
                await rec.wait(3, 10)

                # leave nothing behind
                await observer.unsubscribe()
                await audit.unsubscribe()
                await js.delete_consumer(events_stream, "audit")
                names = [c.name for c in await js.consumers_info(events_stream)]
                assert "audit" not in names
            finally:
                await nc.close()

    run_strict(scenario, 60)
