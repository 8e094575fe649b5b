"""``tcp://``: the brokerless transport. Every node listens, dials the nodes it
discovers, and moves messages straight to the instance that will handle them.

Delivery: the sender keeps each message (a *flight*) until the receiving node acks
it, which it does after the handler settled (ack or dead letter). A message whose
link dies unacked, or that the receiver releases on close, goes to another instance
or, when none is live, to the sender's spool. See docs/tcp-protocol.md.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import ssl
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pycomms import ConfigError, ConnectError, OperationError, PublishError, PyCommsError
from pycomms.spi import BackendConfig, Capabilities, DeadLetter, Envelope, NodeInfo, ReplySink, Subscription

from . import _join as join
from ._admission import admit
from ._connection import FRAME_OVERHEAD, SELF_LINK, Connection, HandshakeError, Link
from ._deadletters import DeadLetters
from ._errors import map_connect_errors, map_errors, map_operation_errors
from ._frames import (
    Frame,
    ProtocolError,
    frame,
    json_frame,
    parse_dead_handoff,
    parse_deliver,
    parse_handoff,
    parse_json,
    parse_releases,
    parse_seqs,
    releases_payload,
)
from ._handoff import count_unsent, hand_over
from ._membership import Catalog, Peer, Routes, Target
from ._options import TcpOptions
from ._outbox import Outbox
from ._receiver import Item, TcpReceiver
from ._registry import Registry
from ._spool import Spool
from ._waits import Waits

if TYPE_CHECKING:
    from ._mdns import Mdns

log = logging.getLogger("pycomms.tcp")

CAPABILITIES = Capabilities(
    retention=True, persistent=False, delayed_delivery=True, ordering=True, presence=True, cross_process=True
)
FRAME_DEADLINE = 30.0
"""A frame begun must be complete within this many seconds (slow-trickle peers are cut off)."""
SUBSCRIBE_TIMEOUT = 3.0
CLOSE_WITHIN = 3.0
"""Seconds `TcpTransport.close` takes at most (waiting for acks, handing the spool over,
saying BYE), well within core's `pycomms.spi.CLOSE_BOUND`."""
RESCAN_EVERY = 5.0
FORGET_AFTER = 600.0
"""Seconds after which a node that left without a BYE is no longer dialled."""


class State(enum.Enum):
    """Lifecycle of a transport: open once, close once (idempotent)."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def _services(raw: Any) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Parse ``{service: [events, commands]}`` from a STATE frame."""
    return {str(s): (frozenset(map(str, ev)), frozenset(map(str, cmd))) for s, (ev, cmd) in raw.items()}


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


class TcpTransport:
    """The `pycomms.spi.Transport` of ``tcp://``."""

    capabilities = CAPABILITIES

    def __init__(self, config: BackendConfig, options: TcpOptions) -> None:
        self._config = config
        self._options = options
        self.namespace = config.namespace
        self.secret = options.secret
        self.max_frame = config.max_message_size + FRAME_OVERHEAD
        self.handshake_timeout = options.connect_timeout
        self.node_id = ""
        self.unsent = 0
        """Set at close: messages accepted and still held in memory only (lost); see `count_unsent`."""
        self._state = State.UNOPENED
        self._node: NodeInfo | None = None
        self._replies: ReplySink | None = None
        self._addr: tuple[str, int] = ("", 0)
        self._local = Target(id="", local=True)
        self._peers: dict[str, Peer] = {}
        self._routes = Routes(self._local)
        self._routes.bind(self._peers)
        self._catalog = Catalog()
        self._receivers: dict[str, TcpReceiver] = {}
        self._subs: dict[str, Subscription] = {}
        self._conns: set[Connection] = set()
        self._dialing: set[str] = set()
        self._known: dict[str, tuple[str, int, float]] = {}
        """Addresses of nodes seen recently, dialled again when their link is lost."""
        self._seed_ids: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waits = Waits()
        self._server: asyncio.Server | None = None
        self._registry: Registry | None = None
        self._spool = Spool(options.spool_path, options.spool_max_messages, options.spool_max_bytes)
        self._outbox = Outbox(
            self._spool, self._routes, self._catalog, self._receivers, self._conns, self._spawn, options.window
        )
        self._outbox.drain_timeout = options.operation_timeout
        self._dead = DeadLetters(
            lambda: self.node_id,
            self._peers,
            self._waits,
            self._spool,
            self._outbox,
            self.max_frame,
            options.operation_timeout,
        )
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._mdns: Mdns | None = None

    def __repr__(self) -> str:
        return f"<TcpTransport {self._config.redacted_url} node={self.node_id or '-'} {self._state.value}>"

    # lifecycle ---------------------------------------------------------------------

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        if self._state is not State.UNOPENED:
            raise PyCommsError(f"tcp transport is already {self._state.value}")
        self._node = node
        self.node_id = self._local.id = node.id
        self._replies = replies
        options = self._options
        loop = asyncio.get_running_loop()
        try:
            with map_connect_errors(f"opening {self._config.redacted_url}"):
                self._spool.open()
                for service, (events, commands) in self._spool.load_catalog().items():
                    self._catalog.learn(service, events, commands, replace=False)
                self._server_ssl, self._client_ssl = self._ssl_contexts()
                self._server = await loop.create_server(
                    lambda: Connection(self, dialer=False),
                    options.host,
                    options.port,
                    ssl=self._server_ssl,
                    ssl_handshake_timeout=self.handshake_timeout if self._server_ssl else None,
                )
                port = self._server.sockets[0].getsockname()[1]
            self._state = State.OPEN
            self._outbox.open = True
            self._addr = (self._advertised_host(), port)
            log.debug("node %s listening on %s:%d", node.id, options.host, port)
            await self._join()
        except BaseException:
            await self.close()
            raise
        self._spawn(self._heartbeat(), "heartbeat")

    def _ssl_contexts(self) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
        options = self._options
        if not options.tls:
            return None, None
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False  # peers are dialled by address; the CA and the handshake identify them
        if options.tls_cert and options.tls_key:
            server.load_cert_chain(options.tls_cert, options.tls_key)
            client.load_cert_chain(options.tls_cert, options.tls_key)
        if options.tls_ca:
            server.load_verify_locations(options.tls_ca)
            server.verify_mode = ssl.CERT_REQUIRED
            client.load_verify_locations(options.tls_ca)
            client.verify_mode = ssl.CERT_REQUIRED
        else:
            client.verify_mode = ssl.CERT_NONE
        return server, client

    def _advertised_host(self) -> str:
        options = self._options
        if options.advertise:
            return options.advertise
        if not _wildcard(options.host):
            return options.host
        # the address of the interface with the default route; connecting a UDP socket sends nothing
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("192.0.2.1", 9))
                return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"

    async def _join(self) -> None:
        """Find the other nodes: registry directory, then seeds (see `_join`)."""
        options = self._options
        if options.discovery == "local":
            registry = Registry(options.registry_dir(self.namespace))
            try:
                host = "127.0.0.1" if _wildcard(options.host) else self._addr[0]
                registry.announce(self.node_id, host, self._addr[1])
                self._registry = registry
            except OSError as exc:
                log.warning("same-host discovery is off: cannot write %s: %s", registry.directory, exc)
            else:
                for service, (events, commands) in registry.catalog().items():
                    self._catalog.learn(service, events, commands, replace=False)
        if not await join.first_round(self):
            self._spawn(join.until_catalog_known(self), "join")
        if options.mdns:
            from ._mdns import Mdns  # zeroconf is imported only when mDNS is on

            self._mdns = Mdns(self)
            await self._mdns.start(self._addr)

    # joining (`join.Joining`) ----------------------------------------------------

    @property
    def catalog_complete(self) -> bool:
        return self._catalog.complete

    def alone(self) -> None:
        if not self._catalog.complete:
            self._catalog.complete = True
            self._outbox.catalog_learned()

    def dial(self, host: str, port: int, expect: str | None = None) -> Coroutine[Any, Any, Connection | None]:
        return self._dial(host, port, expect)

    def targets(self) -> list[join.Target]:
        out: list[join.Target] = []
        if self._registry is not None:
            listed = self._registry.peers(self.node_id)
            out += [(h, p, i, "same-host registry") for i, h, p in listed if i not in self._peers]
        for host, port in self._options.seeds:
            linked = self._seed_ids.get(f"{host}:{port}")
            if (host, port) != self._addr and linked != self.node_id and linked not in self._peers:
                out.append((host, port, None, "seed"))
        return out

    def _check_ready(self, peer: Peer) -> None:
        """The catalog is complete once a linked peer runs every service it declared
        (a peer still starting has not subscribed them all: wait for its SUBSCRIBEs)."""
        if not self._catalog.complete and set(peer.info.services) <= peer.live:
            self.alone()

    async def close(self) -> None:
        if self._state in (State.CLOSING, State.CLOSED):
            return
        self._state = State.CLOSING
        self._outbox.open = False
        self._outbox.wake()
        try:
            await self._shutdown()
        except Exception:
            log.exception("error while closing")
        self._state = State.CLOSED

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_WITHIN

        def left(share: float = 1.0) -> float:
            return max(0.0, deadline - loop.time()) * share

        for receiver in list(self._receivers.values()):
            receiver.release_all()
        if self._registry is not None:
            self._registry.withdraw(self.node_id)
        if unacked := await self._outbox.settled(left(0.4)):
            log.info("closing with %d message(s) delivered to peers and not yet acknowledged", unacked)
        if self._spool.path == ":memory:":  # while heartbeats still run
            link = next((p.link for p in self._peers.values() if p.link is not None), None)
            if link is not None:
                await hand_over(link, self._outbox, self._spool, self._waits, self.max_frame, left(0.5))
        self.unsent = count_unsent(self._outbox, self._spool)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(left(0.3), 0.1))
        if self._mdns is not None:
            try:
                async with asyncio.timeout(left(0.5)):
                    await self._mdns.stop()
            except TimeoutError:
                log.warning("mDNS did not stop in time; leaving it")
        bye = frame(Frame.BYE)
        for conn in list(self._conns):
            if conn.state is Link.OPEN:
                conn.send(bye)
            conn.close()
        if pending := [c.lost for c in self._conns if not c.lost.done()]:
            _, late = await asyncio.wait(pending, timeout=left(0.5))
            if late:
                for conn in list(self._conns):
                    conn.abort()
                await asyncio.wait(late, timeout=max(left(), 0.1))
        if self._server is not None:
            self._server.close()
            try:
                async with asyncio.timeout(max(left(), 0.1)):
                    await self._server.wait_closed()
            except TimeoutError:
                log.warning("the listening socket did not close in time")
        self._waits.cancel_all()
        self._outbox.flights.clear()
        self._spool.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"pycomms.tcp:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s failed: %r", task.get_name(), exc, exc_info=exc)

    # links -------------------------------------------------------------------------

    async def _dial(self, host: str, port: int, expect: str | None = None) -> Connection | None:
        """Connect and handshake; None if already linked or being dialled."""
        key = expect or f"{host}:{port}"
        if (expect is not None and expect in self._peers) or key in self._dialing or self._state is not State.OPEN:
            return None
        self._dialing.add(key)
        conn: Connection | None = None
        try:
            with map_connect_errors(f"connecting to {host}:{port} (connect_timeout={self.handshake_timeout}s)"):
                async with asyncio.timeout(self.handshake_timeout):
                    try:
                        _, conn = await asyncio.get_running_loop().create_connection(
                            lambda: Connection(self, dialer=True),
                            host,
                            port,
                            ssl=self._client_ssl,
                            ssl_handshake_timeout=self.handshake_timeout if self._client_ssl else None,
                        )
                    except ssl.SSLError as exc:
                        raise HandshakeError(f"TLS handshake failed: {exc.reason or exc}") from exc
                    await asyncio.shield(conn.established)
            self._seed_ids[f"{host}:{port}"] = conn.peer_id
            return conn
        except ConnectError as exc:
            if conn is not None:
                conn.abort()
            if conn is not None and conn.established.done() and not conn.established.cancelled():
                refused = conn.established.exception()
                if isinstance(refused, HandshakeError):
                    raise refused from exc
            raise
        except HandshakeError as exc:
            if conn is not None:
                conn.abort()
            if str(exc) == SELF_LINK:
                self._seed_ids[f"{host}:{port}"] = self.node_id  # our own address: never dial it again
                return None
            raise
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        finally:
            self._dialing.discard(key)

    def _dial_soon(self, host: str, port: int, expect: str | None) -> None:
        if self._state is not State.OPEN or (expect is not None and (expect in self._peers or expect in self._dialing)):
            return
        self._spawn(self._dial_quietly(host, port, expect), f"dial {host}:{port}")

    async def _dial_quietly(self, host: str, port: int, expect: str | None) -> None:
        try:
            await self._dial(host, port, expect)
        except HandshakeError as exc:
            join.report(join.refusal(host, port, "found by gossip or mDNS", exc))
        except PyCommsError as exc:
            log.debug("dialling %s:%d failed: %s", host, port, exc)

    def _accept(self, conn: Connection) -> bool:
        """Called when a link is made; False closes it at once."""
        if self._state is not State.OPEN or (not conn.dialer and not admit(conn, self._conns)):
            return False
        self._conns.add(conn)
        return True

    def _state_body(self) -> dict[str, Any]:
        """The STATE frame: who this node is, what it serves, whom it knows."""
        assert self._node is not None
        node = self._node
        return {
            "info": {
                "id": node.id,
                "name": node.name,
                "services": list(node.services),
                "handles": list(node.handles),
                "host": node.host,
                "pid": node.pid,
                "started_at": node.started_at,
            },
            "addr": list(self._addr),
            "live": {
                s: [sorted(sub.events), sorted(sub.commands)]
                for s, sub in self._subs.items()
                if not self._receivers[s].closed and not sub.ephemeral
            },
            "observers": {s: sorted(events) for s, events in self._routes.local_observing.items()},
            "catalog": self._catalog.to_json(),
            "peers": [[p.id, p.addr[0], p.addr[1]] for p in self._peers.values() if p.addr[1]],
        }

    def _established(self, conn: Connection, body: dict[str, Any]) -> None:
        try:
            raw = body["info"]
            info = NodeInfo(
                id=conn.peer_id,
                name=str(raw["name"]),
                services=tuple(map(str, raw.get("services", ()))),
                handles=tuple(map(str, raw.get("handles", ()))),
                host=str(raw.get("host", "")),
                pid=int(raw.get("pid", 0)),
                started_at=float(raw.get("started_at", 0.0)),
            )
            addr = (str(body["addr"][0]), int(body["addr"][1]))
            live = _services(body["live"])
            observing = {str(s): frozenset(map(str, ev)) for s, ev in body.get("observers", {}).items()}
            known = _services(body["catalog"])
            gossip = [(str(i), str(h), int(p)) for i, h, p in body["peers"]]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ProtocolError(f"malformed STATE frame: {exc!r}") from None
        peer = self._peers.get(conn.peer_id)
        if peer is None:
            peer = self._peers[conn.peer_id] = Peer(id=conn.peer_id, info=info, addr=addr)
            log.info("node %s joined (%s, %s:%d)", info.id, info.name, *addr)
        self._known[conn.peer_id] = (addr[0], addr[1], time.monotonic())
        peer.info, peer.addr = info, addr
        peer.conns.append(conn)
        peer.live = set(live) | set(observing)
        peer.observing = observing
        conn.peer = peer
        changed = False
        for service, (events, commands) in live.items():
            changed |= self._catalog.learn(service, events, commands, replace=True)
        for service, (events, commands) in known.items():
            changed |= self._catalog.learn(service, events, commands, replace=False)
        if changed:
            self._outbox.catalog_changed()
        self._routes.changed()
        for service in peer.live:
            self._outbox.schedule_drain(service)
        for node_id, host, port in gossip:
            if node_id != self.node_id and node_id not in self._peers:
                self._dial_soon(host, port, node_id)
        self._check_ready(peer)

    def _connection_lost(self, conn: Connection) -> None:
        self._conns.discard(conn)
        peer = conn.peer
        if peer is not None and conn in peer.conns:
            peer.conns.remove(conn)
            if not peer.conns and self._peers.get(peer.id) is peer:
                del self._peers[peer.id]
                log.info("node %s left (link lost)", peer.id)
        self._routes.changed()
        self._outbox.release_link(conn)
        self._waits.link_lost(conn)

    def _peer_left(self, conn: Connection) -> None:
        peer = conn.peer
        if peer is not None and self._peers.get(peer.id) is peer:
            del self._peers[peer.id]
            self._known.pop(peer.id, None)  # it left on purpose: do not dial it again
            log.info("node %s left", peer.id)
        self._routes.changed()
        for link in list(peer.conns if peer is not None else [conn]):
            self._outbox.release_link(link)
            link.close()

    async def _heartbeat(self) -> None:
        interval = self._options.heartbeat
        dead_after = 3 * interval
        ping = frame(Frame.PING)
        loop = asyncio.get_running_loop()
        next_scan = loop.time() + RESCAN_EVERY
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self._conns):
                if conn.state is not Link.OPEN:
                    continue  # each handshake has its own deadline (a timer in Connection)
                if now - conn.last_rx > dead_after:
                    silent = now - conn.last_rx
                    log.warning("link to node %s is silent for %.1fs; closing it", conn.peer_id, silent)
                    conn.abort()
                elif conn.partial_since is not None and now - conn.partial_since > FRAME_DEADLINE:
                    log.warning("%s sends a frame too slowly; closing the link", conn.remote)
                    conn.abort()
                elif now - conn.last_tx >= interval / 2:
                    conn.send(ping)
            if now >= next_scan:
                next_scan = now + RESCAN_EVERY
                self._rescan()

    def _rescan(self) -> None:
        """Dial registry entries, seeds and recently seen nodes we have no link with
        (late starters, links lost to a partition)."""
        now = time.monotonic()
        for node_id in list(self._known):
            if node_id in self._peers:
                self._known[node_id] = (*self._known[node_id][:2], now)
        if self._registry is not None:
            for node_id, host, port in self._registry.peers(self.node_id):
                if node_id not in self._peers:
                    self._dial_soon(host, port, node_id)
        for node_id, (host, port, seen) in list(self._known.items()):
            if now - seen > FORGET_AFTER:
                del self._known[node_id]
            elif node_id not in self._peers:
                self._dial_soon(host, port, node_id)
        for host, port in self._options.seeds:
            linked = self._seed_ids.get(f"{host}:{port}")
            if linked != self.node_id and linked not in self._peers and (host, port) != self._addr:
                self._dial_soon(host, port, None)

    # frames ------------------------------------------------------------------------

    def _on_frame(self, conn: Connection, kind: int, payload: bytes) -> None:
        if kind == Frame.DELIVER:
            seq, attempt, service, data = parse_deliver(payload)
            receiver = self._receivers.get(service)
            if receiver is None or receiver.closed:
                conn.send(frame(Frame.RELEASE, releases_payload([(seq, attempt)])))
            else:
                receiver.put(Item(data, attempt, conn, seq))
        elif kind == Frame.ACK:
            for seq in parse_seqs(payload):
                flight = self._outbox.flights.get(seq)
                if flight is not None and flight.conn is conn:
                    self._outbox.settle(seq)
        elif kind == Frame.PING:
            pass
        elif kind == Frame.REPLY:
            if self._replies is not None:
                self._replies(payload)
        elif kind == Frame.RELEASE:
            for seq, attempt in parse_releases(payload):
                flight = self._outbox.flights.get(seq)
                if flight is not None and flight.conn is conn:
                    if conn.peer is not None:
                        conn.peer.live.discard(flight.service)
                        self._routes.changed()
                    self._outbox.release(seq, attempt)
        elif kind == Frame.SUBSCRIBE:
            self._on_subscribe(conn, parse_json(payload))
        elif kind == Frame.SUBSCRIBED:
            self._waits.resolve(conn, parse_json(payload).get("token"), None)
        elif kind == Frame.UNSUBSCRIBE:
            gone = parse_json(payload).get("service")
            if conn.peer is not None and isinstance(gone, str):
                conn.peer.live.discard(gone)
                conn.peer.observing.pop(gone, None)
                self._routes.changed()
        elif kind == Frame.RPC:
            self._dead.answer(conn, parse_json(payload))
        elif kind == Frame.RPC_RESULT:
            body = parse_json(payload)
            self._waits.resolve(conn, body.get("id"), body)
        elif kind == Frame.HANDOFF:
            token, attempt, service, key, data = parse_handoff(payload)
            try:
                with map_errors("spooling a handed-over message"):
                    self._outbox.adopt(service, data, attempt, key)
            except PyCommsError as exc:
                log.error("could not take over a message from node %s: %s", conn.peer_id, exc)
            else:
                conn.send(json_frame(Frame.HANDED, {"token": token}))
        elif kind == Frame.DEAD_HANDOFF:
            token, raw = parse_dead_handoff(payload)
            try:
                letter = DeadLetter.from_json(raw)
            except (ValueError, KeyError, TypeError) as exc:
                raise ProtocolError(f"malformed dead letter: {exc!r}") from None
            self.store_dead(letter)
            conn.send(json_frame(Frame.HANDED, {"token": token}))
        elif kind == Frame.HANDED:
            self._waits.resolve(conn, parse_json(payload).get("token"), None)
        elif kind == Frame.BYE:
            self._peer_left(conn)
        elif kind == Frame.ERROR:
            log.warning("node %s reported an error: %s", conn.peer_id, str(parse_json(payload).get("error"))[:200])
            conn.abort()
        else:
            raise ProtocolError(f"frame type {kind} is not allowed after the handshake")

    def _on_subscribe(self, conn: Connection, body: dict[str, Any]) -> None:
        try:
            service, token = str(body["service"]), body["token"]
            events, commands = frozenset(map(str, body["events"])), frozenset(map(str, body["commands"]))
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"malformed SUBSCRIBE frame: {exc!r}") from None
        ephemeral = body.get("ephemeral") is True
        if conn.peer is not None:
            conn.peer.live.add(service)
            if ephemeral:  # an observer: routed to while it runs, never in the catalog, nothing kept for it
                conn.peer.observing[service] = events
            self._routes.changed()
        if not ephemeral and self._catalog.learn(service, events, commands, replace=True):
            self._outbox.catalog_changed()
        conn.send(json_frame(Frame.SUBSCRIBED, {"token": token}))
        if conn.peer is not None:
            self._check_ready(conn.peer)
        if not ephemeral:
            self._outbox.schedule_drain(service)

    def _broadcast(self, data: bytes) -> list[Connection]:
        """Send to every link that has been sent this node's STATE."""
        conns = [c for c in self._conns if c.state.announced and c.peer_id]
        for conn in conns:
            conn.send(data)
        return conns

    # Origin (used by receivers) ----------------------------------------------------

    def done(self, item: Item) -> None:
        if item.conn is None:
            self._outbox.settle(item.seq)
        else:
            item.conn.ack(item.seq)

    def release(self, item: Item, attempt: int) -> None:
        if item.conn is None:
            self._outbox.release(item.seq, attempt)
        elif item.conn.state is not Link.CLOSED:
            item.conn.send(frame(Frame.RELEASE, releases_payload([(item.seq, attempt)])))

    def store_dead(self, letter: DeadLetter) -> None:
        with map_errors("storing a dead letter"):
            self._spool.add_dead(letter)

    def receiver_closed(self, receiver: TcpReceiver) -> None:
        self._routes.local_services.discard(receiver.service)
        self._routes.local_observing.pop(receiver.service, None)
        self._routes.changed()
        self._broadcast(json_frame(Frame.UNSUBSCRIBE, {"service": receiver.service}))

    # Transport SPI -----------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._state is not State.OPEN:
            raise PublishError(f"the tcp transport is {self._state.value}")
        outbox, wait = self._outbox, self._options.window_wait
        sent, blocked_at = outbox.route(envelopes, self._send_reply, block=wait > 0)
        while blocked_at is not None:
            # every live instance of a service holds a full window: wait for room (back-pressure
            # on a publisher outrunning its consumers), then the spool takes what still does not fit
            envelopes = envelopes[blocked_at:]
            room = await outbox.wait_room(wait)
            if self._state is not State.OPEN:
                raise PublishError(f"the tcp transport is {self._state.value}")
            more, blocked_at = outbox.route(envelopes, self._send_reply, block=room)
            sent |= more
        if sent:
            await outbox.drain_links()

    def _send_reply(self, node_id: str, data: bytes) -> None:
        if node_id == self.node_id:
            if self._replies is not None:
                self._replies(data)
            return
        peer = self._peers.get(node_id)
        link = peer.link if peer is not None else None
        if link is None:
            log.debug("dropping a reply to node %s: no link to it", node_id)
            return
        link.send(frame(Frame.REPLY, data))

    async def subscribe(self, subscription: Subscription) -> TcpReceiver:
        if self._state is not State.OPEN:
            raise PyCommsError(f"the tcp transport is {self._state.value}")
        service = subscription.service
        receiver = TcpReceiver(service, self)
        self._receivers[service] = receiver
        self._subs[service] = subscription
        self._routes.local_services.add(service)
        if subscription.ephemeral:  # routed to while it runs; never in the catalog, the registry or a spool
            self._routes.local_observing[service] = subscription.events
        else:
            if self._catalog.learn(service, subscription.events, subscription.commands, replace=True):
                self._outbox.catalog_changed()
            if self._registry is not None:
                self._registry.save_service(service, subscription.events, subscription.commands)
        self._routes.changed()
        body = {
            "service": service,
            "events": sorted(subscription.events),
            "commands": sorted(subscription.commands),
            "ephemeral": subscription.ephemeral,
        }
        futures: dict[asyncio.Future[Any], int] = {}
        for conn in [c for c in self._conns if c.state.announced and c.peer_id]:
            token, future = self._waits.expect(conn)
            conn.send(json_frame(Frame.SUBSCRIBE, {**body, "token": token}))
            futures[future] = token
        try:
            if futures:
                # wait until every peer knows, so a publish right after connect() is routed here
                await asyncio.wait(futures, timeout=SUBSCRIBE_TIMEOUT)
        finally:
            self._waits.forget(futures)
        self._outbox.schedule_drain(service)
        return receiver

    async def nodes(self) -> list[NodeInfo]:
        assert self._node is not None
        now, loop_now = time.time(), asyncio.get_running_loop().time()
        out = [self._node.seen(now)]
        for peer in self._peers.values():
            if peer.link is not None:
                last_rx = max(c.last_rx for c in peer.conns)
                out.append(replace(peer.info, last_seen=now - (loop_now - last_rx)))
        return out

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        return await self._dead.listing(service, limit)

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        return await self._dead.replay(service, ids)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        return await self._dead.purge(service, ids)

    async def drop_namespace(self) -> int:
        if self._state is not State.OPEN:
            raise OperationError(f"tcp: cannot drop namespace {self.namespace!r}: the transport is {self._state.value}")
        with map_operation_errors(f"dropping namespace {self.namespace!r}"):
            removed = self._spool.clear()
            self._catalog.services.clear()
            if self._registry is not None:
                removed += self._registry.drop()
            elif self._options.discovery == "local":
                removed += Registry(self._options.registry_dir(self.namespace)).drop()
        return removed


def build(config: BackendConfig, options: TcpOptions) -> TcpTransport:
    if options.mdns:
        try:
            import zeroconf  # noqa: F401
        except ImportError as exc:  # pragma: no cover - zeroconf is a dependency
            raise ConfigError("tcp:// option mdns=true needs the zeroconf package") from exc
    return TcpTransport(config, options)
