"""Ephemeral services (observers, ``pycomms listen``) on SQL: subscribed like any
service, so a publish stores their copies in the same statement, and registered in the
``meta`` table with the node that runs them. Closing one deletes its subscription, its
messages and its dead letters; if its node dies instead, the presence sweep of any
other node does the same once the node's presence row has expired.

The registration lives in ``meta`` (a key per observer) rather than in a table of its
own, so that observers need no schema change.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ._schema import Tables

PREFIX = "observer:"


def _key(service: str) -> str:
    """A ``meta`` name for ``service`` that fits the column (64 characters)."""
    return PREFIX + hashlib.sha256(service.encode()).hexdigest()[:40]


async def register(conn: AsyncConnection, tables: Tables, service: str, node_id: str) -> None:
    meta = tables.meta
    key = _key(service)
    await conn.execute(delete(meta).where(meta.c.name == key))
    await conn.execute(insert(meta).values(name=key, value=json.dumps({"service": service, "node": node_id})))


async def remove(conn: AsyncConnection, tables: Tables, service: str, node_id: str | None = None) -> bool:
    """Delete everything of observer ``service``; with ``node_id``, only if that node is
    the one registered (another instance that registered later keeps it). True if removed."""
    meta = tables.meta
    key = _key(service)
    if node_id is not None:
        row = (await conn.execute(select(meta.c.value).where(meta.c.name == key))).first()
        if row is not None and json.loads(row[0]).get("node") != node_id:
            return False
    await conn.execute(delete(tables.subscriptions).where(tables.subscriptions.c.service == service))
    await conn.execute(delete(tables.messages).where(tables.messages.c.queue == service))
    await conn.execute(delete(tables.dead_letters).where(tables.dead_letters.c.service == service))
    await conn.execute(delete(meta).where(meta.c.name == key))
    return True


async def sweep(conn: AsyncConnection, tables: Tables, now: float) -> list[str]:
    """Remove the observers whose node has no live presence row; their names."""
    meta, nodes = tables.meta, tables.nodes
    rows = (await conn.execute(select(meta.c.name, meta.c.value).where(meta.c.name.like(f"{PREFIX}%")))).all()
    if not rows:
        return []
    live = {r[0] for r in (await conn.execute(select(nodes.c.id).where(nodes.c.expires_at > now))).all()}
    gone = []
    for name, value in rows:
        entry = json.loads(value)
        if entry.get("node") not in live:
            await remove(conn, tables, str(entry["service"]))
            await conn.execute(delete(meta).where(meta.c.name == name))
            gone.append(str(entry["service"]))
    return gone
