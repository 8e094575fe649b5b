"""``tcp://``: the brokerless transport. Every node listens, dials the nodes it
discovers, and moves messages straight to the instance that will handle them.

Delivery: the sender keeps each message (a *flight*) until the receiving node acks
it, which it does after the handler settled (ack or dead letter). A message whose
link dies unacked, or that the receiver releases on close, goes to another instance
or, when none is live, to the sender's spool. See docs/tcp-protocol.md.

This module only puts the parts together and runs the lifecycle:

- `_links`: listening, dialling, heartbeats, discovery; the events of each `Connection`
- `_dispatch`: what each frame kind on an open link does (a table)
- `_outbox`: flights and the spool (sending side); `_receiver`: inboxes (receiving side)
- `_membership`: peers, the catalog and the choice of an instance
- `_deadletters`: the dead-letter calls across nodes; `_handover`: the spool handed over at close
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any

from pycomms import ConfigError, OperationError, PublishError, PyCommsError
from pycomms.spi import BackendConfig, Capabilities, DeadLetter, Envelope, NodeInfo, ReplySink, Subscription

from ._connection import FRAME_OVERHEAD, Link, LinkSettings
from ._deadletters import DeadLetters
from ._dispatch import FrameDispatch
from ._errors import map_connect_errors, map_errors, map_operation_errors
from ._frames import Frame, frame, json_frame, releases_payload
from ._handover import HandOver
from ._links import Links
from ._membership import Catalog, Peers, Routes, Target
from ._options import TcpOptions
from ._outbox import Outbox
from ._receiver import Inboxes, Item, TcpReceiver
from ._registry import Registry
from ._spool import Spool
from ._waits import Waits

log = logging.getLogger("pycomms.tcp")

CAPABILITIES = Capabilities(
    retention=True,
    persistent=False,
    delayed_delivery=True,
    ordering=True,
    presence=True,
    cross_process=True,
    transactional_publish=False,
)
SUBSCRIBE_TIMEOUT = 3.0
CLOSE_WITHIN = 3.0
"""Seconds `TcpTransport.close` takes at most (waiting for acks, handing the spool over,
saying BYE), well within core's `pycomms.spi.CLOSE_BOUND`."""


class State(enum.Enum):
    """Lifecycle of a transport: open once, close once (idempotent)."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class TcpTransport:
    """The `pycomms.spi.Transport` of ``tcp://``."""

    capabilities = CAPABILITIES

    def __init__(self, config: BackendConfig, options: TcpOptions) -> None:
        self._config = config
        self._options = options
        self.namespace = config.namespace
        self.unsent = 0
        """Set at close: messages accepted and still held in memory only (lost); see `HandOver.unsent`."""
        self._state = State.UNOPENED
        self._node: NodeInfo | None = None
        self._replies: ReplySink | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        max_frame = config.max_message_size + FRAME_OVERHEAD
        self._settings = LinkSettings(config.namespace, options.secret, max_frame, options.connect_timeout)
        self._local = Target(id="", local=True)
        self._peers = Peers()
        self._routes = Routes(self._local, self._peers)
        self._catalog = Catalog()
        self._inboxes = Inboxes()
        self._waits = Waits()
        self._spool = Spool(options.spool_path, options.spool_max_messages, options.spool_max_bytes)
        self._outbox = Outbox(
            self._spool, self._peers, self._routes, self._catalog, self._inboxes, self._spawn, options.window
        )
        self._outbox.drain_timeout = options.operation_timeout
        self._dead_letters = DeadLetters(
            lambda: self._settings.node_id,
            self._peers,
            self._waits,
            self._spool,
            self._outbox,
            max_frame,
            options.operation_timeout,
        )
        self._handover = HandOver(self._outbox, self._spool, self._waits, max_frame)
        self._dispatch = FrameDispatch(
            peers=self._peers,
            catalog=self._catalog,
            routes=self._routes,
            outbox=self._outbox,
            inboxes=self._inboxes,
            waits=self._waits,
            dead_letters=self._dead_letters,
            handover=self._handover,
        )
        self._links = Links(
            self._settings,
            options,
            peers=self._peers,
            catalog=self._catalog,
            routes=self._routes,
            outbox=self._outbox,
            inboxes=self._inboxes,
            waits=self._waits,
            frames=self._dispatch.table,
            spawn=self._spawn,
        )

    @property
    def node_id(self) -> str:
        return self._settings.node_id

    @property
    def catalog_complete(self) -> bool:
        """This node knows who wants what (see `Catalog.complete`)."""
        return self._catalog.complete

    def __repr__(self) -> str:
        return f"<TcpTransport {self._config.redacted_url} node={self.node_id or '-'} {self._state.value}>"

    # lifecycle ---------------------------------------------------------------------

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        if self._state is not State.UNOPENED:
            raise PyCommsError(f"tcp transport is already {self._state.value}")
        self._node = node
        self._settings.node_id = self._local.id = node.id
        self._replies = self._dispatch.replies = replies
        options = self._options
        try:
            with map_connect_errors(f"opening {self._config.redacted_url}"):
                self._spool.open()
                for service, (events, commands) in self._spool.load_catalog().items():
                    self._catalog.learn(service, events, commands, replace=False)
                await self._links.listen(node)
            self._state = State.OPEN
            self._outbox.open = True
            log.debug("node %s listening on %s:%d", node.id, options.host, self._links.addr[1])
            await self._links.join()
        except BaseException:
            await self.close()
            raise
        self._spawn(self._links.heartbeat(), "heartbeat")

    async def close(self) -> None:
        if self._state in (State.CLOSING, State.CLOSED):
            return
        self._state = State.CLOSING
        self._links.open = False
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

        self._dead_letters.leaving = True
        self._inboxes.release_all()
        if self._links.registry is not None:
            self._links.registry.withdraw(self.node_id)
        if unacked := await self._outbox.settled(left(0.4)):
            log.info("closing with %d message(s) delivered to peers and not yet acknowledged", unacked)
        # To a peer that listens (port 0: a foreign client, which keeps no spool), while heartbeats still run.
        takers = [peer for peer in self._peers.linked() if peer.addr[1]]
        if self._spool.path == ":memory:" and takers:
            await self._handover.give(takers[0], left(0.5))
        self.unsent = self._handover.unsent()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(left(0.3), 0.1))
        await self._links.stop_discovery(left(0.5))
        await self._links.close(left)
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

    def flush(self) -> None:
        for peer in self._peers.by_id.values():
            for conn in peer.conns:
                conn.flush()

    def receiver_closed(self, receiver: TcpReceiver) -> None:
        self._routes.local_services.discard(receiver.service)
        self._routes.local_observing.pop(receiver.service, None)
        self._routes.changed()
        self._links.broadcast(json_frame(Frame.UNSUBSCRIBE, {"service": receiver.service}))

    # Transport SPI -----------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._state is not State.OPEN:
            raise PublishError(f"the tcp transport is {self._state.value}")
        outbox, wait = self._outbox, self._options.window_wait
        if len(envelopes) == 1 and outbox.route_one(envelopes[0]):  # the common case, without route's bookkeeping
            sent, blocked_at = True, None
        else:
            sent, blocked_at = outbox.route(envelopes, block=wait > 0)
        while blocked_at is not None:
            # every live instance of a service holds a full window: wait for room (back-pressure
            # on a publisher outrunning its consumers), then the spool takes what still does not fit
            envelopes = envelopes[blocked_at:]
            room = await outbox.wait_room(wait)
            if self._state is not State.OPEN:
                raise PublishError(f"the tcp transport is {self._state.value}")
            more, blocked_at = outbox.route(envelopes, block=room)
            sent |= more
        if sent and self._links.paused:
            await outbox.drain_links()

    async def send_reply(self, envelope: Envelope) -> None:
        if self._state is not State.OPEN:
            raise PublishError(f"the tcp transport is {self._state.value}")
        node_id, data = envelope.reply_to or "", envelope.encode()
        if node_id == self._settings.node_id:
            if self._replies is not None:
                self._replies(data)
            return
        peer = self._peers.by_id.get(node_id)
        link = peer.link if peer is not None else None
        if link is None:
            log.debug("dropping a reply to node %s: no link to it", node_id)
            return
        link.send_later(frame(Frame.REPLY, data))

    async def subscribe(self, subscription: Subscription) -> TcpReceiver:
        if self._state is not State.OPEN:
            raise PyCommsError(f"the tcp transport is {self._state.value}")
        service = subscription.service
        receiver = TcpReceiver(service, self)
        self._inboxes.add(subscription, receiver)
        self._routes.local_services.add(service)
        if subscription.ephemeral:  # routed to while it runs; never in the catalog, the registry or a spool
            self._routes.local_observing[service] = subscription.events
        else:
            if self._catalog.learn(service, subscription.events, subscription.commands, replace=True):
                self._outbox.catalog_changed()
            if self._links.registry is not None:
                self._links.registry.save_service(service, subscription.events, subscription.commands)
        self._routes.changed()
        body = {
            "service": service,
            "events": sorted(subscription.events),
            "commands": sorted(subscription.commands),
            "ephemeral": subscription.ephemeral,
        }
        futures: dict[asyncio.Future[Any], int] = {}
        for conn in self._links.announced():
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
        for peer in self._peers.linked():
            last_rx = max(c.last_rx for c in peer.conns)
            out.append(replace(peer.info, last_seen=now - (loop_now - last_rx)))
        return out

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        return await self._dead_letters.listing(service, limit)

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        return await self._dead_letters.replay(service, ids)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        return await self._dead_letters.purge(service, ids)

    async def drop_namespace(self) -> int:
        if self._state is not State.OPEN:
            raise OperationError(f"tcp: cannot drop namespace {self.namespace!r}: the transport is {self._state.value}")
        with map_operation_errors(f"dropping namespace {self.namespace!r}"):
            removed = self._spool.clear()
            self._catalog.services.clear()
            if self._links.registry is not None:
                removed += self._links.registry.drop()
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
