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
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycomms.spi import NodeInfo

if TYPE_CHECKING:
    from ._connection import Connection


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

    @property
    def link(self) -> Connection | None:
        """The link messages go on: the oldest one still open."""
        for conn in self.conns:
            if conn.writable:
                return conn
        return None


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

    def __init__(self, local: Target) -> None:
        self.local = local
        self.local_services: set[str] = set()
        self.local_observing: dict[str, frozenset[str]] = {}
        self._peers: dict[str, Peer] = {}
        self._table: dict[str, list[Target]] | None = None
        self._observers: dict[str, tuple[str, ...]] = {}
        self._turn: collections.Counter[str] = collections.Counter()

    def bind(self, peers: dict[str, Peer]) -> None:
        self._peers = peers

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
        for peer in self._peers.values():
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
        targets = self.instances(service)
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
