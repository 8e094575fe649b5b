"""A node's links: listening, dialling, the events every `Connection` reports
(`LinkEvents`), heartbeats, and finding the other nodes (registry, seeds, gossip,
mDNS) and dialling them again when a link is lost."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from pycomms import ConnectError, PyCommsError
from pycomms.spi import NodeInfo

from . import _join as joining
from ._admission import admit
from ._connection import SELF_LINK, Connection, FrameHandler, HandshakeError, Link, LinkSettings
from ._errors import map_connect_errors
from ._frames import Frame, ProtocolError, frame
from ._registry import Registry
from ._state import parse_state

if TYPE_CHECKING:
    from ._mdns import Mdns
    from ._membership import Catalog, Peers, Routes
    from ._options import TcpOptions
    from ._outbox import Outbox
    from ._receiver import Inboxes
    from ._waits import Waits

log = logging.getLogger("pycomms.tcp")

FRAME_DEADLINE = 30.0
"""A frame begun must be complete within this many seconds (slow-trickle peers are cut off)."""
RESCAN_EVERY = 5.0
FORGET_AFTER = 600.0
"""Seconds after which a node that left without a BYE is no longer dialled."""

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]


class Links:
    """Every link of one node, and how they are made. Implements `LinkEvents` for its
    connections and `joining.Joining` for the first dial rounds."""

    def __init__(
        self,
        settings: LinkSettings,
        options: TcpOptions,
        *,
        peers: Peers,
        catalog: Catalog,
        routes: Routes,
        outbox: Outbox,
        inboxes: Inboxes,
        waits: Waits,
        frames: Mapping[int, FrameHandler],
        spawn: Spawn,
    ) -> None:
        self.settings = settings
        self._options = options
        self._peers = peers
        self._catalog = catalog
        self._routes = routes
        self._outbox = outbox
        self._inboxes = inboxes
        self._waits = waits
        self._frames = frames
        self._spawn = spawn
        self.open = False
        """Links are made and accepted only while the transport is open."""
        self.node: NodeInfo | None = None
        self.addr: tuple[str, int] = ("", 0)
        self.registry: Registry | None = None
        self.conns: set[Connection] = set()
        self.paused: set[Connection] = set()
        """Links whose kernel buffer is full (writers `drain` them)."""
        self._dialing: set[str] = set()
        self._seed_ids: dict[str, str] = {}
        self._server: asyncio.Server | None = None
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._mdns: Mdns | None = None

    # LinkEvents ----------------------------------------------------------------------

    @property
    def frame_handlers(self) -> Mapping[int, FrameHandler]:
        return self._frames

    def link_paused(self, conn: Connection, paused: bool) -> None:
        if paused:
            self.paused.add(conn)
        else:
            self.paused.discard(conn)

    def link_made(self, conn: Connection) -> bool:
        if not self.open or (not conn.dialer and not admit(conn, self.conns)):
            return False
        self.conns.add(conn)
        return True

    def link_state(self) -> dict[str, Any]:
        """Who this node is, what it serves, whom it knows."""
        assert self.node is not None
        node = self.node
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
            "addr": list(self.addr),
            "live": self._inboxes.live(),
            "observers": {s: sorted(events) for s, events in self._routes.local_observing.items()},
            "catalog": self._catalog.to_json(),
            "peers": [[p.id, p.addr[0], p.addr[1]] for p in self._peers.by_id.values() if p.addr[1]],
        }

    def link_open(self, conn: Connection, state: dict[str, Any]) -> None:
        try:
            info, addr, live, observing, known, gossip = parse_state(conn.peer_id, state)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ProtocolError(f"malformed STATE frame: {exc!r}") from None
        peer = self._peers.joined(conn, info, addr)
        peer.live = set(live) | set(observing)
        peer.observing = observing
        changed = False
        for service, (events, commands) in live.items():
            changed |= self._catalog.learn(service, events, commands, replace=True)
        for service, (events, commands) in known.items():
            changed |= self._catalog.learn(service, events, commands, replace=False)
        outbox = self._outbox
        if changed:
            outbox.catalog_changed()
        self._routes.changed()
        for service in peer.live:
            outbox.schedule_drain(service)
        for node_id, host, port in gossip:
            if port and node_id != self.settings.node_id and node_id not in self._peers:
                self.dial_soon(host, port, node_id)
        if peer.started:
            outbox.catalog_known()

    def link_lost(self, conn: Connection) -> None:
        self.conns.discard(conn)
        self.paused.discard(conn)
        self._peers.lost(conn)
        self._routes.changed()
        self._outbox.release_link(conn)
        self._waits.link_lost(conn)

    # listening and dialling ------------------------------------------------------

    async def listen(self, node: NodeInfo) -> None:
        """Accept links on the configured host and port."""
        options = self._options
        self.node = node
        self._server_ssl, self._client_ssl = options.ssl_contexts()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Connection(self, self.settings, dialer=False),
            options.host,
            options.port,
            ssl=self._server_ssl,
            ssl_handshake_timeout=self.settings.handshake_timeout if self._server_ssl else None,
        )
        self.addr = (options.advertised_host(), self._server.sockets[0].getsockname()[1])
        self.open = True

    async def dial(self, host: str, port: int, expect: str | None = None) -> Connection | None:
        """Connect and handshake; None if already linked or being dialled. Raises
        `ConnectError`, or `HandshakeError` when the other side refused this node."""
        key = expect or f"{host}:{port}"
        if (expect is not None and expect in self._peers) or key in self._dialing or not self.open:
            return None
        self._dialing.add(key)
        conn: Connection | None = None
        timeout = self.settings.handshake_timeout
        try:
            with map_connect_errors(f"connecting to {host}:{port} (connect_timeout={timeout}s)"):
                async with asyncio.timeout(timeout):
                    try:
                        _, conn = await asyncio.get_running_loop().create_connection(
                            lambda: Connection(self, self.settings, dialer=True),
                            host,
                            port,
                            ssl=self._client_ssl,
                            ssl_handshake_timeout=timeout if self._client_ssl else None,
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
                self._seed_ids[f"{host}:{port}"] = self.settings.node_id  # our own address: never dial it again
                return None
            raise
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        finally:
            self._dialing.discard(key)

    def dial_soon(self, host: str, port: int, expect: str | None) -> None:
        """Dial in the background (an address learned by gossip, mDNS or a rescan)."""
        if not self.open or (expect is not None and (expect in self._peers or expect in self._dialing)):
            return
        self._spawn(self._dial_quietly(host, port, expect), f"dial {host}:{port}")

    async def _dial_quietly(self, host: str, port: int, expect: str | None) -> None:
        try:
            await self.dial(host, port, expect)
        except HandshakeError as exc:
            joining.report(joining.refusal(host, port, "found by gossip or mDNS", exc))
        except PyCommsError as exc:
            log.debug("dialling %s:%d failed: %s", host, port, exc)

    # joining (`joining.Joining`) ------------------------------------------------------

    async def join(self) -> None:
        """Find the other nodes: registry directory, then seeds (see `_join`), mDNS."""
        if self._options.discovery == "local":
            self.registry = self._announce()
        if not await joining.first_round(self):
            self._spawn(joining.until_catalog_known(self), "join")
        if self._options.mdns:
            from ._mdns import Mdns  # zeroconf is imported only when mDNS is on

            self._mdns = Mdns(self.settings.namespace, self.settings.node_id, found=self.dial_soon)
            await self._mdns.start(self.addr)

    def _announce(self) -> Registry | None:
        """Enter this node in the same-host registry and learn the catalog it keeps."""
        registry = Registry(self._options.registry_dir(self.settings.namespace))
        host = "127.0.0.1" if self._options.listens_everywhere else self.addr[0]
        try:
            registry.announce(self.settings.node_id, host, self.addr[1])
        except OSError as exc:
            log.warning("same-host discovery is off: cannot write %s: %s", registry.directory, exc)
            return None
        for service, (events, commands) in registry.catalog().items():
            self._catalog.learn(service, events, commands, replace=False)
        return registry

    @property
    def catalog_complete(self) -> bool:
        return self._catalog.complete

    def alone(self) -> None:
        self._outbox.catalog_known()

    def targets(self) -> list[joining.Target]:
        me = self.settings.node_id
        out: list[joining.Target] = []
        if self.registry is not None:
            listed = self.registry.peers(me)
            out += [(h, p, i, "same-host registry") for i, h, p in listed if i not in self._peers]
        for host, port in self._options.seeds:
            linked = self._seed_ids.get(f"{host}:{port}")
            if (host, port) != self.addr and linked != me and linked not in self._peers:
                out.append((host, port, None, "seed"))
        return out

    # keeping links up --------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Ping quiet links, cut silent ones and slow-trickling ones, rescan now and then."""
        interval = self._options.heartbeat
        dead_after = 3 * interval
        ping = frame(Frame.PING)
        loop = asyncio.get_running_loop()
        next_scan = loop.time() + RESCAN_EVERY
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self.conns):
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
        me, peers, known = self.settings.node_id, self._peers, self._peers.known
        for node_id in list(known):
            if node_id in peers:
                known[node_id] = (*known[node_id][:2], now)
        if self.registry is not None:
            for node_id, host, port in self.registry.peers(me):
                if node_id not in peers:
                    self.dial_soon(host, port, node_id)
        for node_id, (host, port, seen) in list(known.items()):
            if now - seen > FORGET_AFTER:
                del known[node_id]
            elif node_id not in peers:
                self.dial_soon(host, port, node_id)
        for host, port in self._options.seeds:
            linked = self._seed_ids.get(f"{host}:{port}")
            if linked != me and linked not in peers and (host, port) != self.addr:
                self.dial_soon(host, port, None)

    def announced(self) -> list[Connection]:
        """Links that have been sent this node's STATE (later updates may follow it)."""
        return [c for c in self.conns if c.state.announced and c.peer_id]

    def broadcast(self, data: bytes) -> None:
        for conn in self.announced():
            conn.send(data)

    # closing -----------------------------------------------------------------------

    async def stop_discovery(self, timeout: float) -> None:
        if self._mdns is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._mdns.stop()
            except TimeoutError:
                log.warning("mDNS did not stop in time; leaving it")

    async def close(self, left: Callable[[float], float]) -> None:
        """Say BYE on every open link, close them all and stop listening; ``left(share)``
        is the share of the time left to close that a step may take."""
        self.open = False
        bye = frame(Frame.BYE)
        for conn in list(self.conns):
            if conn.state is Link.OPEN:
                conn.send(bye)
            conn.close()
        if pending := [c.lost for c in self.conns if not c.lost.done()]:
            _, late = await asyncio.wait(pending, timeout=left(0.5))
            if late:
                for conn in list(self.conns):
                    conn.abort()
                await asyncio.wait(late, timeout=max(left(1.0), 0.1))
        if self._server is not None:
            self._server.close()
            try:
                async with asyncio.timeout(max(left(1.0), 0.1)):
                    await self._server.wait_closed()
            except TimeoutError:
                log.warning("the listening socket did not close in time")
