"""Back-pressure from slow peers: waiting while links have a full kernel buffer."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._connection import Connection

log = logging.getLogger("pycomms.tcp")


async def drain_links(links: list[Connection], timeout: float) -> None:
    """Wait while any of ``links`` has a full kernel buffer (back-pressure from slow
    peers). A link that takes nothing for ``timeout`` seconds (``operation_timeout``) is
    closed: its messages go to another instance or the spool, and the caller is not
    held longer."""
    if not links:
        return
    try:
        async with asyncio.timeout(timeout):
            for conn in links:
                await conn.drain()
    except TimeoutError:
        for conn in links:
            if conn.paused:
                log.warning(
                    "node %s (%s) took no data for %ss (operation_timeout); closing the link",
                    conn.peer_id,
                    conn.remote,
                    timeout,
                )
                conn.abort()
