"""A program that talks to a PyComms worker through its SQL tables, without PyComms:
the CloudEvents SDK (PyPI ``cloudevents``) for the events, the plain driver for the
tables (asyncpg for PostgreSQL, the standard ``sqlite3`` for SQLite, asyncmy for
MariaDB/MySQL). Written from docs/interop/sql.md alone.

    INTEROP_URL=URL INTEROP_NAMESPACE=NS python sql_client.py COMMAND [ARGS...]

URL is ``postgresql://user@host:port/db``, ``sqlite:////abs/file.db`` or
``mysql://user@host:port/db``; NS the PyComms namespace (a lower-case identifier of at
most 30 characters, so the tables are ``pycomms_<NS>_*``). Every command prints JSON
lines on stdout:

    publish COUNT             COUNT interop.order_placed events (order_id 0..COUNT-1)
    send ORDER_ID CARRIER     one interop.ship command
    request SKU QTY           one interop.get_quote request; prints its reply
    bad                       an event whose data does not fit, and one with a numeric time
    announce COUNT TEXT       the interop.announce command (the worker publishes COUNT notices)
    subscribe SERVICE         durable subscriber SERVICE of interop.notice (kept after exit)
    consume SERVICE COUNT     take COUNT notices from SERVICE's queue, ack each
    unsubscribe SERVICE       remove SERVICE: subscription, messages, dead letters
    observe COUNT TEXT        a passing observer: join, announce, take COUNT notices, leave
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sqlite3
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

SOURCE = "/interop/python-sql"
FORMAT = JSONFormat()
DEADLINE = 30.0  # seconds any wait of this program may take


class Tables:
    """The table names of one namespace: ``pycomms_<namespace>_<table>``."""

    def __init__(self, namespace: str) -> None:
        p = f"pycomms_{namespace}"
        self.messages, self.subscriptions, self.routes = f"{p}_messages", f"{p}_subscriptions", f"{p}_routes"
        self.replies, self.dead_letters, self.nodes, self.meta = (
            f"{p}_replies",
            f"{p}_dead_letters",
            f"{p}_nodes",
            f"{p}_meta",
        )


class Db:
    """One connection; SQL is written with ``?`` placeholders and adapted per driver."""

    def __init__(self, engine: str, conn: Any) -> None:
        self.engine, self.conn = engine, conn

    @classmethod
    async def open(cls, url: str) -> Db:
        parts = urlsplit(url)
        if parts.scheme in ("postgresql", "postgres"):
            import asyncpg

            return cls("postgresql", await asyncpg.connect(url))
        if parts.scheme == "sqlite":
            conn = sqlite3.connect(unquote(parts.path)[1:], isolation_level=None, timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")
            return cls("sqlite", conn)
        if parts.scheme in ("mysql", "mariadb"):
            import asyncmy

            conn = await asyncmy.connect(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 3306,
                user=unquote(parts.username or "root"),
                password=unquote(parts.password or ""),
                database=parts.path.lstrip("/"),
                autocommit=True,
            )
            async with conn.cursor() as cur:  # no gap locks: they deadlock inserts against claims
                await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            return cls("mysql", conn)
        raise SystemExit(f"unsupported URL scheme {parts.scheme!r}: use postgresql://, sqlite:// or mysql://")

    def _sql(self, sql: str) -> str:
        if self.engine == "postgresql":
            pieces = sql.split("?")
            return "".join(f"{piece}${i}" for i, piece in enumerate(pieces[:-1], 1)) + pieces[-1]
        return sql.replace("?", "%s") if self.engine == "mysql" else sql

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.engine == "postgresql":
            return [tuple(row) for row in await self.conn.fetch(self._sql(sql), *args)]
        if self.engine == "sqlite":
            return list(self.conn.execute(sql, args).fetchall())
        async with self.conn.cursor() as cur:
            await cur.execute(self._sql(sql), args)
            return list(await cur.fetchall())

    async def execute(self, sql: str, *args: Any) -> None:
        if self.engine == "postgresql":
            await self.conn.execute(self._sql(sql), *args)
        elif self.engine == "sqlite":
            self.conn.execute(sql, args)
        else:
            async with self.conn.cursor() as cur:
                await cur.execute(self._sql(sql), args)

    async def close(self) -> None:
        if self.engine == "sqlite":
            self.conn.close()
        elif self.engine == "postgresql":
            await self.conn.close()
        else:
            self.conn.close()


def new_event(type_: str, kind: str, data: dict[str, Any], **extensions: str) -> CloudEvent:
    attributes = {
        "id": uuid.uuid4().hex,
        "source": SOURCE,
        "type": type_,
        "time": datetime.now(UTC),
        "datacontenttype": "application/json",
        "kind": kind,
        **extensions,
    }
    return CloudEvent(attributes=attributes, data=data)


async def publish_raw(db: Db, t: Tables, type_: str, msg_id: str, data: bytes) -> None:
    """An event: one row per service subscribed to its type (none subscribed: stored nowhere)."""
    now = time.time()
    # PostgreSQL cannot infer the types of parameters in a SELECT list: cast them.
    values = "?, ?, 1, ?, ?"
    if db.engine == "postgresql":
        values = "CAST(? AS VARCHAR), CAST(? AS BYTEA), 1, CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION)"
    await db.execute(
        f"INSERT INTO {t.messages} (queue, msg_id, data, attempt, available_at, created_at) "
        f"SELECT service, {values} FROM {t.subscriptions} WHERE type = ? AND kind = 'event'",
        msg_id,
        data,
        now,
        now,
        type_,
    )


async def send_raw(db: Db, t: Tables, type_: str, msg_id: str, data: bytes) -> None:
    """A command or request: one row in the queue of the service routed for its type,
    or in ``@<type>`` while no service handles it yet (moved when one starts)."""
    route = await db.fetch(f"SELECT service FROM {t.routes} WHERE type = ?", type_)
    queue = route[0][0] if route else f"@{type_}"
    now = time.time()
    await db.execute(
        f"INSERT INTO {t.messages} (queue, msg_id, data, attempt, available_at, created_at) VALUES (?, ?, ?, 1, ?, ?)",
        queue,
        msg_id,
        data,
        now,
        now,
    )


async def publish(db: Db, t: Tables, event: CloudEvent) -> None:
    await publish_raw(db, t, event.get_type(), event.get_id(), FORMAT.write(event))


async def send(db: Db, t: Tables, event: CloudEvent) -> None:
    await send_raw(db, t, event.get_type(), event.get_id(), FORMAT.write(event))


async def request(db: Db, t: Tables, sku: str, qty: int) -> dict[str, Any]:
    """Send interop.get_quote with ``replyto`` = my node id; take my reply row."""
    me = f"py-{uuid.uuid4().hex[:16]}"
    ask = new_event("interop.get_quote", "request", {"sku": sku, "qty": qty}, replyto=me)
    await send(db, t, ask)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        rows = await db.fetch(f"SELECT id, data FROM {t.replies} WHERE node = ? ORDER BY id", me)
        for row_id, data in rows:
            await db.execute(f"DELETE FROM {t.replies} WHERE id = ?", row_id)
            reply = FORMAT.read(CloudEvent, bytes(data))
            if reply.get_extension("causationid") == ask.get_id():
                return {
                    "type": reply.get_type(),
                    "kind": reply.get_extension("kind"),
                    "data": reply.get_data(),
                    "pycommserror": reply.get_extension("pycommserror"),
                }
        await asyncio.sleep(0.02)
    raise SystemExit(f"no reply to request {ask.get_id()} within {DEADLINE}s")


async def bad(db: Db, t: Tables) -> None:
    """Data that does not fit the type (dead letter ``invalid``), and a hand-written event
    whose ``time`` is a number, not RFC 3339 (dead letter ``malformed``)."""
    await publish(db, t, new_event("interop.order_placed", "event", {"order_id": "not a number", "total": 1.0}))
    hand_written = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": SOURCE,
        "type": "interop.order_placed",
        "kind": "event",
        "time": 1721400000.25,
        "data": {"order_id": 1, "total": 1.0},
    }
    await publish_raw(db, t, "interop.order_placed", hand_written["id"], json.dumps(hand_written).encode())


async def subscribe(db: Db, t: Tables, service: str) -> None:
    """Record ``service`` as handling interop.notice (once; kept until unsubscribe)."""
    have = await db.fetch(f"SELECT 1 FROM {t.subscriptions} WHERE type = ? AND service = ?", "interop.notice", service)
    if not have:
        await db.execute(
            f"INSERT INTO {t.subscriptions} (type, service, kind) VALUES (?, ?, 'event')", "interop.notice", service
        )


async def claim(db: Db, t: Tables, service: str, token: str, limit: int = 50) -> list[tuple[int, bytes, int]]:
    """Lease up to ``limit`` available rows of ``service``'s queue for 30 s."""
    now = time.time()
    ready = f"SELECT id FROM {t.messages} WHERE queue = ? AND available_at <= ? ORDER BY available_at, id LIMIT {limit}"
    bump = "attempt + CASE WHEN lease_token IS NULL THEN 0 ELSE 1 END"
    if db.engine == "postgresql":
        rows = await db.fetch(
            f"WITH picked AS ({ready} FOR UPDATE SKIP LOCKED) UPDATE {t.messages} m "
            f"SET attempt = m.{bump}, lease_token = ?, available_at = ? FROM picked WHERE m.id = picked.id "
            "RETURNING m.id, m.data, m.attempt",
            service,
            now,
            token,
            now + 30,
        )
    elif db.engine == "sqlite":
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            rows = db.conn.execute(
                f"UPDATE {t.messages} SET attempt = {bump}, lease_token = ?, available_at = ? "
                f"WHERE id IN ({ready}) RETURNING id, data, attempt",
                (token, now + 30, service, now),
            ).fetchall()
            db.conn.execute("COMMIT")
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
    else:
        await db.execute("BEGIN")
        try:
            picked = await db.fetch(f"{ready} FOR UPDATE SKIP LOCKED", service, now)  # READ COMMITTED (see open)
            ids = [r[0] for r in picked]
            rows = []
            if ids:
                marks = ", ".join("?" * len(ids))
                await db.execute(
                    f"UPDATE {t.messages} SET attempt = {bump}, lease_token = ?, available_at = ? "
                    f"WHERE id IN ({marks})",
                    token,
                    now + 30,
                    *ids,
                )
                rows = await db.fetch(
                    f"SELECT id, data, attempt FROM {t.messages} WHERE id IN ({marks}) ORDER BY id", *ids
                )
            await db.execute("COMMIT")
        except BaseException as exc:
            await db.execute("ROLLBACK")
            if getattr(exc, "args", (None,))[0] == 1213:  # InnoDB chose this claim as a deadlock victim: poll again
                return []
            raise
    return [(int(i), bytes(d), int(a)) for i, d, a in rows]


async def consume(db: Db, t: Tables, service: str, count: int, keepalive: Any = None) -> None:
    """Take ``count`` notices from ``service``'s queue; print each; ack (delete) each."""
    token, got = uuid.uuid4().hex, 0
    deadline = time.monotonic() + DEADLINE
    while got < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"got {got} of {count} notices within {DEADLINE}s")
        if keepalive is not None:
            await keepalive()
        rows = await claim(db, t, service, token)
        for row_id, data, attempt in rows:
            event = FORMAT.read(CloudEvent, data)
            kind = event.get_extension("kind")
            print(json.dumps({"type": event.get_type(), "kind": kind, "attempt": attempt, "data": event.get_data()}))
            await db.execute(f"DELETE FROM {t.messages} WHERE id = ? AND lease_token = ?", row_id, token)
            got += 1
        if not rows:
            await asyncio.sleep(0.02)


async def unsubscribe(db: Db, t: Tables, service: str) -> None:
    await db.execute(f"DELETE FROM {t.subscriptions} WHERE service = ?", service)
    await db.execute(f"DELETE FROM {t.messages} WHERE queue = ?", service)
    await db.execute(f"DELETE FROM {t.dead_letters} WHERE service = ?", service)


async def observe(db: Db, t: Tables, count: int, text: str) -> None:
    """A passing observer: a presence row and an ``observer:`` registration, so that
    PyComms removes the subscription if this program dies; removed here on the way out."""
    node = f"py-{uuid.uuid4().hex[:16]}"
    service = f"observer-{node}"
    key = "observer:" + hashlib.sha256(service.encode()).hexdigest()[:40]
    info = {"id": node, "name": "python-observer", "services": [], "handles": ["interop.notice"]}
    info |= {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}

    async def beat() -> None:
        now = time.time()
        await db.execute(f"UPDATE {t.nodes} SET last_seen = ?, expires_at = ? WHERE id = ?", now, now + 10, node)

    now = time.time()
    await db.execute(
        f"INSERT INTO {t.nodes} (id, info, last_seen, expires_at) VALUES (?, ?, ?, ?)",
        node,
        json.dumps(info),
        now,
        now + 10,
    )
    await db.execute(
        f"INSERT INTO {t.meta} (name, value) VALUES (?, ?)", key, json.dumps({"service": service, "node": node})
    )
    try:
        await subscribe(db, t, service)
        await send(db, t, new_event("interop.announce", "command", {"count": count, "text": text}))
        await consume(db, t, service, count, keepalive=beat)
    finally:
        await unsubscribe(db, t, service)
        await db.execute(f"DELETE FROM {t.meta} WHERE name = ?", key)
        await db.execute(f"DELETE FROM {t.nodes} WHERE id = ?", node)


async def main(command: str, *args: str) -> None:
    db, t = await Db.open(os.environ["INTEROP_URL"]), Tables(os.environ["INTEROP_NAMESPACE"])
    try:
        if command == "publish":
            # One transaction for the burst: one commit (one disk flush) instead of one per event.
            await db.execute("BEGIN IMMEDIATE" if db.engine == "sqlite" else "BEGIN")
            for n in range(int(args[0])):
                await publish(db, t, new_event("interop.order_placed", "event", {"order_id": n, "total": n + 0.5}))
            await db.execute("COMMIT")
            print(json.dumps({"published": int(args[0])}))
        elif command == "send":
            await send(db, t, new_event("interop.ship", "command", {"order_id": int(args[0]), "carrier": args[1]}))
            print(json.dumps({"sent": 1}))
        elif command == "request":
            print(json.dumps(await request(db, t, args[0], int(args[1]))))
        elif command == "bad":
            await bad(db, t)
            print(json.dumps({"bad": 2}))
        elif command == "announce":
            await send(db, t, new_event("interop.announce", "command", {"count": int(args[0]), "text": args[1]}))
            print(json.dumps({"sent": 1}))
        elif command == "subscribe":
            await subscribe(db, t, args[0])
            print(json.dumps({"subscribed": args[0]}))
        elif command == "consume":
            await consume(db, t, args[0], int(args[1]))
        elif command == "unsubscribe":
            await unsubscribe(db, t, args[0])
            print(json.dumps({"unsubscribed": args[0]}))
        elif command == "observe":
            await observe(db, t, int(args[0]), args[1])
        else:
            raise SystemExit(f"unknown command {command!r}; see the top of this file")
    finally:
        await db.close()


if __name__ == "__main__":
    if len(sys.argv) < 2 or "INTEROP_URL" not in os.environ or "INTEROP_NAMESPACE" not in os.environ:
        raise SystemExit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
