"""The hand-over: what a node with ``spool=memory`` does with the messages it still
holds when it closes — hand its spool and dead letters to a connected peer
(HANDOFF, DEAD_HANDOFF; the peer answers HANDED once it stored each) and count what
no one took — and the peer's side, taking them.

A message the node accepted and could not give to anyone is lost at close: the count
goes into the log line and into ``TcpTransport.unsent`` (core's ``Bus.unsent``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pycomms import PyCommsError
from pycomms.spi import DeadLetter

from ._errors import map_errors
from ._frames import (
    Frame,
    ProtocolError,
    dead_handoff_payload,
    frame,
    handoff_payload,
    json_frame,
    parse_dead_handoff,
    parse_handoff,
)

if TYPE_CHECKING:
    from ._connection import Connection
    from ._membership import Peer
    from ._outbox import Outbox
    from ._spool import Spool
    from ._waits import Waits

log = logging.getLogger("pycomms.tcp")


class HandOver:
    """Both sides of the hand-over for one node."""

    def __init__(self, outbox: Outbox, spool: Spool, waits: Waits, max_frame: int) -> None:
        self._outbox = outbox
        self._spool = spool
        self._waits = waits
        self._max_frame = max_frame

    async def give(self, peer: Peer, timeout: float) -> tuple[int, int]:
        """Give the spool and the dead letters to ``peer``; wait up to ``timeout``
        seconds for its confirmations. Returns ``(messages, dead letters)`` handed over
        (and removed here)."""
        waits, spool, link = self._waits, self._spool, peer.link
        if link is None:
            return 0, 0
        messages = {
            row: frame(Frame.HANDOFF, handoff_payload(waits.token(), attempt, service, key, data))
            for row, service, data, attempt, key in self._outbox.spooled_not_sent()
        }
        letters = {
            -seq: frame(Frame.DEAD_HANDOFF, dead_handoff_payload(waits.token(), letter))
            for seq, letter in spool.all_dead()
            if len(letter) + 64 < self._max_frame  # a letter of a message near the size limit stays
        }
        handed = await _send_and_wait(link, messages | letters, waits, timeout)
        with map_errors("removing handed-over messages from the spool"):
            spool.delete(k for k in handed if k > 0)
            spool.delete_dead(-k for k in handed if k < 0)
        counts = sum(k > 0 for k in handed), sum(k < 0 for k in handed)
        if handed:
            log.info("handed %d spooled message(s) and %d dead letter(s) over to node %s", *counts, link.peer_id)
        return counts

    def take(self, conn: Connection, payload: bytes) -> None:
        """A HANDOFF frame: keep the message (confirmed with HANDED once spooled)."""
        token, attempt, service, key, data = parse_handoff(payload)
        try:
            with map_errors("spooling a handed-over message"):
                self._outbox.keep(service, data, attempt, key)
        except PyCommsError as exc:
            log.error("could not take over a message from node %s: %s", conn.peer_id, exc)
        else:
            conn.send(json_frame(Frame.HANDED, {"token": token}))

    def take_dead(self, conn: Connection, payload: bytes) -> None:
        """A DEAD_HANDOFF frame: keep the dead letter (confirmed with HANDED)."""
        token, raw = parse_dead_handoff(payload)
        try:
            letter = DeadLetter.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"malformed dead letter: {exc!r}") from None
        with map_errors("storing a dead letter"):
            self._spool.add_dead(letter)
        conn.send(json_frame(Frame.HANDED, {"token": token}))

    def unsent(self) -> int:
        """Log what a closing node still holds; return how many accepted messages are
        lost with it (0 when the spool is a file: they are sent after the next start)."""
        return _count_unsent(self._outbox, self._spool)


async def _send_and_wait(link: Connection, frames: dict[int, bytes], waits: Waits, timeout: float) -> list[int]:
    """Send frames whose first 8 payload bytes are a wait token; the keys of those the
    peer confirmed (HANDED) in time."""
    futures: dict[asyncio.Future[Any], int] = {}
    keys: dict[asyncio.Future[Any], int] = {}
    for key, data in frames.items():
        token, future = waits.expect(link, int.from_bytes(data[5:13], "big"))
        futures[future] = token
        keys[future] = key
        link.send(data)
    if not futures:
        return []
    try:
        done, _ = await asyncio.wait(futures, timeout=timeout)
        return [keys[f] for f in done if not f.cancelled() and f.exception() is None]
    finally:
        waits.forget(futures)


def _count_unsent(outbox: Outbox, spool: Spool) -> int:
    unheard = outbox.unheard
    if unheard:
        log.warning(
            "closing with %d event(s) that reached nobody: they were published while no other node of the "
            "namespace was known, and tcp:// keeps no copy for services that are not running",
            unheard,
        )
    return unheard + _count_spooled(outbox, spool)


def _count_spooled(outbox: Outbox, spool: Spool) -> int:
    unsent = outbox.unsent()
    dead = len(spool.all_dead())
    if spool.path != ":memory:":
        if unsent or dead:
            log.info(
                "closing with %d message(s) not yet delivered and %d dead letter(s) kept in %s; "
                "they are sent after the next start with this spool",
                unsent,
                dead,
                spool.path,
            )
        return 0
    if dead:
        log.warning("closing with %d dead letter(s) kept in memory and no peer to take them; they are lost", dead)
    if unsent:
        log.warning(
            "closing with %d message(s) accepted and not delivered: no live instance of their services and "
            "no peer to take them; they are lost (use spool=DIR to keep them across restarts)",
            unsent,
        )
    return unsent
