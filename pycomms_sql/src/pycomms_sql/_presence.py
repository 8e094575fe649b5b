"""Presence: one row per live node, refreshed every heartbeat.

A row carries its own expiry (``last_seen + 2.5 heartbeats``), so nodes with different
heartbeats share the table and a dead node vanishes within three of its heartbeats.
A closing node deletes its row. Every tenth beat also sweeps expired rows and replies
nobody collected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pycomms.spi import NodeInfo

from . import _observers as observers
from ._db import Database
from ._deadline import Deadlines
from ._errors import describe
from ._schema import Tables
from ._tasks import stop_task

log = logging.getLogger("pycomms.sql")
EXPIRY_BEATS = 2.5
REPLY_TTL = 300.0


class Presence:
    """The heartbeat of one node."""

    def __init__(self, db: Database, tables: Tables, node: NodeInfo, heartbeat: float, deadlines: Deadlines) -> None:
        self._db = db
        self._tables = tables
        self._node = node
        self._heartbeat = heartbeat
        self._deadlines = deadlines
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The heartbeat, for the transport to stop together with its other tasks."""
        return self._task

    async def join(self) -> None:
        """Announce the node and start the heartbeat."""
        await self._beat(insert_first=True)
        self._task = asyncio.create_task(self._run(), name=f"pycomms-sql:{self._node.id}:heartbeat")

    async def _beat(self, *, insert_first: bool = False) -> None:
        nodes = self._tables.nodes
        now = time.time()
        values = {"last_seen": now, "expires_at": now + EXPIRY_BEATS * self._heartbeat}

        async def body(conn: AsyncConnection) -> None:
            if not insert_first:
                updated = await conn.execute(update(nodes).where(nodes.c.id == self._node.id).values(**values))
                if updated.rowcount:
                    return
            # New, or swept as dead after a long stall: (re-)announce.
            await conn.execute(delete(nodes).where(nodes.c.id == self._node.id))
            await conn.execute(insert(nodes).values(id=self._node.id, info=self._node.to_json().decode(), **values))

        await self._db.run_write(body)

    async def _sweep(self) -> None:
        nodes, replies = self._tables.nodes, self._tables.replies
        now = time.time()

        async def body(conn: AsyncConnection) -> list[str]:
            await conn.execute(delete(nodes).where(nodes.c.expires_at < now - 60.0))
            await conn.execute(delete(replies).where(replies.c.created_at < now - REPLY_TTL))
            return await observers.sweep(conn, self._tables, now)

        for service in await self._db.run_write(body):
            log.info("removed ephemeral service %s, whose node is gone", service)

    async def _run(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(self._heartbeat)
            beats += 1
            deadline = self._deadlines.operation_timeout
            try:
                await self._deadlines.within(deadline, self._beat())
                if beats % 10 == 0:
                    await self._deadlines.within(deadline, self._sweep())
            except Exception as exc:
                why = f"timed out after {deadline:g}s" if isinstance(exc, TimeoutError) else describe(exc)
                log.warning("presence heartbeat of node %s failed: %s", self._node.id, why)

    async def leave(self) -> None:
        """Stop the heartbeat and delete the node's row at once."""
        await stop_task(self._task)
        self._task = None
        nodes = self._tables.nodes

        async def body(conn: AsyncConnection) -> None:
            await conn.execute(delete(nodes).where(nodes.c.id == self._node.id))

        await self._db.run_write(body)


async def live_nodes(db: Database, tables: Tables) -> list[NodeInfo]:
    nodes = tables.nodes

    async def body(conn: AsyncConnection) -> Sequence[Row[str, float]]:
        query = select(nodes.c.info, nodes.c.last_seen).where(nodes.c.expires_at > time.time()).order_by(nodes.c.id)
        return (await conn.execute(query)).all()

    return [NodeInfo.from_json(info).seen(last_seen) for info, last_seen in await db.run_read(body)]
