"""A Python program that talks to PyComms workers on RabbitMQ without PyComms: aio-pika
and the CloudEvents SDK (PyPI ``cloudevents``) only, written from docs/interop/amqp.md.

    INTEROP_URL=amqp://guest:guest@127.0.0.1:5672/ INTEROP_NAMESPACE=shop \\
        INTEROP_QUEUE_TYPE=classic python amqp_client.py ACTION ...

``INTEROP_QUEUE_TYPE`` is the worker's ``queue_type`` (``classic`` or ``quorum``).
Actions (the message types are those of tests/interop/interop_worker.py):

    publish N              publish N interop.order_placed events (order_id 0..N-1)
    binary                 publish two events in binary mode (order_id 2000, 2001) and one
                           without its kind
    send ORDER_ID          send an interop.ship command
    request SKU QTY        ask interop.get_quote and print the reply
    bad                    publish three bad events, then a good one (order_id 1000)
    subscribe NAME COUNT   durable subscriber NAME of interop.notice: read COUNT events
    unsubscribe NAME       delete the durable subscriber NAME's queue
    observe COUNT          passing observer of interop.notice: read COUNT events

It prints one JSON object a line for what it received, and ``{"ready": true}`` once a
consumer's subscription is in place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

SOURCE = "/interop/python-amqp"
NOTICE = "interop.notice"
STRUCTURED = "application/cloudevents+json"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MAX_EVENT = 1024 * 1024  # the worker's default max_message_size: refuse bigger input before parsing
FORMAT = JSONFormat()
N = f"pycomms.{os.environ.get('INTEROP_NAMESPACE', 'default')}"
QUEUE_TYPE = os.environ.get("INTEROP_QUEUE_TYPE", "classic")


def out(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def event(type_: str, kind: str, data: Any, **extensions: str) -> CloudEvent:
    """A CloudEvent (the SDK fills specversion, id and time)."""
    attributes = {"type": type_, "source": SOURCE, "kind": kind, "datacontenttype": "application/json", **extensions}
    return CloudEvent(attributes=attributes, data=data)


def message(body: bytes, *, message_id: str | None = None, type_: str | None = None) -> aio_pika.Message:
    """A structured-mode event as a persistent AMQP message."""
    return aio_pika.Message(
        body, content_type=STRUCTURED, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message_id, type=type_
    )


def structured(ce: CloudEvent) -> aio_pika.Message:
    return message(FORMAT.write(ce), message_id=ce.get_id(), type_=ce.get_type())


def read_event(body: bytes) -> BaseCloudEvent:
    if len(body) > MAX_EVENT:
        raise ValueError(f"event of {len(body)} bytes, over the {MAX_EVENT} allowed")
    return FORMAT.read(CloudEvent, body)


def show(ce: BaseCloudEvent, **more: Any) -> None:
    out({"id": ce.get_id(), "type": ce.get_type(), "kind": ce.get_extension("kind"), "data": ce.get_data(), **more})


async def events_exchange(channel: AbstractChannel) -> AbstractExchange:
    return await channel.declare_exchange(f"{N}.events", aio_pika.ExchangeType.TOPIC, durable=True)


async def record(channel: AbstractChannel, queue: str) -> None:
    """Record ``queue`` in the namespace's registry, so that a namespace drop removes it."""
    registry = f"{N}.registry"
    await channel.declare_queue(registry, durable=True, arguments={"x-queue-type": "classic"})
    body = json.dumps({"queues": [queue]}).encode()
    persistent = aio_pika.DeliveryMode.PERSISTENT
    msg = aio_pika.Message(body, content_type="application/json", delivery_mode=persistent)
    await channel.default_exchange.publish(msg, routing_key=registry)


async def command_queue(channel: AbstractChannel, type_: str) -> str:
    queue = f"{N}.cmd.{type_}"
    await record(channel, queue)
    await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": QUEUE_TYPE})
    return queue


async def publish(channel: AbstractChannel, count: int) -> None:
    exchange = await events_exchange(channel)
    sends = []
    for n in range(count):
        ce = event("interop.order_placed", "event", {"order_id": n, "total": n + 0.5}, traceparent=TRACEPARENT)
        sends.append(exchange.publish(structured(ce), routing_key="interop.order_placed"))
    await asyncio.gather(*sends)  # each returns once the broker confirmed it
    out({"published": count})


async def binary(channel: AbstractChannel) -> None:
    exchange = await events_exchange(channel)
    for n in (2000, 2001, 2002):
        bound = rabbitmq.to_binary(event("interop.order_placed", "event", {"order_id": n, "total": 1.0}), FORMAT)
        headers: dict[str, Any] = dict(bound.headers)  # ce- headers; content_type = datacontenttype
        if n == 2002:
            del headers["ce-kind"]  # bad input: no kind
        msg = aio_pika.Message(bound.body, headers=headers, content_type=bound.content_type)
        await exchange.publish(msg, routing_key="interop.order_placed")
    out({"published": 3})


async def send(channel: AbstractChannel, order_id: int) -> None:
    queue = await command_queue(channel, "interop.ship")
    ce = event("interop.ship", "command", {"order_id": order_id, "carrier": "post"})
    await channel.default_exchange.publish(structured(ce), routing_key=queue)
    out({"sent": order_id})


async def request(channel: AbstractChannel, sku: str, qty: int, timeout: float = 20.0) -> int:
    reply_to = secrets.token_hex(8)
    replies = await channel.declare_exchange(f"{N}.replies", aio_pika.ExchangeType.DIRECT, durable=True)
    inbox = await channel.declare_queue("", exclusive=True, auto_delete=True, durable=False)
    await inbox.bind(replies, routing_key=reply_to)
    queue = await command_queue(channel, "interop.get_quote")
    ask = event("interop.get_quote", "request", {"sku": sku, "qty": qty}, replyto=reply_to)
    try:
        async with asyncio.timeout(timeout), inbox.iterator(no_ack=True) as incoming:
            await channel.default_exchange.publish(structured(ask), routing_key=queue)
            async for msg in incoming:
                reply = read_event(msg.body)
                if reply.get_extension("kind") == "reply" and reply.get_extension("causationid") == ask.get_id():
                    show(reply, pycommserror=reply.get_extension("pycommserror"), causationid=ask.get_id())
                    return 0
    except TimeoutError:
        pass
    print(f"no reply to request {ask.get_id()} within {timeout}s", file=sys.stderr)
    return 1


async def bad(channel: AbstractChannel) -> None:
    exchange = await events_exchange(channel)
    good = {"order_id": 1000, "total": 1.0}
    numeric_time = {"specversion": "1.0", "id": "bad-time", "source": SOURCE, "type": "interop.order_placed"}
    samples = {
        "not json": b"this is not json",
        "numeric time": json.dumps(numeric_time | {"kind": "event", "time": 1721400000.25, "data": good}).encode(),
        "invalid data": FORMAT.write(
            event("interop.order_placed", "event", {"order_id": "not a number", "total": 1.0})
        ),
    }
    for what, body in samples.items():
        await exchange.publish(message(body), routing_key="interop.order_placed")
        out({"bad": what})
    await exchange.publish(structured(event("interop.order_placed", "event", good)), routing_key="interop.order_placed")
    out({"published": 1})


async def subscriber_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    queue = f"{N}.sub.{name}"
    await record(channel, queue)
    declared = await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"})
    await declared.bind(await events_exchange(channel), routing_key=NOTICE)
    return declared


async def consume(queue: AbstractQueue, count: int, *, ack: bool) -> None:
    out({"ready": True})
    seen = 0
    async with queue.iterator(no_ack=not ack) as incoming:
        async for msg in incoming:
            show(read_event(msg.body), redelivered=msg.redelivered)
            if ack:
                await msg.ack()
            seen += 1
            if seen == count:
                return


async def subscribe(channel: AbstractChannel, name: str, count: int) -> None:
    await channel.set_qos(prefetch_count=count)
    await consume(await subscriber_queue(channel, name), count, ack=True)


async def unsubscribe(channel: AbstractChannel, name: str) -> None:
    await channel.queue_delete(f"{N}.sub.{name}")
    out({"deleted": f"{N}.sub.{name}"})


async def observe(channel: AbstractChannel, count: int) -> None:
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True, durable=False)
    await queue.bind(await events_exchange(channel), routing_key=NOTICE)
    await consume(queue, count, ack=False)


async def run(action: str, args: list[str]) -> int:
    url = os.environ.get("INTEROP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    async with await aio_pika.connect(url, timeout=10) as connection:
        channel = await connection.channel(publisher_confirms=True)
        if action == "publish":
            await publish(channel, int(args[0]))
        elif action == "binary":
            await binary(channel)
        elif action == "send":
            await send(channel, int(args[0]))
        elif action == "request":
            return await request(channel, args[0], int(args[1]))
        elif action == "bad":
            await bad(channel)
        elif action == "subscribe":
            await subscribe(channel, args[0], int(args[1]))
        elif action == "unsubscribe":
            await unsubscribe(channel, args[0])
        else:
            await observe(channel, int(args[0]))
    return 0


def main() -> int:
    actions = ["publish", "binary", "send", "request", "bad", "subscribe", "unsubscribe", "observe"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=actions)
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args()
    return asyncio.run(run(ns.action, ns.args))


if __name__ == "__main__":
    sys.exit(main())
