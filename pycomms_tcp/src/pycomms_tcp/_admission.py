"""Which inbound links a node keeps while they are unauthenticated.

A process can open many idle sockets to a node and never send a byte. Refusing the
newest link once an address holds `MAX_HANDSHAKING_PER_ADDRESS` unfinished
handshakes would lock a legitimate peer on that address (every same-host node shares
127.0.0.1) out for as long as the flood lasts. So the newest link is always kept and
the *oldest* unauthenticated one goes, preferring links that have not even sent a
HELLO: a real peer sends its HELLO at once and finishes in a round trip or two, long
before a flood could push it out. Each handshake also has its own deadline
(`Connection` arms a timer of ``connect_timeout`` seconds when the link is made).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._connection import Link

if TYPE_CHECKING:
    from ._connection import Connection

log = logging.getLogger("pycomms.tcp")

MAX_HANDSHAKING_PER_ADDRESS = 16
MAX_LINKS_PER_ADDRESS = 1024
WARN_EVERY = 10.0
"""Seconds between two warnings about evicted links (a flood does not flood the log)."""

_last_warning = 0.0


def _address(conn: Connection) -> str:
    return conn.remote.rpartition(":")[0]


def admit(conn: Connection, links: Iterable[Connection]) -> bool:
    """Whether to keep the inbound link ``conn`` given the node's other ``links``;
    makes room by aborting the oldest unauthenticated link of the same address."""
    global _last_warning
    ip = _address(conn)
    same = [c for c in links if not c.dialer and _address(c) == ip and not c.closing]
    if len(same) >= MAX_LINKS_PER_ADDRESS:
        log.warning("refusing a link from %s: %d links from that address", ip, len(same))
        return False
    handshaking = [c for c in same if c.state is not Link.OPEN]
    if len(handshaking) >= MAX_HANDSHAKING_PER_ADDRESS:
        victim = min(handshaking, key=lambda c: (c.state is not Link.HELLO, c.opened_at))
        victim.abort()
        now = time.monotonic()
        if now - _last_warning >= WARN_EVERY:
            _last_warning = now
            log.warning(
                "%s holds %d unauthenticated links; closing the oldest to make room",
                ip,
                len(handshaking),
            )
    return True
