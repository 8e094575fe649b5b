"""What a node does with each frame that arrives on an open link: a table from frame
kind to handler (the handshake's frames are `Connection`'s own business; any kind
not in the table is a protocol error that closes the link)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pycomms.spi import ReplySink

from ._connection import FrameHandler
from ._frames import (
    Frame,
    ProtocolError,
    frame,
    json_frame,
    parse_deliver,
    parse_json,
    parse_releases,
    parse_seqs,
    releases_payload,
)
from ._receiver import Item

if TYPE_CHECKING:
    from ._connection import Connection
    from ._deadletters import DeadLetters
    from ._handover import HandOver
    from ._membership import Catalog, Peers, Routes
    from ._outbox import Outbox
    from ._receiver import Inboxes
    from ._waits import Waits

log = logging.getLogger("pycomms.tcp")


class FrameDispatch:
    """Handles the frames of open links for one node: ``table`` maps a frame kind to
    its handler (each `Connection` looks its frames up in it)."""

    def __init__(
        self,
        *,
        peers: Peers,
        catalog: Catalog,
        routes: Routes,
        outbox: Outbox,
        inboxes: Inboxes,
        waits: Waits,
        dead_letters: DeadLetters,
        handover: HandOver,
    ) -> None:
        self._peers = peers
        self._catalog = catalog
        self._routes = routes
        self._outbox = outbox
        self._inboxes = inboxes
        self._waits = waits
        self._dead_letters = dead_letters
        self._handover = handover
        self.replies: ReplySink | None = None
        """Where REPLY frames go (core's sink, set when the transport opens)."""
        self.table: dict[int, FrameHandler] = {
            Frame.DELIVER: self._deliver,
            Frame.ACK: self._ack,
            Frame.PING: _ignore,
            Frame.REPLY: self._reply,
            Frame.RELEASE: self._release,
            Frame.SUBSCRIBE: self._subscribe,
            Frame.SUBSCRIBED: self._answered_token,
            Frame.UNSUBSCRIBE: self._unsubscribe,
            Frame.RPC: self._rpc,
            Frame.RPC_RESULT: self._rpc_result,
            Frame.HANDOFF: handover.take,
            Frame.DEAD_HANDOFF: handover.take_dead,
            Frame.HANDED: self._answered_token,
            Frame.BYE: self._bye,
            Frame.ERROR: self._error,
        }

    # messages ----------------------------------------------------------------------

    def _deliver(self, conn: Connection, payload: bytes) -> None:
        seq, attempt, service, data = parse_deliver(payload)
        receiver = self._inboxes.receivers.get(service)
        if receiver is None or receiver.closed:  # no receiver that still takes messages: back it goes
            conn.send(frame(Frame.RELEASE, releases_payload([(seq, attempt)])))
        else:
            receiver.put(Item(data, attempt, conn, seq))

    def _ack(self, conn: Connection, payload: bytes) -> None:
        self._outbox.acked(conn, parse_seqs(payload))

    def _release(self, conn: Connection, payload: bytes) -> None:
        self._outbox.released(conn, parse_releases(payload), self._peers.of(conn))

    def _reply(self, conn: Connection, payload: bytes) -> None:
        if self.replies is not None:
            self.replies(payload)

    # membership --------------------------------------------------------------------

    def _subscribe(self, conn: Connection, payload: bytes) -> None:
        body = parse_json(payload)
        try:
            service, token = str(body["service"]), body["token"]
            events, commands = frozenset(map(str, body["events"])), frozenset(map(str, body["commands"]))
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"malformed SUBSCRIBE frame: {exc!r}") from None
        ephemeral = body.get("ephemeral") is True
        peer = self._peers.of(conn)
        if peer is not None:
            peer.live.add(service)
            if ephemeral:  # an observer: routed to while it runs, never in the catalog, nothing kept for it
                peer.observing[service] = events
            self._routes.changed()
        if not ephemeral and self._catalog.learn(service, events, commands, replace=True):
            self._outbox.catalog_changed()
        conn.send(json_frame(Frame.SUBSCRIBED, {"token": token}))
        if peer is not None and peer.started:
            self._outbox.catalog_known()
        if not ephemeral:
            self._outbox.schedule_drain(service)

    def _unsubscribe(self, conn: Connection, payload: bytes) -> None:
        body = parse_json(payload)
        gone = body.get("service")
        peer = self._peers.of(conn)
        if peer is not None and isinstance(gone, str):
            peer.live.discard(gone)
            peer.observing.pop(gone, None)
            self._routes.changed()
            if body.get("forget") is True:  # a durable service retired for good
                dropped = self._outbox.forget(gone)
                if dropped is not None:
                    log.info(
                        "node %s retired service %s: forgotten, %d spooled message(s) deleted", peer.id, gone, dropped
                    )

    def _bye(self, conn: Connection, payload: bytes) -> None:
        links = self._peers.left(conn)
        self._routes.changed()
        for link in links:
            self._outbox.release_link(link)
            link.close()

    def _error(self, conn: Connection, payload: bytes) -> None:
        log.warning("node %s reported an error: %s", conn.peer_id, str(parse_json(payload).get("error"))[:200])
        conn.abort()

    # calls and their answers -------------------------------------------------------

    def _rpc(self, conn: Connection, payload: bytes) -> None:
        self._dead_letters.answer(conn, parse_json(payload))

    def _rpc_result(self, conn: Connection, payload: bytes) -> None:
        body = parse_json(payload)
        self._waits.resolve(conn, body.get("id"), body)

    def _answered_token(self, conn: Connection, payload: bytes) -> None:
        """SUBSCRIBED and HANDED: the answer to a wait under ``token``."""
        self._waits.resolve(conn, parse_json(payload).get("token"), None)


def _ignore(conn: Connection, payload: bytes) -> None:
    """PING: its arrival (``last_rx``) is all that counts."""
