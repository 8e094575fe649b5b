"""The sender's side of delivery: messages out on a link or in a local inbox until
their outcome arrives (*flights*), and the spool for services with no live instance.

A flight ends with an ACK (the receiver handled or dead-lettered the message) or a
RELEASE / a lost link (the message goes to another instance, or back to the spool).
A message that came from the spool stays there until it is acked, so a sender
restart with ``spool=DIR`` loses nothing that was not acked.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from pycomms import PublishError
from pycomms.spi import Envelope

from ._backpressure import drain_links
from ._errors import map_errors, map_publish_errors
from ._flight import Flight
from ._frames import deliver_frame
from ._membership import Catalog, Peer, Peers, Routes
from ._receiver import Inboxes, Item
from ._spool import Spool, SpoolFullError, unknown_event_key, unrouted_key

if TYPE_CHECKING:
    from ._connection import Connection

log = logging.getLogger("pycomms.tcp")
DRAIN_BATCH = 256


class Outbox:
    """Flights and the spool of one node."""

    def __init__(
        self,
        spool: Spool,
        peers: Peers,
        routes: Routes,
        catalog: Catalog,
        inboxes: Inboxes,
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
        window: int,
    ) -> None:
        self._spool = spool
        self._peers = peers
        self._routes = routes
        self._catalog = catalog
        self._inboxes = inboxes
        self._spawn = spawn
        self.flights: dict[int, Flight] = {}
        self._seq = itertools.count(1)
        self._rows_in_flight: set[int] = set()
        self._draining: set[str] = set()
        self._cursor: dict[str, int] = {}
        """Per service, the highest spool row sent; rows above it were never sent."""
        self._window = window
        self._low_water = window - max(1, window // 4)
        self._room: asyncio.Future[None] | None = None
        """Set when room opens in a window; publishers blocked by full windows wait on it."""
        self._idle: asyncio.Future[None] | None = None
        """Set when the last flight ends (a closing node waits for its acks)."""
        self.unheard = 0
        """Events published while no peer was linked and no local service wanted them:
        nobody known could take them (counted as not delivered at close)."""
        self.missed: collections.Counter[str] = collections.Counter()
        """Events not sent to each ephemeral service because its window was full."""
        self.open = False
        self.drain_timeout = 5.0
        """Seconds a publisher waits for a full link to take data (``operation_timeout``)."""

    def route(self, envelopes: Sequence[Envelope], *, block: bool = False) -> tuple[bool, int | None]:
        """Send each envelope (an event, command or request) to its services'
        instances, or spool it.

        Returns whether any went on a link, and, with ``block``, the index of the first
        envelope not routed because every live instance of one of its services holds a
        full window (the caller waits for room, then routes the rest); without
        ``block`` the spool takes such overflow. Raises `PublishError` (spool full:
        nothing of the call is spooled). The caller tries `route_one` first for a single
        envelope (the common case, without this bookkeeping)."""
        catalog, routes, waiting, window = self._catalog, self._routes, self._spool.per_service, self._window
        direct: list[tuple[str, bytes, str | None]] = []
        spooled: list[tuple[str, bytes, int, str | None]] = []
        room: dict[str, int] = {}
        """Per service, messages this call may still send straight to its instances (0
        while messages of the service wait in the spool: new ones queue behind them)."""
        blocked_at: int | None = None
        for index, env in enumerate(envelopes):
            kind = env.kind
            if kind == "event":
                services: Sequence[str] = catalog.event_services.get(env.type, ())
            elif kind in ("command", "request"):
                owner = catalog.command_owner.get(env.type)
                services = (owner,) if owner is not None else ()
            else:
                raise PublishError(f"publish() routes events, commands and requests; got kind {kind!r}")
            for service in services:
                if service not in room:
                    room[service] = 0 if waiting.get(service) else routes.room(service, window)
            if block and any(room[s] <= 0 and not waiting.get(s) and routes.instances(s) for s in services):
                blocked_at = index
                break
            data = env.encode()
            if not services:
                if kind != "event":
                    spooled.append((unrouted_key(env.type), data, 1, env.key))
                elif not catalog.complete:  # who wants it is not known yet: keep it until it is
                    spooled.append((unknown_event_key(env.type), data, 1, env.key))
                elif not self._peers.linked():
                    self.unheard += 1
            if kind == "event" and (observers := routes.observers(env.type)):
                for service in observers:
                    # an observer is never waited for nor spooled for: past its window it misses events
                    left = room.get(service)
                    if left is None:
                        left = routes.room(service, window)
                    if left > 0:
                        room[service] = left - 1
                        direct.append((service, data, env.key))
                    else:
                        self._missed(service)
            for service in services:
                # past the window of unacked messages the spool takes them (bounded: back-pressure)
                if room[service] > 0:
                    room[service] -= 1
                    direct.append((service, data, env.key))
                else:
                    spooled.append((service, data, 1, env.key))
        if spooled:
            with map_publish_errors("spooling"):
                try:
                    self._spool.put_many(spooled)
                except SpoolFullError as exc:
                    raise PublishError(str(exc)) from exc
            for item in spooled:
                if routes.instances(item[0]):
                    self.schedule_drain(item[0])
        for service, data, key in direct:
            if not self.dispatch(service, data, 1, None, key):  # a keyed message whose instance is full
                if service not in catalog.services:  # an observer: nothing is kept for it
                    self._missed(service)
                    continue
                self._spool.put_many([(service, data, 1, key)], force=True)
                self.schedule_drain(service)
        return bool(direct), blocked_at

    def route_one(self, env: Envelope) -> bool:
        """The common case of `route` without its bookkeeping: a message for one
        service with nothing spooled before it, no observer, and an instance with room.
        False when `route` must decide (the transport's publish tries this first)."""
        kind = env.kind
        if kind == "event":
            services = self._catalog.event_services.get(env.type, ())
            if len(services) != 1 or self._routes.observers(env.type):
                return False
            service = services[0]
        elif kind == "command" or kind == "request":
            owner = self._catalog.command_owner.get(env.type)
            if owner is None:
                return False
            service = owner
        else:
            return False
        if self._spool.per_service.get(service):
            return False
        return self.dispatch(service, env.encode(), 1, None, env.key)

    def _missed(self, service: str) -> None:
        missed = self.missed[service] = self.missed[service] + 1
        if missed & (missed - 1) == 0:  # 1, 2, 4, 8, ...: a slow observer does not flood the log
            log.warning(
                "ephemeral service %s is too slow: %d event(s) not sent to it (its window is full)", service, missed
            )

    async def wait_room(self, timeout: float) -> bool:
        """Wait until a flight ends with its instance's load at or below the low-water
        mark (a quarter of the window free); False after ``timeout`` seconds."""
        if self._room is None or self._room.done():
            self._room = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._room)
        except TimeoutError:
            return False
        return True

    async def settled(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every flight's outcome; the number still open."""
        if self.flights:
            self._idle = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._idle
            except TimeoutError:
                pass
            finally:
                self._idle = None
        return len(self.flights)

    def unsent(self) -> int:
        """Spooled messages not out on a link."""
        return self._spool.count - len(self._rows_in_flight)

    def wake(self) -> None:
        """Wake publishers waiting for room (the node is closing)."""
        if self._room is not None and not self._room.done():
            self._room.set_result(None)

    def spooled_not_sent(self) -> list[tuple[int, str, bytes, int, str | None]]:
        """Spooled ``(row, service, data, attempt, key)`` not out on a link (to hand over)."""
        return self._spool.everything(self._rows_in_flight)

    def catalog_changed(self) -> None:
        """Persist the catalog; move spooled commands that now have an owner."""
        for service, (events, commands) in self._catalog.services.items():
            with map_errors("saving the catalog"):
                self._spool.save_service(service, events, commands)
        owners = self._catalog.command_owner
        for key in self._spool.services():
            if key.startswith("?") and (owner := owners.get(key[1:])) is not None:
                self._spool.rekey(key, owner)
                self._cursor[owner] = 0  # the moved rows may sit below the owner's cursor
                self.schedule_drain(owner)

    def forget(self, service: str) -> int | None:
        """Forget ``service`` (a retired durable subscriber): out of the catalog, its
        spooled messages deleted; how many. None, and nothing done, while an instance
        of it runs or if it is unknown."""
        if self._routes.instances(service) or service not in self._catalog.services:
            return None
        self._catalog.forget(service)
        self._cursor.pop(service, None)
        with map_errors(f"forgetting service {service}"):
            return self._spool.forget(service, self._rows_in_flight)

    def catalog_known(self) -> None:
        """The node knows who wants what: it is alone, or a linked peer told it its
        catalog while running every service it declared (see `Peer.started`)."""
        if not self._catalog.complete:
            self._catalog.complete = True
            self.catalog_learned()

    def catalog_learned(self) -> None:
        """Once the catalog is complete: give the events kept while it was not to
        every service that handles their type (those nobody handles end here)."""
        if not self._catalog.complete:
            return
        for key in [k for k in self._spool.services() if k.startswith("!")]:
            services = self._catalog.event_services.get(key[1:], ())
            with map_errors("routing events kept until the catalog was known"):
                count = self._spool.fan_out(key, services)
            if services:
                log.info("%d event(s) of %s kept until the catalog was known go to %s", count, key[1:], services)
            else:
                log.info("%d event(s) of %s kept until the catalog was known: no service handles it", count, key[1:])
            for service in services:
                if self._routes.instances(service):
                    self.schedule_drain(service)

    def dispatch(self, service: str, data: bytes, attempt: int, row: int | None, key: str | None) -> bool:
        """Send one message to a live instance of ``service``; False if there is none."""
        routes, window = self._routes, self._window
        target = routes.choose(service, window) if key is None else routes.choose_keyed(service, key, window)
        if target is None:
            return False
        seq = next(self._seq)
        if target.local:
            self.flights[seq] = Flight(seq, service, data, attempt, row, key, target, None)
            self._inboxes.receivers[service].put(Item(data, attempt, None, seq))
        else:
            assert isinstance(target, Peer)
            conn = target.link
            if conn is None:
                return False
            self.flights[seq] = Flight(seq, service, data, attempt, row, key, target, conn)
            conn.flights.add(seq)
            conn.send(deliver_frame(seq, attempt, service.encode(), data))
        target.load[service] += 1
        if row is not None:
            self._rows_in_flight.add(row)
        return True

    def _unflight(self, seq: int) -> Flight | None:
        flight = self.flights.pop(seq, None)
        if flight is None:
            return None
        load = flight.target.load
        load[flight.service] -= 1
        if self._room is not None and load[flight.service] <= self._low_water:
            self.wake()
        if self._idle is not None and not self.flights and not self._idle.done():
            self._idle.set_result(None)
        if flight.conn is not None:
            flight.conn.flights.discard(seq)
        if flight.row is not None:
            self._rows_in_flight.discard(flight.row)
        return flight

    def settle(self, seq: int) -> None:
        flight = self._unflight(seq)
        if flight is None:
            return
        if flight.row is not None:
            with map_errors("removing a delivered message from the spool"):
                self._spool.delete([flight.row])
        if self._spool.per_service.get(flight.service):
            self.schedule_drain(flight.service)  # room in the window again

    def acked(self, conn: Connection, seqs: list[int]) -> None:
        """ACKs arrived on ``conn``: each ends its flight if it went out on ``conn``."""
        flights = self.flights
        for seq in seqs:
            flight = flights.get(seq)
            if flight is not None and flight.conn is conn:
                self.settle(seq)

    def released(self, conn: Connection, items: list[tuple[int, int]], peer: Peer | None) -> None:
        """``conn``'s node gave messages back (RELEASE): it no longer runs their service."""
        for seq, attempt in items:
            flight = self.flights.get(seq)
            if flight is not None and flight.conn is conn:
                if peer is not None:
                    peer.live.discard(flight.service)
                    self._routes.changed()
                self.release(seq, attempt)

    def release(self, seq: int, attempt: int) -> None:
        flight = self._unflight(seq)
        if flight is None or not self.open:
            return
        if self.dispatch(flight.service, flight.data, attempt, flight.row, flight.key):
            return
        if flight.service not in self._catalog.services and not flight.service.startswith("?"):
            return  # it was for an ephemeral service that is gone: nothing is kept for it
        if flight.row is not None:  # a spooled message stays in the spool until it is acked: send it again later
            self._cursor[flight.service] = min(self._cursor.get(flight.service, 0), flight.row - 1)
            return
        try:
            self._spool.put_many([(flight.service, flight.data, attempt, flight.key)], force=True)
        except Exception:
            log.exception("could not spool a released message for %s", flight.service)

    def keep(self, service: str, data: bytes, attempt: int, key: str | None) -> None:
        """Spool a message accepted earlier (past the bounds: never drop it) and send it
        on when its service has a live instance."""
        self._spool.put_many([(service, data, attempt, key)], force=True)
        if service.startswith("?"):
            self.catalog_changed()
        elif service.startswith("!"):
            self.catalog_learned()
        elif self._routes.instances(service):
            self.schedule_drain(service)

    def schedule_drain(self, service: str) -> None:
        if service in self._draining or not self.open or not self._spool.count:
            return
        self._draining.add(service)
        self._spawn(self._drain(service), f"drain {service}")

    async def _drain(self, service: str) -> None:
        """Send spooled messages of ``service`` to its live instances."""
        try:
            while self.open:
                after = self._cursor.get(service, 0)
                rows = self._spool.waiting(service, after, DRAIN_BATCH, self._rows_in_flight)
                if not rows:
                    return
                for row, data, attempt, key in rows:
                    if not self.dispatch(service, data, attempt, row, key):
                        return
                    self._cursor[service] = row
                await self.drain_links()
                await asyncio.sleep(0)
        finally:
            self._draining.discard(service)

    async def drain_links(self) -> None:
        """Wait while a link to a peer is full (see `drain_links`)."""
        await drain_links(self._peers.paused_links(), self.drain_timeout)

    def release_link(self, conn: Connection) -> None:
        """Give the unacked messages of a dead link to other instances."""
        seqs, conn.flights = conn.flights, set()
        for seq in sorted(seqs):
            flight = self.flights.get(seq)
            if flight is not None:
                self.release(seq, flight.attempt + 1)
