"""A program that joins a PyComms ``tcp://`` cluster as a peer, without PyComms: asyncio
streams for the frames of docs/tcp-protocol.md, the CloudEvents SDK (PyPI ``cloudevents``)
for the envelopes. Written from docs/interop/tcp.md alone. It listens nowhere: its STATE
is the minimal one, so nobody dials it back.

    INTEROP_URL=tcp:// INTEROP_NAMESPACE=NS python tcp_client.py COMMAND [ARGS...]

``tcp://`` finds the nodes in the same-host registry directory of NS
(``$XDG_RUNTIME_DIR/pycomms/NS/nodes/*.json``, else ``/tmp/pycomms-UID/NS/nodes/``);
``tcp://HOST:PORT`` dials that node. Commands (JSON lines on stdout):

    publish COUNT             COUNT interop.order_placed events (order_id 0..COUNT-1)
    send ORDER_ID CARRIER     one interop.ship command
    request SKU QTY           one interop.get_quote request; prints its reply
    bad                       an event whose data does not fit, and one with a numeric time
    announce COUNT TEXT       the interop.announce command (the worker publishes COUNT notices)
    subscribe SERVICE         make SERVICE (interop.notice) known to the cluster, then leave
    consume SERVICE COUNT     run SERVICE until COUNT notices were handled, then leave
    unsubscribe SERVICE       retire SERVICE for good: the node forgets it and what it kept for it
    observe COUNT TEXT        a passing observer: join, announce, take COUNT notices, leave
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import struct
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

SOURCE = "/interop/python-tcp"
FORMAT = JSONFormat()
PROTO = 2
HELLO, AUTH, STATE, PING, DELIVER, ACK, RELEASE, REPLY = 1, 2, 3, 4, 5, 6, 7, 8
SUBSCRIBE, SUBSCRIBED, UNSUBSCRIBE, RPC, RPC_RESULT, BYE, ERROR = 9, 10, 11, 12, 13, 14, 15
MAX_FRAME = 65_536 + 1_048_576  # the node's max_message_size (1 MiB) + 64 KiB
DEADLINE = 30.0


def registry_nodes(namespace: str) -> list[tuple[str, int]]:
    """Addresses of the live nodes of ``namespace`` on this host."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "pycomms" if runtime else Path(tempfile.gettempdir()) / f"pycomms-{os.getuid()}"
    found = []
    for path in sorted((base / namespace / "nodes").glob("*.json")):
        entry = json.loads(path.read_text())
        try:
            os.kill(int(entry["pid"]), 0)  # a file whose pid is gone is stale
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        found.append((str(entry["host"]), int(entry["port"])))
    return found


class Peer:
    """One link to one PyComms node."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.id = f"py-{secrets.token_hex(8)}"
        # The services the node runs now: service -> (event types, command and request types).
        self.services: dict[str, tuple[set[str], set[str]]] = {}
        self.acks: dict[int, asyncio.Future[None]] = {}
        self.sent: dict[int, tuple[str, bytes]] = {}
        self.subscribed: dict[str, asyncio.Future[None]] = {}
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.deliveries: asyncio.Queue[tuple[int, int, str, bytes]] = asyncio.Queue()
        self.seq = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.failure: ConnectionError | None = None

    # frames ------------------------------------------------------------------------

    def send(self, kind: int, payload: bytes = b"") -> None:
        self.writer.write(struct.pack(">IB", len(payload) + 1, kind) + payload)

    def send_json(self, kind: int, body: dict[str, Any]) -> None:
        self.send(kind, json.dumps(body).encode())

    async def read(self) -> tuple[int, bytes]:
        length, kind = struct.unpack(">IB", await self.reader.readexactly(5))
        if not 1 <= length <= MAX_FRAME:
            raise ConnectionError(f"frame length {length} is out of bounds")
        return kind, await self.reader.readexactly(length - 1)

    # the handshake (no secret: every mac is "") -------------------------------------

    async def connect(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        nonce = secrets.token_hex(16)
        self.send_json(HELLO, {"proto": PROTO, "namespace": self.namespace, "id": self.id, "nonce": nonce, "mac": ""})
        kind, payload = await self.read()
        body = json.loads(payload)
        if kind != HELLO:
            raise ConnectionError(f"refused: {body.get('error')}")
        if body.get("mac"):
            raise ConnectionError("the node requires a secret")
        self.send_json(AUTH, {"mac": ""})
        self.send_json(STATE, {})  # minimal: no address (never dialled), no services, no peers
        kind, payload = await self.read()
        if kind != STATE:
            raise ConnectionError(f"expected STATE, got frame {kind}: {payload[:200]!r}")
        state = json.loads(payload)
        for service, (events, commands) in state.get("live", {}).items():
            self.services[service] = (set(events), set(commands))
        self.tasks = [asyncio.create_task(self.read_loop()), asyncio.create_task(self.ping_loop())]

    async def read_loop(self) -> None:
        try:
            await self._read_frames()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            # The link is gone: fail every wait at once rather than at its deadline.
            failure = ConnectionError(f"link to the node lost: {exc}")
            for waiting in [*self.acks.values(), *self.subscribed.values()]:
                if not waiting.done():
                    waiting.set_exception(failure)
            self.failure = failure

    async def _read_frames(self) -> None:
        while True:
            kind, payload = await self.read()
            if kind == ACK:
                for (seq,) in struct.iter_unpack(">Q", payload):
                    self.sent.pop(seq, None)
                    if (done := self.acks.pop(seq, None)) is not None and not done.done():
                        done.set_result(None)
            elif kind == RELEASE:  # the instance gave it back: again if the node still runs the service
                for seq, attempt in struct.iter_unpack(">QI", payload):
                    service, data = self.sent[seq]
                    if service in self.services:
                        self.send(DELIVER, deliver_payload(seq, attempt, service, data))
                    elif (done := self.acks.pop(seq, None)) is not None and not done.done():
                        done.set_exception(ConnectionError(f"{service} has no live instance on the node"))
            elif kind == REPLY:
                self.replies.put_nowait(payload)
            elif kind == DELIVER:
                seq, attempt, n = struct.unpack(">QIH", payload[:14])
                self.deliveries.put_nowait((seq, attempt, payload[14 : 14 + n].decode(), payload[14 + n :]))
            elif kind == SUBSCRIBED:
                token = json.loads(payload)["token"]
                if (done := self.subscribed.pop(token, None)) is not None:
                    done.set_result(None)
            elif kind == SUBSCRIBE:  # the node started an instance of a service
                body = json.loads(payload)
                if not body.get("ephemeral"):
                    self.services[body["service"]] = (set(body["events"]), set(body["commands"]))
                self.send_json(SUBSCRIBED, {"token": body["token"]})
            elif kind == UNSUBSCRIBE:
                self.services.pop(json.loads(payload)["service"], None)
            elif kind == RPC:  # dead-letter calls go to every peer: this client holds none
                body = json.loads(payload)
                self.send_json(
                    RPC_RESULT, {"id": body["id"], "ok": True, "result": [] if body["op"] == "dead_letters" else 0}
                )
            elif kind in (BYE, ERROR):
                raise ConnectionError(f"the node closed the link: frame {kind} {payload[:200]!r}")
            # PING; HANDOFF and DEAD_HANDOFF are never sent to a node that does not listen

    async def ping_loop(self) -> None:
        while True:  # the node cuts a link silent for 3 heartbeats (3 s by default)
            await asyncio.sleep(0.5)
            self.send(PING)

    async def close(self) -> None:
        self.send(BYE)
        await self.writer.drain()
        for task in self.tasks:
            task.cancel()
        self.writer.close()
        await asyncio.gather(*self.tasks, self.writer.wait_closed(), return_exceptions=True)

    # sending -----------------------------------------------------------------------

    def deliver(self, service: str, data: bytes) -> asyncio.Future[None]:
        self.seq += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks[self.seq], self.sent[self.seq] = done, (service, data)
        self.send(DELIVER, deliver_payload(self.seq, 1, service, data))
        return done

    def route(self, type_: str, kind: str) -> list[str]:
        """An event: every service handling its type; a command or request: the first
        by name of the services handling it; among the services the node runs now
        (this client has no spool to keep a message for a service that is down)."""
        if kind == "event":
            return sorted(s for s, (events, _) in self.services.items() if type_ in events)
        return sorted(s for s, (_, commands) in self.services.items() if type_ in commands)[:1]

    async def publish(self, type_: str, kind: str, data: bytes) -> int:
        services = self.route(type_, kind)
        if kind != "event" and not services:
            raise SystemExit(f"no service handles {type_}")
        await asyncio.wait_for(asyncio.gather(*(self.deliver(s, data) for s in services)), DEADLINE)
        return len(services)

    async def run_service(self, service: str, count: int, *, ephemeral: bool, then: Any = None) -> None:
        token = secrets.token_hex(8)
        self.subscribed[token] = asyncio.get_running_loop().create_future()
        body = {"token": token, "service": service, "events": ["interop.notice"], "commands": []}
        self.send_json(SUBSCRIBE, {**body, "ephemeral": ephemeral})
        await asyncio.wait_for(self.subscribed[token], DEADLINE)
        if then is not None:
            await then()
        for _ in range(count):
            seq, attempt, _service, data = await asyncio.wait_for(self.deliveries.get(), DEADLINE)
            event = FORMAT.read(CloudEvent, data)
            kind = event.get_extension("kind")
            print(json.dumps({"type": event.get_type(), "kind": kind, "attempt": attempt, "data": event.get_data()}))
            self.send(ACK, struct.pack(">Q", seq))  # after handling it: settled
        self.send_json(UNSUBSCRIBE, {"service": service})


def deliver_payload(seq: int, attempt: int, service: str, data: bytes) -> bytes:
    name = service.encode()
    return struct.pack(">QIH", seq, attempt, len(name)) + name + data


def new_event(type_: str, kind: str, data: dict[str, Any], **extensions: str) -> CloudEvent:
    attributes = {"id": uuid.uuid4().hex, "source": SOURCE, "type": type_, "time": datetime.now(UTC)}
    attributes |= {"datacontenttype": "application/json", "kind": kind, **extensions}
    return CloudEvent(attributes=attributes, data=data)


async def emit(peer: Peer, event: CloudEvent) -> int:
    return await peer.publish(event.get_type(), str(event.get_extension("kind")), FORMAT.write(event))


async def request(peer: Peer, sku: str, qty: int) -> dict[str, Any]:
    ask = new_event("interop.get_quote", "request", {"sku": sku, "qty": qty}, replyto=peer.id)
    await emit(peer, ask)
    while True:
        reply = FORMAT.read(CloudEvent, await asyncio.wait_for(peer.replies.get(), DEADLINE))
        if reply.get_extension("causationid") == ask.get_id():
            kind, error = reply.get_extension("kind"), reply.get_extension("pycommserror")
            return {"type": reply.get_type(), "kind": kind, "data": reply.get_data(), "pycommserror": error}


async def bad(peer: Peer) -> None:
    await emit(peer, new_event("interop.order_placed", "event", {"order_id": "not a number", "total": 1.0}))
    hand_written = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": SOURCE,
        "type": "interop.order_placed",
        "kind": "event",
        "time": 1721400000.25,  # not RFC 3339: the worker dead-letters it as malformed
        "data": {"order_id": 1, "total": 1.0},
    }
    await peer.publish("interop.order_placed", "event", json.dumps(hand_written).encode())


async def main(command: str, *args: str) -> None:
    parts = urlsplit(os.environ["INTEROP_URL"])
    namespace = os.environ["INTEROP_NAMESPACE"]
    peer = Peer(namespace)
    if parts.hostname:
        await peer.connect(parts.hostname, parts.port or 0)
    else:
        nodes = registry_nodes(namespace)
        if not nodes:
            raise SystemExit(f"no live node of namespace {namespace!r} in the same-host registry")
        await peer.connect(*nodes[0])  # one link is enough: this client sends to the nodes it can reach
    try:
        if command == "publish":  # all sent at once, then every ACK awaited
            events = [
                new_event("interop.order_placed", "event", {"order_id": n, "total": n + 0.5})
                for n in range(int(args[0]))
            ]
            await asyncio.gather(*(emit(peer, event) for event in events))
            print(json.dumps({"published": int(args[0])}))
        elif command == "send":
            await emit(peer, new_event("interop.ship", "command", {"order_id": int(args[0]), "carrier": args[1]}))
            print(json.dumps({"sent": 1}))
        elif command == "request":
            print(json.dumps(await request(peer, args[0], int(args[1]))))
        elif command == "bad":
            await bad(peer)
            print(json.dumps({"bad": 2}))
        elif command == "announce":
            await emit(peer, new_event("interop.announce", "command", {"count": int(args[0]), "text": args[1]}))
            print(json.dumps({"sent": 1}))
        elif command == "subscribe":
            await peer.run_service(args[0], 0, ephemeral=False)
            print(json.dumps({"subscribed": args[0]}))
        elif command == "consume":
            await peer.run_service(args[0], int(args[1]), ephemeral=False)
        elif command == "unsubscribe":
            peer.send_json(UNSUBSCRIBE, {"service": args[0], "forget": True})
            print(json.dumps({"unsubscribed": args[0]}))
        elif command == "observe":

            async def announce() -> None:
                await emit(peer, new_event("interop.announce", "command", {"count": int(args[0]), "text": args[1]}))

            await peer.run_service(f"observer-{peer.id}", int(args[0]), ephemeral=True, then=announce)
        else:
            raise SystemExit(f"unknown command {command!r}; see the top of this file")
    finally:
        await peer.close()


if __name__ == "__main__":
    if len(sys.argv) < 2 or "INTEROP_URL" not in os.environ or "INTEROP_NAMESPACE" not in os.environ:
        raise SystemExit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
