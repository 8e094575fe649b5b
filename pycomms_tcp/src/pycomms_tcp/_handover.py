"""What a node with ``spool=memory`` does with the messages it still holds when it
closes: hand its spool and dead letters to a connected peer (HANDOFF, DEAD_HANDOFF;
the peer answers HANDED once it stored each), and count what no one took.

A message the node accepted and could not give to anyone is lost at close: the count
goes into the log line and into ``TcpTransport.unsent`` (core's ``Bus.unsent``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ._errors import map_errors
from ._frames import Frame, dead_handoff_payload, frame, handoff_payload

if TYPE_CHECKING:
    from ._connection import Connection
    from ._outbox import Outbox
    from ._spool import Spool
    from ._waits import Waits

log = logging.getLogger("pycomms.tcp")


async def hand_over(
    link: Connection, outbox: Outbox, spool: Spool, waits: Waits, max_frame: int, timeout: float
) -> tuple[int, int]:
    """Give the spool and the dead letters to the peer on ``link``; wait up to
    ``timeout`` seconds for its confirmations. Returns ``(messages, dead letters)``
    handed over (and removed here)."""
    messages = {
        row: frame(Frame.HANDOFF, handoff_payload(waits.token(), attempt, service, key, data))
        for row, service, data, attempt, key in outbox.handover()
    }
    letters = {
        -seq: frame(Frame.DEAD_HANDOFF, dead_handoff_payload(waits.token(), letter))
        for seq, letter in spool.all_dead()
        if len(letter) + 64 < max_frame  # a letter of a message near the size limit stays
    }
    handed = await _send_and_wait(link, messages | letters, waits, timeout)
    with map_errors("removing handed-over messages from the spool"):
        spool.delete(k for k in handed if k > 0)
        spool.delete_dead(-k for k in handed if k < 0)
    counts = sum(k > 0 for k in handed), sum(k < 0 for k in handed)
    if handed:
        log.info("handed %d spooled message(s) and %d dead letter(s) over to node %s", *counts, link.peer_id)
    return counts


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


def count_unsent(outbox: Outbox, spool: Spool) -> int:
    """Log what a closing node still holds; return how many accepted messages are lost
    with it (0 when the spool is a file: they are sent after the next start)."""
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
