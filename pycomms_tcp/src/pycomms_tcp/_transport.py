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
import itertools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from pycomms import ConfigError, ConnectError, PublishError, PyCommsError
from pycomms.spi import BackendConfig, Capabilities, DeadLetter, Envelope, NodeInfo, ReplySink, Subscription

from ._connection import FRAME_OVERHEAD, SELF_LINK, Connection, HandshakeError, Link
from ._errors import map_connect_errors, map_errors
from ._frames import (
    Frame,
    ProtocolError,
    dead_handoff_payload,
    frame,
    handoff_payload,
    json_frame,
    parse_dead_handoff,
    parse_deliver,
    parse_handoff,
    parse_json,
    parse_releases,
    parse_seqs,
    releases_payload,
)
from ._membership import Catalog, Peer, Routes, Target
from ._options import TcpOptions
from ._outbox import Outbox
from ._receiver import Item, TcpReceiver
from ._registry import Registry
from ._spool import Spool

if TYPE_CHECKING:
    from ._mdns import Mdns

log = logging.getLogger("pycomms.tcp")
T = TypeVar("T")

CAPABILITIES = Capabilities(
    retention=True, persistent=False, delayed_delivery=True, ordering=True, presence=True, cross_process=True
)
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 5.0
FRAME_DEADLINE = 30.0
"""A frame begun must be complete within this many seconds (slow-trickle peers are cut off)."""
SUBSCRIBE_TIMEOUT = 3.0
RPC_TIMEOUT = 5.0
RPC_PAGE = 1000
"""Most dead letters one RPC answer carries (and at most half a frame of them)."""
CLOSE_TIMEOUT = 2.0
MAX_HANDSHAKING_PER_ADDRESS = 16
MAX_LINKS_PER_ADDRESS = 1024
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
        self.node_id = ""
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
        self._waits: dict[int, tuple[Connection, asyncio.Future[Any]]] = {}
        self._wait_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._registry: Registry | None = None
        self._spool = Spool(options.spool_path, options.spool_max_messages, options.spool_max_bytes)
        self._outbox = Outbox(
            self._spool, self._routes, self._catalog, self._receivers, self._conns, self._spawn, options.window
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
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._server_ssl else None,
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
        """Find the other nodes: registry directory, then seeds; wait for those links."""
        options = self._options
        dials: list[Coroutine[Any, Any, Connection | None]] = []
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
                dials += [self._dial(h, p, expect=i) for i, h, p in registry.peers(self.node_id)]
        seeds = [seed for seed in options.seeds if seed != self._addr]
        dials += [self._dial(h, p) for h, p in seeds]
        results = await asyncio.gather(*dials, return_exceptions=True)
        for result in results[len(results) - len(seeds) :]:
            if isinstance(result, HandshakeError):
                raise ConnectError(f"a seed refused this node: {result}") from result
            if isinstance(result, BaseException):
                log.warning("seed not reachable (will retry): %s", result)
        if options.mdns:
            from ._mdns import Mdns  # zeroconf is imported only when mDNS is on

            self._mdns = Mdns(self)
            await self._mdns.start(self._addr)

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
        for receiver in list(self._receivers.values()):
            receiver.release_all()
        if self._registry is not None:
            self._registry.withdraw(self.node_id)
        if unacked := await self._outbox.settled(CLOSE_TIMEOUT):
            log.info("closing with %d message(s) delivered to peers and not yet acknowledged", unacked)
        if self._spool.path == ":memory:":
            await self._handoff()  # while heartbeats still run
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._mdns is not None:
            await self._mdns.stop()
        bye = frame(Frame.BYE)
        for conn in list(self._conns):
            if conn.state is Link.OPEN:
                conn.send(bye)
            conn.close()
        pending = [c.lost for c in self._conns if not c.lost.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
            if late:
                for conn in list(self._conns):
                    conn.abort()
                await asyncio.wait(late, timeout=CLOSE_TIMEOUT)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for _, future in self._waits.values():
            if not future.done():
                future.cancel()
        self._waits.clear()
        self._outbox.flights.clear()
        self._spool.close()

    async def _handoff(self) -> None:
        """Give the in-memory spool and dead letters to a peer before leaving, so that
        retention and dead letters do not depend on this process staying up."""
        link = next((p.link for p in self._peers.values() if p.link is not None), None)
        if link is not None:
            messages = {
                row: frame(Frame.HANDOFF, handoff_payload(token, attempt, service, key, data))
                for token, (row, service, data, attempt, key) in self._tokens(self._outbox.handover())
            }
            letters = {
                seq: frame(Frame.DEAD_HANDOFF, dead_handoff_payload(token, letter))
                for token, (seq, letter) in self._tokens(self._spool.all_dead())
                if len(letter) + 64 < self.max_frame  # a letter of a message near the size limit stays
            }
            handed = await self._hand_over(link, messages | {-seq: data for seq, data in letters.items()})
            with map_errors("removing handed-over messages from the spool"):
                self._spool.delete(k for k in handed if k > 0)
                self._spool.delete_dead(-k for k in handed if k < 0)
            if handed:
                log.info(
                    "handed %d spooled message(s) and %d dead letter(s) over to node %s",
                    sum(k > 0 for k in handed),
                    sum(k < 0 for k in handed),
                    link.peer_id,
                )
        if dead := len(self._spool.all_dead()):
            log.warning("closing with %d dead letter(s) kept in memory and no peer to take them; they are lost", dead)
        if unsent := self._outbox.unsent():
            log.warning(
                "closing with %d message(s) in the in-memory spool for services with no live instance "
                "and no peer to take them; they are lost (use spool=DIR to keep them across restarts)",
                unsent,
            )

    def _tokens(self, items: list[Any]) -> list[tuple[int, Any]]:
        return [(next(self._wait_ids), item) for item in items]

    async def _hand_over(self, link: Connection, frames: dict[int, bytes]) -> list[int]:
        """Send frames whose first 8 payload bytes are a wait token; return the keys of
        those the peer confirmed (HANDED) in time."""
        loop = asyncio.get_running_loop()
        futures: dict[asyncio.Future[Any], int] = {}
        for key, data in frames.items():
            token = int.from_bytes(data[5:13], "big")
            future: asyncio.Future[Any] = loop.create_future()
            self._waits[token] = (link, future)
            futures[future] = key
            link.send(data)
        if not futures:
            return []
        done, _ = await asyncio.wait(futures, timeout=CLOSE_TIMEOUT)
        return [futures[f] for f in done if not f.cancelled() and f.exception() is None]

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
            with map_connect_errors(f"connecting to {host}:{port}"):
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    try:
                        _, conn = await asyncio.get_running_loop().create_connection(
                            lambda: Connection(self, dialer=True),
                            host,
                            port,
                            ssl=self._client_ssl,
                            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._client_ssl else None,
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
        except (PyCommsError, HandshakeError) as exc:
            log.debug("dialling %s:%d failed: %s", host, port, exc)

    def _accept(self, conn: Connection) -> bool:
        """Called when a link is made; False closes it at once."""
        if self._state is not State.OPEN:
            return False
        if not conn.dialer:
            ip = conn.remote.rpartition(":")[0]
            same = [c for c in self._conns if c.remote.rpartition(":")[0] == ip]
            handshaking = sum(c.state is not Link.OPEN for c in same)
            if len(same) >= MAX_LINKS_PER_ADDRESS or handshaking >= MAX_HANDSHAKING_PER_ADDRESS:
                log.warning("refusing a link from %s: too many links from that address", ip)
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
        for wait_id, (wait_conn, future) in list(self._waits.items()):
            if wait_conn is conn:
                del self._waits[wait_id]
                if not future.done():
                    future.set_exception(ConnectionError("link lost"))
                    future.exception()

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
                    if now - conn.opened_at > HANDSHAKE_TIMEOUT:
                        log.warning("%s did not finish the handshake in %ss", conn.remote, HANDSHAKE_TIMEOUT)
                        conn.abort()
                elif now - conn.last_rx > dead_after:
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
            self._resolve(conn, parse_json(payload).get("token"), None)
        elif kind == Frame.UNSUBSCRIBE:
            gone = parse_json(payload).get("service")
            if conn.peer is not None and isinstance(gone, str):
                conn.peer.live.discard(gone)
                conn.peer.observing.pop(gone, None)
                self._routes.changed()
        elif kind == Frame.RPC:
            self._on_rpc(conn, parse_json(payload))
        elif kind == Frame.RPC_RESULT:
            body = parse_json(payload)
            self._resolve(conn, body.get("id"), body)
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
            self._resolve(conn, parse_json(payload).get("token"), None)
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
            if ephemeral:
                conn.peer.observing[service] = events
            self._routes.changed()
        if ephemeral:  # an observer: routed to while it runs, never in the catalog, nothing kept for it
            conn.send(json_frame(Frame.SUBSCRIBED, {"token": token}))
            return
        if self._catalog.learn(service, events, commands, replace=True):
            self._outbox.catalog_changed()
        conn.send(json_frame(Frame.SUBSCRIBED, {"token": token}))
        self._outbox.schedule_drain(service)

    def _forget(self, futures: dict[asyncio.Future[Any], int]) -> None:
        """Stop waiting for answers (timed out or cancelled); consume their outcome."""
        for future, wait_id in futures.items():
            self._waits.pop(wait_id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()

    def _resolve(self, conn: Connection, wait_id: Any, value: Any) -> None:
        if not isinstance(wait_id, int):
            return
        entry = self._waits.pop(wait_id, None)
        if entry is not None and entry[0] is conn and not entry[1].done():
            entry[1].set_result(value)

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
            wait_id = next(self._wait_ids)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waits[wait_id] = (conn, future)
            conn.send(json_frame(Frame.SUBSCRIBE, {**body, "token": wait_id}))
            futures[future] = wait_id
        try:
            if futures:
                # wait until every peer knows, so a publish right after connect() is routed here
                await asyncio.wait(futures, timeout=SUBSCRIBE_TIMEOUT)
        finally:
            self._forget(futures)
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

    async def _rpc(self, peer: Peer, body: dict[str, Any]) -> Any:
        """Ask one peer; its ``result``. Raises `PyCommsError` if it fails, has no link or
        does not answer in `RPC_TIMEOUT` seconds."""
        op = body.get("op")
        conn = peer.link
        if conn is None:
            raise PyCommsError(f"node {peer.id} has no open link for {op}")
        wait_id = next(self._wait_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waits[wait_id] = (conn, future)
        conn.send(json_frame(Frame.RPC, {**body, "id": wait_id}))
        try:
            async with asyncio.timeout(RPC_TIMEOUT):
                answer = await future
        except TimeoutError:
            raise PyCommsError(f"node {peer.id} did not answer {op} in {RPC_TIMEOUT}s") from None
        except ConnectionError:
            raise PyCommsError(f"node {peer.id} left while answering {op}") from None
        finally:
            self._forget({future: wait_id})
        if not answer.get("ok"):
            raise PyCommsError(f"node {peer.id} failed {op}: {answer.get('error')}")
        return answer.get("result")

    async def _on_every_peer(self, ask: Callable[[Peer], Awaitable[T]], what: str) -> list[T]:
        """``ask`` every peer at once; all the answers, or `PyCommsError` naming the
        nodes that failed (a partial answer must not look complete)."""
        peers = [peer for peer in self._peers.values() if peer.link is not None]
        results = await asyncio.gather(*(ask(peer) for peer in peers), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for result in failed:
            if not isinstance(result, PyCommsError):
                raise result
        if failed:
            raise PyCommsError(f"{what}: {len(failed)} node(s) did not answer: " + "; ".join(map(str, failed)))
        return [r for r in results if not isinstance(r, BaseException)]

    def _on_rpc(self, conn: Connection, body: dict[str, Any]) -> None:
        op, service, wait_id = str(body.get("op")), body.get("service"), body.get("id")
        ids = body.get("ids")
        try:
            if not isinstance(service, str) or (ids is not None and not isinstance(ids, list)):
                raise ValueError("bad arguments")
            if op == "dead_letters":
                result: Any = self._letters_page(service, int(body.get("limit", 100)), int(body.get("offset", 0)))
            elif op == "replay":
                result = self._outbox.replay(service, ids)
            elif op == "purge":
                result = len(self._spool.take_dead(service, ids))
            else:
                raise ValueError(f"unknown operation {op!r}")
            answer = {"id": wait_id, "ok": True, "result": result}
        except Exception as exc:
            answer = {"id": wait_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        conn.send(json_frame(Frame.RPC_RESULT, answer))

    def _letters_page(self, service: str, limit: int, offset: int) -> list[str]:
        """Dead letters from ``offset`` on, as many as fit in half a frame (the asker
        pages on until it gets an empty page); a letter too large for that is skipped."""
        budget, size, page = self.max_frame // 2, 0, []
        for letter in self._spool.dead(service, max(0, min(limit, RPC_PAGE)), max(0, offset)):
            raw = letter.to_json().decode()
            if len(raw) > budget:
                log.warning(
                    "dead letter %s of %s is too large to list remotely; list it on this node", letter.id, service
                )
                page.append("")  # keeps the asker's offset right
                continue
            if size + len(raw) > budget:
                break
            page.append(raw)
            size += len(raw)
        return page

    async def _letters_of(self, peer: Peer, service: str, limit: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        offset = 0
        while len(letters) < limit:
            page = await self._rpc(peer, {"op": "dead_letters", "service": service, "limit": limit, "offset": offset})
            if not page:
                break
            offset += len(page)
            letters += [DeadLetter.from_json(item) for item in page if item]
        return letters

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        with map_errors("reading dead letters"):
            letters = self._spool.dead(service, limit)
        for theirs in await self._on_every_peer(lambda p: self._letters_of(p, service, limit), "listing dead letters"):
            letters += theirs
        letters.sort(key=lambda letter: (letter.failed_at, letter.id))
        return letters[:limit]

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else list(ids)
        with map_errors("replaying dead letters"):
            count = self._outbox.replay(service, wanted)
        body = {"op": "replay", "service": service, "ids": wanted}
        answers = await self._on_every_peer(lambda p: self._rpc(p, body), "replaying dead letters")
        await self._outbox.drain_links()
        return count + sum(int(a or 0) for a in answers)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else list(ids)
        with map_errors("purging dead letters"):
            count = len(self._spool.take_dead(service, wanted))
        body = {"op": "purge", "service": service, "ids": wanted}
        answers = await self._on_every_peer(lambda p: self._rpc(p, body), "purging dead letters")
        return count + sum(int(a or 0) for a in answers)


def build(config: BackendConfig, options: TcpOptions) -> TcpTransport:
    if options.mdns:
        try:
            import zeroconf  # noqa: F401
        except ImportError as exc:  # pragma: no cover - zeroconf is a dependency
            raise ConfigError("tcp:// option mdns=true needs the zeroconf package") from exc
    return TcpTransport(config, options)
