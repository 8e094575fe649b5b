"""The statements of the backend, one function each, per database where they differ.

Every function takes an open connection (the caller owns the transaction) so that the
same statements serve the transport and the outbox (the caller's own transaction).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Double,
    Integer,
    LargeBinary,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select, Subquery
from sqlalchemy.sql.dml import Delete, Insert, ReturningUpdate, Update
from sqlalchemy.sql.elements import BindParameter

from pycomms.spi import Envelope

from ._schema import Tables
from ._url import Engine

# SQLite allows at most 500 terms in a compound SELECT.
SQLITE_MAX_ROWS = 500


@dataclass(frozen=True, slots=True)
class Claimed:
    """One row handed to a consumer under a lease."""

    id: int
    data: bytes
    attempt: int


def command_queue(type_name: str) -> str:
    """The queue of a command or request whose type has no handling service yet."""
    return f"@{type_name}"


def insert_ignore(kind: Engine, table: Table) -> Insert:
    """``INSERT`` that skips rows whose primary key exists."""
    if kind == "postgresql":
        return pg_dialect.insert(table).on_conflict_do_nothing()
    if kind == "sqlite":
        return sqlite_dialect.insert(table).on_conflict_do_nothing()
    # Not INSERT IGNORE: its duplicate-key warnings cost a SHOW WARNINGS round trip
    # and are logged by the driver. A no-op update of the key is silent.
    stmt = mysql_dialect.insert(table)
    first = table.primary_key.columns.values()[0]
    return stmt.on_duplicate_key_update({first.name: stmt.inserted[first.name]})


async def insert_messages(
    conn: AsyncConnection, kind: Engine, tables: Tables, envelopes: Sequence[Envelope], now: float
) -> None:
    """Store ``envelopes`` (events, commands, requests) in ONE statement.

    An event becomes one row per subscribed service (a join with the subscriptions);
    a command or request one row for the service recorded as handling its type, or
    for the ``@type`` queue when none is yet (adopted when a handler subscribes).
    """
    if not envelopes:
        return
    columns: dict[str, list[Any]] = {"etype": [], "ctype": [], "fallback": [], "msg_id": [], "data": []}
    for env in envelopes:
        event = env.kind == "event"
        columns["etype"].append(env.type if event else None)
        columns["ctype"].append(None if event else env.type)
        columns["fallback"].append(None if event else command_queue(env.type))
        columns["msg_id"].append(env.id)
        columns["data"].append(env.encode())
    if kind == "postgresql":
        params: dict[str, Any] = {**columns, "now": now}
        statement = _insert_statement(tables, kind, 0)
    else:
        params = {f"{name}_{i}": value for name, values in columns.items() for i, value in enumerate(values)}
        params["now"] = now
        statement = _insert_statement(tables, kind, len(envelopes))
    await conn.execute(statement, params)


@functools.lru_cache(maxsize=256)
def _insert_statement(tables: Tables, kind: Engine, rows: int) -> Insert:
    """The INSERT … SELECT of `insert_messages`, built once per table set and engine
    (and row count where the rows are spelled out), as building one costs more than
    running it. PostgreSQL takes the batch as arrays, so one statement fits all."""
    subs, routes, m = tables.subscriptions, tables.routes, tables.messages
    values: Subquery
    if kind == "postgresql":
        values = (
            text(
                "SELECT * FROM unnest(CAST(:etype AS VARCHAR[]), CAST(:ctype AS VARCHAR[]), "
                "CAST(:fallback AS VARCHAR[]), CAST(:msg_id AS VARCHAR[]), CAST(:data AS BYTEA[])) "
                "WITH ORDINALITY AS v(etype, ctype, fallback, msg_id, data, seq)"
            )
            .columns(etype=String, ctype=String, fallback=String, msg_id=String, data=LargeBinary, seq=Integer)
            .subquery("v")
        )
    else:
        selects = [
            select(
                literal(seq, Integer()).label("seq"),
                bindparam(f"etype_{seq}", type_=String()).label("etype"),
                bindparam(f"ctype_{seq}", type_=String()).label("ctype"),
                bindparam(f"fallback_{seq}", type_=String()).label("fallback"),
                bindparam(f"msg_id_{seq}", type_=String()).label("msg_id"),
                bindparam(f"data_{seq}", type_=LargeBinary()).label("data"),
            )
            for seq in range(rows)
        ]
        values = (selects[0] if len(selects) == 1 else union_all(*selects)).subquery("v")
    events = subs.alias("e")
    commands = routes.alias("c")
    now: BindParameter[float] = bindparam("now", type_=Double())
    source = (
        select(
            func.coalesce(events.c.service, commands.c.service, values.c.fallback),
            values.c.msg_id,
            values.c.data,
            literal(1, Integer()),
            now,
            now,
        )
        .select_from(
            values.outerjoin(events, and_(events.c.type == values.c.etype, events.c.kind == "event")).outerjoin(
                commands, commands.c.type == values.c.ctype
            )
        )
        .where(or_(events.c.service.is_not(None), values.c.ctype.is_not(None)))
        # Ids in publish order: consumers of one queue take rows by (available_at, id).
        .order_by(values.c.seq)
    )
    return insert(m).from_select(["queue", "msg_id", "data", "attempt", "available_at", "created_at"], source)


async def insert_replies(conn: AsyncConnection, tables: Tables, replies: Sequence[Envelope], now: float) -> None:
    if replies:
        await conn.execute(
            insert(tables.replies),
            [{"node": env.reply_to, "data": env.encode(), "created_at": now} for env in replies],
        )


async def subscribe(
    conn: AsyncConnection, kind: Engine, tables: Tables, service: str, events: Iterable[str], commands: Iterable[str]
) -> list[str]:
    """Record the subscription; return the command types routed to this service.

    The first service recorded for a command type handles it (one instance of one
    service), like the reference backend."""
    events, commands = sorted(events), sorted(commands)
    rows = [{"type": t, "service": service, "kind": "event"} for t in events]
    rows += [{"type": t, "service": service, "kind": "command"} for t in commands]
    if rows:
        await conn.execute(insert_ignore(kind, tables.subscriptions), rows)
    if not commands:
        return []
    routes = tables.routes
    await conn.execute(insert_ignore(kind, routes), [{"type": t, "service": service} for t in commands])
    result = await conn.execute(select(routes.c.type).where(routes.c.type.in_(commands), routes.c.service == service))
    return sorted(r[0] for r in result)


async def has_waiting_commands(conn: AsyncConnection, tables: Tables, command_types: Sequence[str]) -> bool:
    """Whether any command of these types waits for a route (a read before `adopt`)."""
    m = tables.messages
    queues = [command_queue(t) for t in command_types]
    return (await conn.execute(select(m.c.id).where(m.c.queue.in_(queues)).limit(1))).first() is not None


async def adopt(conn: AsyncConnection, tables: Tables, service: str, command_types: Sequence[str]) -> int:
    """Move commands stored before this service became their route into its queue."""
    if not command_types:
        return 0
    m = tables.messages
    result = await conn.execute(
        update(m).where(m.c.queue.in_([command_queue(t) for t in command_types])).values(queue=service)
    )
    return result.rowcount


async def claim(
    conn: AsyncConnection, kind: Engine, tables: Tables, queue: str, limit: int, token: str, now: float, until: float
) -> list[Claimed]:
    """Lease up to ``limit`` available rows of ``queue`` to ``token`` until ``until``.

    One statement on PostgreSQL and SQLite; two on MariaDB, which must run in one
    transaction. A row claimed again after its lease expired counts as a new attempt."""
    params = {"for_queue": queue, "ready_at": now, "batch": limit, "new_token": token, "lease_end": until}
    if kind != "mysql":
        result = await conn.execute(_claim_statement(tables, kind), params)
        return [Claimed(i, bytes(d), a) for i, d, a in result]
    pick, lease = _mysql_claim_statements(tables)
    rows = (await conn.execute(pick, params)).all()
    if not rows:
        return []
    await conn.execute(lease, {"row_ids": [r[0] for r in rows], "new_token": token, "lease_end": until})
    return [Claimed(i, bytes(d), a + (0 if t is None else 1)) for i, d, a, t in rows]


def _ready(tables: Tables) -> Select[int]:
    m = tables.messages
    return (
        select(m.c.id)
        .where(m.c.queue == bindparam("for_queue"), m.c.available_at <= bindparam("ready_at"))
        .order_by(m.c.available_at, m.c.id)
        .limit(bindparam("batch"))
    )


def _bump(tables: Tables) -> ColumnElement[int]:
    """The attempt after a claim: one more if the row was leased before (expired)."""
    m = tables.messages
    return m.c.attempt + case((m.c.lease_token.is_(None), 0), else_=1)


@functools.lru_cache(maxsize=64)
def _claim_statement(tables: Tables, kind: Engine) -> ReturningUpdate[int, bytes, int]:
    m = tables.messages
    if kind == "postgresql":
        # The CTE is materialized once, so the batch never exceeds ``limit``.
        picked = _ready(tables).with_for_update(skip_locked=True).cte("picked")
        where = m.c.id == picked.c.id
    else:
        # SQLite runs it under BEGIN IMMEDIATE: nobody else writes meanwhile.
        where = m.c.id.in_(_ready(tables))
    return (
        update(m)
        .where(where)
        .values(attempt=_bump(tables), lease_token=bindparam("new_token"), available_at=bindparam("lease_end"))
        .returning(m.c.id, m.c.data, m.c.attempt)
    )


@functools.lru_cache(maxsize=64)
def _mysql_claim_statements(tables: Tables) -> tuple[Select[Any], Update]:
    """MariaDB has neither UPDATE … RETURNING nor an UPDATE of a locking CTE: lock the
    rows with SKIP LOCKED, then lease them."""
    m = tables.messages
    pick = (
        select(m.c.id, m.c.data, m.c.attempt, m.c.lease_token)
        .where(m.c.queue == bindparam("for_queue"), m.c.available_at <= bindparam("ready_at"))
        .order_by(m.c.available_at, m.c.id)
        .limit(bindparam("batch"))
        .with_for_update(skip_locked=True)
    )
    # MariaDB evaluates SET left to right: bump the attempt before replacing the token.
    lease = (
        update(m)
        .where(m.c.id.in_(bindparam("row_ids", expanding=True)))
        .ordered_values(
            (m.c.attempt, _bump(tables)),
            (m.c.lease_token, bindparam("new_token")),
            (m.c.available_at, bindparam("lease_end")),
        )
    )
    return pick, lease


async def has_ready(conn: AsyncConnection, tables: Tables, queue: str, now: float) -> bool:
    """Whether ``queue`` has a row to claim (a cheap read before a write transaction)."""
    m = tables.messages
    row = (await conn.execute(select(m.c.id).where(m.c.queue == queue, m.c.available_at <= now).limit(1))).first()
    return row is not None


async def count_ready(conn: AsyncConnection, tables: Tables, queue: str, now: float) -> int:
    """Rows of ``queue`` a claim could take now (not leased, not delayed): a count
    over the claim index's range for the queue, never the whole table."""
    m = tables.messages
    ready = select(func.count()).select_from(m).where(m.c.queue == queue, m.c.available_at <= now)
    return int((await conn.execute(ready)).scalar_one())


# Settling: every statement names rows *and* the token they were leased under, so a
# settle after the lease moved on matches nothing. Statements are built once per
# table set, engine and number of tokens (building one costs more than running it).

Leases = Mapping[str, Sequence[int]]
Settle = Literal["ack", "reschedule", "renew"]


async def ack(conn: AsyncConnection, kind: Engine, tables: Tables, leases: Leases) -> int:
    """Delete the rows still held under the given tokens; others are left alone."""
    statement = _settle_statement(tables, kind, "ack", _token_slots(kind, leases))
    return (await conn.execute(statement, _lease_params(kind, leases))).rowcount


async def reschedule(conn: AsyncConnection, kind: Engine, tables: Tables, leases: Leases, available_at: float) -> int:
    """Give rows still held under the given tokens back, as the next attempt."""
    statement = _settle_statement(tables, kind, "reschedule", _token_slots(kind, leases))
    return (await conn.execute(statement, {**_lease_params(kind, leases), "at": available_at})).rowcount


async def renew(conn: AsyncConnection, kind: Engine, tables: Tables, leases: Leases, until: float) -> int:
    """Extend the leases still held."""
    statement = _settle_statement(tables, kind, "renew", _token_slots(kind, leases))
    return (await conn.execute(statement, {**_lease_params(kind, leases), "at": until})).rowcount


def _token_slots(kind: Engine, leases: Leases) -> int:
    """PostgreSQL takes (id, token) pairs as arrays: one statement for any number."""
    return 0 if kind == "postgresql" else sum(1 for ids in leases.values() if ids)


def _lease_params(kind: Engine, leases: Leases) -> dict[str, Any]:
    held = [(token, ids) for token, ids in leases.items() if ids]
    if kind == "postgresql":
        return {
            "ids": [row for _, ids in held for row in ids],
            "tokens": [token for token, ids in held for _ in ids],
        }
    params: dict[str, Any] = {}
    for slot, (token, ids) in enumerate(held):
        params[f"token_{slot}"] = token
        params[f"ids_{slot}"] = list(ids)
    return params


@functools.lru_cache(maxsize=256)
def _settle_statement(tables: Tables, kind: Engine, action: Settle, slots: int) -> Delete | Update:
    m = tables.messages
    where: ColumnElement[bool]
    if kind == "postgresql":
        pairs = (
            text("SELECT * FROM unnest(CAST(:ids AS BIGINT[]), CAST(:tokens AS VARCHAR[])) AS p(id, token)")
            .columns(id=BigInteger, token=String)
            .subquery("p")
        )
        where = and_(m.c.id == pairs.c.id, m.c.lease_token == pairs.c.token)
    elif slots:
        where = or_(
            *(
                and_(m.c.lease_token == bindparam(f"token_{i}"), m.c.id.in_(bindparam(f"ids_{i}", expanding=True)))
                for i in range(slots)
            )
        )
    else:
        where = false()
    if action == "ack":
        return delete(m).where(where)
    if action == "renew":
        return update(m).where(where).values(available_at=bindparam("at"))
    return (
        update(m)
        .where(where)
        .ordered_values((m.c.attempt, m.c.attempt + 1), (m.c.lease_token, None), (m.c.available_at, bindparam("at")))
    )


async def dead_letter(
    conn: AsyncConnection,
    kind: Engine,
    tables: Tables,
    row_id: int,
    token: str,
    service: str,
    msg_id: str,
    letter: bytes,
    now: float,
) -> bool:
    """Move a leased row to the dead letters; nothing if the lease moved on."""
    if not await ack(conn, kind, tables, {token: [row_id]}):
        return False
    await conn.execute(insert(tables.dead_letters).values(service=service, msg_id=msg_id, failed_at=now, letter=letter))
    return True


async def take_dead_letters(
    conn: AsyncConnection, tables: Tables, service: str, ids: Sequence[str] | None
) -> list[bytes]:
    """Delete dead letters of ``service`` (all, or those with message ``ids``) and
    return them; locks them first so two concurrent replays do not both take one."""
    dl = tables.dead_letters
    where = dl.c.service == service
    if ids is not None:
        if not ids:
            return []
        where = and_(where, dl.c.msg_id.in_(list(ids)))
    rows = (await conn.execute(select(dl.c.id, dl.c.letter).where(where).order_by(dl.c.id).with_for_update())).all()
    if rows:
        await conn.execute(delete(dl).where(dl.c.id.in_([r[0] for r in rows])))
    return [bytes(r[1]) for r in rows]


async def requeue(
    conn: AsyncConnection, tables: Tables, service: str, items: Sequence[tuple[str, bytes]], now: float
) -> None:
    """Put encoded envelopes back into ``service``'s queue with attempt 1."""
    if items:
        await conn.execute(
            insert(tables.messages),
            [
                {"queue": service, "msg_id": msg_id, "data": data, "attempt": 1, "available_at": now, "created_at": now}
                for msg_id, data in items
            ],
        )


async def list_dead_letters(conn: AsyncConnection, tables: Tables, service: str, limit: int) -> list[bytes]:
    dl = tables.dead_letters
    result = await conn.execute(select(dl.c.letter).where(dl.c.service == service).order_by(dl.c.id).limit(limit))
    return [bytes(r[0]) for r in result]


async def take_replies(conn: AsyncConnection, tables: Tables, node: str) -> list[bytes]:
    """Remove and return the replies stored for ``node``, oldest first."""
    r = tables.replies
    rows = (await conn.execute(select(r.c.id, r.c.data).where(r.c.node == node).order_by(r.c.id))).all()
    if rows:
        await conn.execute(delete(r).where(r.c.id.in_([row[0] for row in rows])))
    return [bytes(row[1]) for row in rows]


async def has_replies(conn: AsyncConnection, tables: Tables, node: str) -> bool:
    r = tables.replies
    return (await conn.execute(select(r.c.id).where(r.c.node == node).limit(1))).first() is not None
