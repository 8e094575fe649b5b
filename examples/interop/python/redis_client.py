"""A Python program that talks to PyComms workers on Redis without PyComms: redis-py and
the CloudEvents SDK (PyPI ``cloudevents``) only, written from docs/interop/redis.md.

    INTEROP_URL=redis://127.0.0.1:6379/0 INTEROP_NAMESPACE=shop python redis_client.py ACTION ...

Actions (the message types are those of tests/interop/interop_worker.py):

    publish N              publish N interop.order_placed events (order_id 0..N-1)
    send ORDER_ID          send an interop.ship command
    request SKU QTY        ask interop.get_quote and print the reply
    bad                    publish three bad events, then a good one (order_id 1000)
    subscribe GROUP COUNT  durable subscriber GROUP of interop.notice: read COUNT events
    unsubscribe GROUP      remove the durable subscriber GROUP
    observe COUNT          passing observer of interop.notice: read COUNT events

It prints one JSON object a line for what it received, and ``{"ready": true}`` once a
consumer's subscription is in place.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from typing import Any

import redis
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

Client = Any  # redis.Redis: its methods are typed "Awaitable | Any", as it serves both APIs
SOURCE = "/interop/python-redis"
NOTICE = "interop.notice"
FORMAT = JSONFormat()
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MAX_EVENT = 1024 * 1024  # the worker's default max_message_size: refuse bigger input before parsing


def key(name: str) -> str:
    """A key of the namespace: ``pycomms:{NS}:<name>``."""
    return f"pycomms:{{{os.environ.get('INTEROP_NAMESPACE', 'default')}}}:{name}"


def event(type_: str, kind: str, data: Any, **extensions: str) -> bytes:
    """A structured-mode CloudEvent (the SDK fills specversion, id and time)."""
    return FORMAT.write(CloudEvent(attributes={"type": type_, "source": SOURCE, "kind": kind, **extensions}, data=data))


def read_event(raw: bytes) -> BaseCloudEvent:
    if len(raw) > MAX_EVENT:
        raise ValueError(f"event of {len(raw)} bytes, over the {MAX_EVENT} allowed")
    return FORMAT.read(CloudEvent, raw)


def show(ce: BaseCloudEvent, **more: Any) -> None:
    line = {"id": ce.get_id(), "type": ce.get_type(), "kind": ce.get_extension("kind"), "data": ce.get_data()}
    print(json.dumps({**line, **more}), flush=True)


def publish(r: Client, count: int) -> None:
    pipe = r.pipeline(transaction=False)
    stream = key("ev:interop.order_placed")
    for n in range(count):
        data = {"order_id": n, "total": n + 0.5}
        pipe.xadd(stream, {"d": event("interop.order_placed", "event", data, traceparent=TRACEPARENT)}, nomkstream=True)
    stored = sum(1 for entry_id in pipe.execute() if entry_id is not None)
    print(json.dumps({"published": count, "stored": stored}), flush=True)


def send(r: Client, order_id: int) -> None:
    r.xadd(key("cmd:interop.ship"), {"d": event("interop.ship", "command", {"order_id": order_id, "carrier": "post"})})
    print(json.dumps({"sent": order_id}), flush=True)


def request(r: Client, sku: str, qty: int, timeout: float = 20.0) -> int:
    reply_to = secrets.token_hex(8)
    replies = key(f"reply:{reply_to}")
    ask = CloudEvent(
        attributes={"type": "interop.get_quote", "source": SOURCE, "kind": "request", "replyto": reply_to},
        data={"sku": sku, "qty": qty},
    )
    r.xadd(key("cmd:interop.get_quote"), {"d": FORMAT.write(ask)})
    last, deadline = "0-0", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for _stream, entries in r.xread({replies: last}, count=100, block=1000) or ():
                for entry_id, fields in entries:
                    last = entry_id
                    reply = read_event(fields[b"d"])
                    if reply.get_extension("kind") == "reply" and reply.get_extension("causationid") == ask.get_id():
                        show(reply, pycommserror=reply.get_extension("pycommserror"), causationid=ask.get_id())
                        return 0
    finally:
        r.delete(replies)
    print(f"no reply to request {ask.get_id()} within {timeout}s", file=sys.stderr)
    return 1


def bad(r: Client) -> None:
    stream = key("ev:interop.order_placed")
    good = {"order_id": 1000, "total": 1.0}
    samples = {
        "not json": b"this is not json",
        "numeric time": json.dumps(
            {"specversion": "1.0", "id": "bad-time", "source": SOURCE, "type": "interop.order_placed"}
            | {"kind": "event", "time": 1721400000.25, "data": good}
        ).encode(),
        "invalid data": event("interop.order_placed", "event", {"order_id": "not a number", "total": 1.0}),
    }
    for what, raw in samples.items():
        r.xadd(stream, {"d": raw}, nomkstream=True)
        print(json.dumps({"bad": what}), flush=True)
    r.xadd(stream, {"d": event("interop.order_placed", "event", good)}, nomkstream=True)
    print(json.dumps({"published": 1}), flush=True)


def subscribe(r: Client, group: str, count: int) -> None:
    stream = key(f"ev:{NOTICE}")
    try:
        r.xgroup_create(stream, group, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    print(json.dumps({"ready": True}), flush=True)
    consumer, seen, start = "c1", 0, "0"  # first what was delivered before and not acked
    while seen < count:
        got = r.xreadgroup(group, consumer, {stream: start}, count=100, block=None if start == "0" else 1000)
        entries = [e for _s, es in got or () for e in es]
        if start == "0" and not entries:
            start = ">"
            continue
        for entry_id, fields in entries:
            if seen == count:
                break
            if fields:  # an entry trimmed away while pending comes back without fields
                show(read_event(fields[b"d"]), entry=entry_id.decode())
                seen += 1
            r.xack(stream, group, entry_id)


def unsubscribe(r: Client, group: str) -> None:
    print(json.dumps({"destroyed": r.xgroup_destroy(key(f"ev:{NOTICE}"), group)}), flush=True)


def observe(r: Client, count: int) -> None:
    stream = key(f"ev:{NOTICE}")
    try:  # from "now" as a concrete id, so nothing between this and the first read is missed
        last = r.xinfo_stream(stream)["last-generated-id"]
    except redis.ResponseError:  # no such key: the stream, when it appears, is all new
        last = "0-0"
    print(json.dumps({"ready": True}), flush=True)
    seen = 0
    while seen < count:
        for _stream, entries in r.xread({stream: last}, count=100, block=1000) or ():
            for entry_id, fields in entries:
                last = entry_id
                if seen < count:
                    show(read_event(fields[b"d"]))
                    seen += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["publish", "send", "request", "bad", "subscribe", "unsubscribe", "observe"])
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args()
    r = redis.Redis.from_url(os.environ.get("INTEROP_URL", "redis://127.0.0.1:6379/0"), socket_timeout=10)
    a = ns.args
    with r:
        if ns.action == "publish":
            publish(r, int(a[0]))
        elif ns.action == "send":
            send(r, int(a[0]))
        elif ns.action == "request":
            return request(r, a[0], int(a[1]))
        elif ns.action == "bad":
            bad(r)
        elif ns.action == "subscribe":
            subscribe(r, a[0], int(a[1]))
        elif ns.action == "unsubscribe":
            unsubscribe(r, a[0])
        else:
            observe(r, int(a[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
