"""Who is out there and who handles what: peers, the service catalog, and the
choice of an instance for a message.

Every node keeps a full view: one `Peer` per node it has an open link with (the
cluster is a full mesh: a node that learns an address by gossip dials it), and a
catalog of every service seen in the cluster with the event and command types it
handles. The catalog outlives the instances: a message for a known service whose
instances are all down is spooled rather than dropped.
"""

from __future__ import annotations

import collections
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycomms.spi import NodeInfo

from ._connection import Link

if TYPE_CHECKING:
    from ._connection import Connection

log = logging.getLogger("pycomms.tcp")


@dataclass(eq=False)
class Target:
    """Somewhere a service instance runs: this node (``local``) or a peer."""

    id: str
    local: bool = False
    load: collections.Counter[str] = field(default_factory=collections.Counter)
    """Unacknowledged messages per service held by this target."""


@dataclass(eq=False)
class Peer(Target):
    """Another node with at least one open link."""

    info: NodeInfo = field(default_factory=lambda: NodeInfo(id="", name=""))
    addr: tuple[str, int] = ("", 0)
    live: set[str] = field(default_factory=set)
    observing: dict[str, frozenset[str]] = field(default_factory=dict)
    """Its ephemeral services and their event types (never in the catalog)."""
    conns: list[Connection] = field(default_factory=list)
    last_seen: float = field(default_factory=time.time)
    said_bye: bool = False
    """It closed, having handed over what it held (a lost link leaves this False)."""

    @property
    def started(self) -> bool:
        """It runs every service it declared (one still starting has not subscribed
        them all: its catalog is not complete before its SUBSCRIBEs)."""
        return set(self.info.services) <= self.live

    @property
    def link(self) -> Connection | None:
        """The link messages go on: the oldest one still open."""
        for conn in self.conns:
            if conn.state is Link.OPEN:  # `Connection.writable`, inline
                return conn
        return None


class Peers:
    """The nodes this node has an open link with, and where recently seen nodes listen."""

    def __init__(self) -> None:
        self.by_id: dict[str, Peer] = {}
        self.known: dict[str, tuple[str, int, float]] = {}
        """Addresses of nodes seen recently, dialled again when their link is lost."""

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.by_id

    def get(self, node_id: str) -> Peer | None:
        return self.by_id.get(node_id)

    def of(self, conn: Connection) -> Peer | None:
        """The peer an open link belongs to."""
        peer = self.by_id.get(conn.peer_id)
        return peer if peer is not None and conn in peer.conns else None

    def linked(self) -> list[Peer]:
        """Peers with a link messages can go on."""
        return [peer for peer in self.by_id.values() if peer.link is not None]

    def paused_links(self) -> list[Connection]:
        """Links whose kernel buffer is full."""
        return [conn for peer in self.by_id.values() for conn in peer.conns if conn.paused]

    def joined(self, conn: Connection, info: NodeInfo, addr: tuple[str, int]) -> Peer:
        """Add the open link ``conn`` to its node's peer (created on its first link)."""
        peer = self.by_id.get(conn.peer_id)
        if peer is None:
            peer = self.by_id[conn.peer_id] = Peer(id=conn.peer_id, info=info, addr=addr)
            log.info("node %s joined (%s, %s:%d)", info.id, info.name, *addr)
        if addr[1]:  # port 0: the node does not listen (a foreign client); never dial it
            self.known[conn.peer_id] = (addr[0], addr[1], time.monotonic())
        peer.info, peer.addr = info, addr
        peer.conns.append(conn)
        return peer

    def lost(self, conn: Connection) -> None:
        """``conn`` closed: its peer goes with its last link."""
        peer = self.of(conn)
        if peer is not None:
            peer.conns.remove(conn)
            if not peer.conns and self.by_id.get(peer.id) is peer:
                del self.by_id[peer.id]
                log.info("node %s left (link lost)", peer.id)

    def left(self, conn: Connection) -> list[Connection]:
        """The node on ``conn`` said BYE: forget it (it is not dialled again); its links."""
        peer = self.of(conn)
        if peer is None:
            return [conn]
        peer.said_bye = True
        if self.by_id.get(peer.id) is peer:
            del self.by_id[peer.id]
            self.known.pop(peer.id, None)
            log.info("node %s left", peer.id)
        return list(peer.conns)


class Catalog:
    """Known services and the routing tables derived from them."""

    def __init__(self) -> None:
        self.services: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self.event_services: dict[str, tuple[str, ...]] = {}
        self.command_owner: dict[str, str] = {}
        self.complete = False
        """The node knows who wants what: it is alone (nobody to learn from), or a
        linked peer told it its catalog with every service of that peer running. Until
        then an event no known service handles is kept, not dropped."""

    def learn(self, service: str, events: frozenset[str], commands: frozenset[str], *, replace: bool) -> bool:
        """Record a service; returns True if anything changed. ``replace`` is for a
        live subscription (authoritative); gossip only adds unknown services."""
        known = self.services.get(service)
        if known == (events, commands) or (known is not None and not replace):
            return False
        self.services[service] = (events, commands)
        self._rebuild()
        return True

    def forget(self, service: str) -> bool:
        """Remove a service (one that will not come back); True if it was known."""
        if self.services.pop(service, None) is None:
            return False
        self._rebuild()
        return True

    def _rebuild(self) -> None:
        events: dict[str, list[str]] = collections.defaultdict(list)
        owners: dict[str, str] = {}
        for service in sorted(self.services):
            ev, cmd = self.services[service]
            for type_name in ev:
                events[type_name].append(service)
            for type_name in cmd:
                owners.setdefault(type_name, service)
        self.event_services = {k: tuple(v) for k, v in events.items()}
        self.command_owner = owners

    def to_json(self) -> dict[str, list[list[str]]]:
        return {s: [sorted(e), sorted(c)] for s, (e, c) in self.services.items()}


class Routes:
    """Live instances per service, rebuilt lazily when membership changes."""

    def __init__(self, local: Target, peers: Peers) -> None:
        self.local = local
        self.local_services: set[str] = set()
        self.local_observing: dict[str, frozenset[str]] = {}
        self._peers = peers
        self._table: dict[str, list[Target]] | None = None
        self._observers: dict[str, tuple[str, ...]] = {}
        self._turn: collections.Counter[str] = collections.Counter()

    def changed(self) -> None:
        self._table = None

    def instances(self, service: str) -> list[Target]:
        table = self._table
        if table is None:
            table = self._rebuild()
        return table.get(service, [])

    def observers(self, type_name: str) -> tuple[str, ...]:
        """The ephemeral services with a live instance that handle event ``type_name``."""
        if self._table is None:
            self._rebuild()
        return self._observers.get(type_name, ())

    def _rebuild(self) -> dict[str, list[Target]]:
        table: dict[str, list[Target]] = collections.defaultdict(list)
        observers: dict[str, set[str]] = collections.defaultdict(set)
        for service_name in self.local_services:
            table[service_name].append(self.local)
        for service_name, types in self.local_observing.items():
            for type_name in types:
                observers[type_name].add(service_name)
        for peer in self._peers.by_id.values():
            if peer.link is None:
                continue
            for service_name in peer.live:
                table[service_name].append(peer)
            for service_name, types in peer.observing.items():
                for type_name in types:
                    observers[type_name].add(service_name)
        self._observers = {t: tuple(sorted(names)) for t, names in observers.items()}
        self._table = dict(table)
        return self._table

    def room(self, service: str, window: int) -> int:
        """How many more messages of ``service`` the live instances can be sent now."""
        return sum(max(0, window - t.load[service]) for t in self.instances(service))

    def choose_keyed(self, service: str, key: str, window: int) -> Target | None:
        """The instance that gets every message with ``key`` while membership is stable
        (None if it has ``window`` messages unacked)."""
        targets = self.instances(service)
        if not targets:
            return None
        ordered = sorted(targets, key=lambda t: t.id)
        target = ordered[zlib.crc32(key.encode()) % len(ordered)]
        return target if target.load[service] < window else None

    def choose(self, service: str, window: int) -> Target | None:
        """The least-loaded live instance of ``service`` (ties go round-robin), or None
        if there is none or every one has ``window`` messages unacked."""
        table = self._table  # `instances`, inline
        targets = (self._rebuild() if table is None else table).get(service, [])
        if not targets:
            return None
        if len(targets) == 1:
            return targets[0] if targets[0].load[service] < window else None
        n = len(targets)
        turn = self._turn[service] = (self._turn[service] + 1) % n
        best = targets[turn]
        best_load = best.load[service]
        for i in range(1, n):
            candidate = targets[(turn + i) % n]
            load = candidate.load[service]
            if load < best_load:
                best, best_load = candidate, load
        return best if best_load < window else None
