"""A Python program that talks to PyComms workers on NATS JetStream without PyComms: nats-py
and the CloudEvents SDK (PyPI ``cloudevents``) only, written from docs/interop/nats.md.

    INTEROP_URL=nats://127.0.0.1:4222 INTEROP_NAMESPACE=shop python nats_client.py ACTION ...

Actions (the message types are those of tests/interop/interop_worker.py):

    publish N              publish N interop.order_placed events (order_id 0..N-1)
    send ORDER_ID          send an interop.ship command
    request SKU QTY        ask interop.get_quote and print the reply
    bad                    publish three bad events, then a good one (order_id 1000)
    subscribe GROUP COUNT  durable subscriber GROUP of interop.notice (a durable pull consumer): read COUNT events
    unsubscribe GROUP      delete the durable consumer GROUP
    observe COUNT          passing observer of interop.notice (a plain subscription): read COUNT events

It prints one JSON object a line for what it received, and ``{"ready": true}`` once a
consumer's subscription is in place. Every message is one structured-mode CloudEvent,
published with JetStream (the ack is the promise it is stored), headers ``Content-Type:
application/cloudevents+json`` and ``Nats-Msg-Id`` = the event's id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
from typing import Any

import nats
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

SOURCE = "/interop/python-nats"
NOTICE = "interop.notice"
FORMAT = JSONFormat()
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MAX_EVENT = 1024 * 1024  # the worker's default max_message_size: refuse bigger input before parsing
NS = os.environ.get("INTEROP_NAMESPACE", "default")
TIMEOUT = 10.0  # seconds for one JetStream call


def ns_token(ns: str) -> str:
    """The namespace's token in names: as it is when plain, else ``_`` → ``__`` and ``.`` → ``_d``."""
    return ns if re.fullmatch(r"[A-Za-z0-9_-]+", ns) else ns.replace("_", "__").replace(".", "_d")


def subject(kind: str, name: str) -> str:
    """A subject of the namespace: ``pycomms.<ns>.<kind>.<name>`` (the names here need no escaping)."""
    return f"pycomms.{ns_token(NS)}.{kind}.{name}"


def events_stream() -> str:
    return f"PYCOMMS_{ns_token(NS)}_EVENTS"


def event(type_: str, kind: str, data: Any, **extensions: str) -> CloudEvent:
    """A structured-mode CloudEvent (the SDK fills specversion, id and time)."""
    attributes = {"type": type_, "source": SOURCE, "kind": kind, "datacontenttype": "application/json", **extensions}
    return CloudEvent(attributes=attributes, data=data)


def read_event(raw: bytes) -> BaseCloudEvent:
    if len(raw) > MAX_EVENT:
        raise ValueError(f"event of {len(raw)} bytes, over the {MAX_EVENT} allowed")
    return FORMAT.read(CloudEvent, raw)


def show(ce: BaseCloudEvent, **more: Any) -> None:
    line = {"id": ce.get_id(), "type": ce.get_type(), "kind": ce.get_extension("kind"), "data": ce.get_data()}
    print(json.dumps({**line, **more}), flush=True)


async def put(js: Any, to: str, payload: bytes, msg_id: str) -> Any:
    """JetStream-publish ``payload`` with the two headers; returns the stream's ack."""
    headers = {"Content-Type": "application/cloudevents+json", "Nats-Msg-Id": msg_id}
    return await js.publish(to, payload, timeout=TIMEOUT, headers=headers)


async def publish(js: Any, count: int) -> None:
    to = subject("e", "interop.order_placed")
    events = [
        event("interop.order_placed", "event", {"order_id": n, "total": n + 0.5}, traceparent=TRACEPARENT)
        for n in range(count)
    ]
    acks = await asyncio.gather(*(put(js, to, FORMAT.write(ce), ce.get_id()) for ce in events))
    print(json.dumps({"published": count, "stored": sum(1 for ack in acks if not ack.duplicate)}), flush=True)


async def send(js: Any, order_id: int) -> None:
    ce = event("interop.ship", "command", {"order_id": order_id, "carrier": "post"})
    await put(js, subject("c", ce.get_type()), FORMAT.write(ce), ce.get_id())
    print(json.dumps({"sent": order_id}), flush=True)


async def request(nc: Any, js: Any, sku: str, qty: int, timeout: float = 20.0) -> int:
    reply_to = secrets.token_hex(8)
    sub = await nc.subscribe(subject("r", reply_to))
    await nc.flush()  # the subscription is on the server before the request can be answered
    ask = event("interop.get_quote", "request", {"sku": sku, "qty": qty}, replyto=reply_to)
    await put(js, subject("c", ask.get_type()), FORMAT.write(ask), ask.get_id())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                break
            reply = read_event(msg.data)
            if reply.get_extension("kind") == "reply" and reply.get_extension("causationid") == ask.get_id():
                show(reply, pycommserror=reply.get_extension("pycommserror"), causationid=ask.get_id())
                return 0
    finally:
        await sub.unsubscribe()
    print(f"no reply to request {ask.get_id()} within {timeout}s", file=sys.stderr)
    return 1


async def bad(js: Any) -> None:
    to = subject("e", "interop.order_placed")
    good = {"order_id": 1000, "total": 1.0}
    invalid = event("interop.order_placed", "event", {"order_id": "not a number", "total": 1.0})
    numeric_time = {"specversion": "1.0", "id": "bad-time", "source": SOURCE, "type": "interop.order_placed"}
    samples = [
        ("not json", b"this is not json", f"bad-json-{secrets.token_hex(6)}"),
        (
            "numeric time",
            json.dumps(numeric_time | {"kind": "event", "time": 1721400000.25, "data": good}).encode(),
            "bad-time",
        ),
        ("invalid data", FORMAT.write(invalid), invalid.get_id()),
    ]
    for what, raw, msg_id in samples:
        await put(js, to, raw, msg_id)
        print(json.dumps({"bad": what}), flush=True)
    ok = event("interop.order_placed", "event", good)
    await put(js, to, FORMAT.write(ok), ok.get_id())
    print(json.dumps({"published": 1}), flush=True)


async def subscribe(js: Any, group: str, count: int) -> None:
    # the same configuration again is accepted: a second run resumes the consumer
    await js.add_consumer(
        events_stream(),
        ConsumerConfig(
            durable_name=group,
            filter_subject=subject("e", NOTICE),
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            max_deliver=-1,
        ),
        timeout=TIMEOUT,
    )
    print(json.dumps({"ready": True}), flush=True)
    psub = await js.pull_subscribe_bind(group, events_stream())
    seen = 0
    while seen < count:
        try:
            msgs = await psub.fetch(min(count - seen, 16), timeout=5)  # pull no more than it will ack
        except TimeoutError:
            continue
        for msg in msgs:
            show(read_event(msg.data), seq=msg.metadata.sequence.stream)
            await msg.ack_sync(timeout=TIMEOUT)  # acknowledged once handled, and the server said so
            seen += 1
    await psub.unsubscribe()


async def unsubscribe(js: Any, group: str) -> None:
    print(json.dumps({"deleted": await js.delete_consumer(events_stream(), group)}), flush=True)


async def observe(nc: Any, count: int) -> None:
    sub = await nc.subscribe(subject("e", NOTICE), max_msgs=count)
    await nc.flush()
    print(json.dumps({"ready": True}), flush=True)
    async for msg in sub.messages:
        show(read_event(msg.data))


async def run(action: str, args: list[str]) -> int:
    nc = await nats.connect(os.environ.get("INTEROP_URL", "nats://127.0.0.1:4222"), connect_timeout=10)
    js = nc.jetstream(timeout=TIMEOUT)
    try:
        if action == "publish":
            await publish(js, int(args[0]))
        elif action == "send":
            await send(js, int(args[0]))
        elif action == "request":
            return await request(nc, js, args[0], int(args[1]))
        elif action == "bad":
            await bad(js)
        elif action == "subscribe":
            await subscribe(js, args[0], int(args[1]))
        elif action == "unsubscribe":
            await unsubscribe(js, args[0])
        else:
            await observe(nc, int(args[0]))
    finally:
        await nc.drain()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["publish", "send", "request", "bad", "subscribe", "unsubscribe", "observe"])
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args()
    return asyncio.run(run(ns.action, ns.args))


if __name__ == "__main__":
    sys.exit(main())
