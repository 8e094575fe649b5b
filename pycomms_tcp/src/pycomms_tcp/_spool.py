"""The node's local store (SQLite): the sender-side spool, dead letters, and the
catalog of services seen in the cluster.

The spool holds messages for services that are known but have no live instance,
commands whose type no known service handles yet (keyed ``?TYPE``), and events
published before the node learned the catalog (keyed ``!TYPE``: it cannot yet tell
who wants them; they are copied to each service that does once it knows). It is bounded by
count and bytes; `SpoolFullError` is raised instead of dropping. With ``spool=memory``
(the default) the database is in memory and lives as long as the bus; with
``spool=DIR`` it is the file ``DIR/pycomms-spool.sqlite3`` and survives a restart.

Calls are synchronous and short (one statement, or one transaction per batch); they
run on the event loop so that the spool and the in-memory routing state never
disagree.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from pydantic_core import from_json, to_json

from pycomms.spi import DeadLetter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    key TEXT,
    attempt INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_service ON spool (service, row);
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    id TEXT NOT NULL,
    failed_at REAL NOT NULL,
    letter BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_service ON dead (service, failed_at);
CREATE TABLE IF NOT EXISTS catalog (
    service TEXT PRIMARY KEY,
    events TEXT NOT NULL,
    commands TEXT NOT NULL
);
"""


class SpoolFullError(Exception):
    """The spool is at its count or byte bound."""


def unrouted_key(type_name: str) -> str:
    """Spool key of commands for a type no known service handles."""
    return "?" + type_name


def unknown_event_key(type_name: str) -> str:
    """Spool key of events published before the catalog was known."""
    return "!" + type_name


class Spool:
    """One node's SQLite store. Not thread-safe: used from the event loop only."""

    def __init__(self, path: str, max_messages: int, max_bytes: int) -> None:
        self.path = path
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.count = 0
        self.bytes = 0
        self.per_service: collections.Counter[str] = collections.Counter()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        self.count, total = db.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM spool").fetchone()
        self.bytes = int(total)
        self.per_service = collections.Counter(dict(db.execute("SELECT service, count(*) FROM spool GROUP BY service")))

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("spool is not open")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # spool ------------------------------------------------------------------------

    def put_many(self, items: list[tuple[str, bytes, int, str | None]], *, force: bool = False) -> list[int]:
        """Store ``(service, data, attempt, key)`` items atomically; raises `SpoolFullError`
        (storing none of them) when a bound would be passed. ``force`` skips the
        bounds: for messages already accepted earlier that come back (never drop)."""
        size = sum(len(item[1]) for item in items)
        if not force and (self.count + len(items) > self.max_messages or self.bytes + size > self.max_bytes):
            raise SpoolFullError(
                f"spool full: {self.count} messages / {self.bytes} bytes stored, bounds "
                f"spool_max_messages={self.max_messages} spool_max_bytes={self.max_bytes}"
            )
        db = self.db
        rows = []
        db.execute("BEGIN")
        try:
            for service, data, attempt, key in items:
                cur = db.execute(
                    "INSERT INTO spool (service, key, attempt, data) VALUES (?, ?, ?, ?)", (service, key, attempt, data)
                )
                rows.append(int(cur.lastrowid or 0))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.count += len(items)
        self.bytes += size
        for item in items:
            self.per_service[item[0]] += 1
        return rows

    def waiting(self, service: str, after: int, limit: int, skip: set[int]) -> list[tuple[int, bytes, int, str | None]]:
        """Up to ``limit`` spooled ``(row, data, attempt, key)`` of ``service`` with ``row > after``
        and not in ``skip``, oldest first."""
        out: list[tuple[int, bytes, int, str | None]] = []
        last = after
        while len(out) < limit:
            batch = self.db.execute(
                "SELECT row, data, attempt, key FROM spool WHERE service = ? AND row > ? ORDER BY row LIMIT ?",
                (service, last, limit),
            ).fetchall()
            if not batch:
                break
            for row, data, attempt, key in batch:
                last = row
                if row not in skip:
                    out.append((row, bytes(data), attempt, key))
                    if len(out) >= limit:
                        break
        return out

    def everything(self, skip: set[int]) -> list[tuple[int, str, bytes, int, str | None]]:
        """Every spooled ``(row, service, data, attempt, key)`` not in ``skip``, oldest first."""
        rows = self.db.execute("SELECT row, service, data, attempt, key FROM spool ORDER BY row").fetchall()
        return [(r, s, bytes(d), a, k) for r, s, d, a, k in rows if r not in skip]

    def services(self) -> set[str]:
        """Keys that have spooled messages."""
        return {s for s, n in self.per_service.items() if n > 0}

    def rekey(self, old: str, new: str) -> None:
        """Move spooled messages from key ``old`` to ``new`` (unrouted commands found a service)."""
        self.db.execute("UPDATE spool SET service = ? WHERE service = ?", (new, old))
        self.per_service[new] += self.per_service.pop(old, 0)

    def fan_out(self, old: str, services: Iterable[str]) -> int:
        """Copy every message spooled under key ``old`` to each of ``services``, then
        remove the originals (in one transaction); returns how many originals there were."""
        db = self.db
        rows = db.execute("SELECT data, attempt, key FROM spool WHERE service = ? ORDER BY row", (old,)).fetchall()
        targets = list(services)
        size = sum(len(data) for data, _, _ in rows)
        db.execute("BEGIN")
        try:
            for service in targets:
                db.executemany(
                    "INSERT INTO spool (service, key, attempt, data) VALUES (?, ?, ?, ?)",
                    [(service, key, attempt, data) for data, attempt, key in rows],
                )
            db.execute("DELETE FROM spool WHERE service = ?", (old,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.count += len(rows) * (len(targets) - 1)
        self.bytes += size * (len(targets) - 1)
        self.per_service.pop(old, None)
        for service in targets:
            self.per_service[service] += len(rows)
        return len(rows)

    def clear(self) -> int:
        """Remove every spooled message, dead letter and catalog entry; how many rows."""
        db = self.db
        removed = 0
        for table in ("spool", "dead", "catalog"):
            removed += db.execute(f"DELETE FROM {table}").rowcount  # fixed table names
        self.count = self.bytes = 0
        self.per_service.clear()
        return removed

    def delete(self, rows: Iterable[int]) -> None:
        db = self.db
        for row in rows:
            got = db.execute("DELETE FROM spool WHERE row = ? RETURNING length(data), service", (row,)).fetchone()
            if got is not None:
                self.count -= 1
                self.bytes -= int(got[0])
                self.per_service[got[1]] -= 1
                if self.per_service[got[1]] <= 0:
                    del self.per_service[got[1]]

    # dead letters -----------------------------------------------------------------

    def add_dead(self, letter: DeadLetter) -> None:
        self.db.execute(
            "INSERT INTO dead (service, id, failed_at, letter) VALUES (?, ?, ?, ?)",
            (letter.service, letter.id, letter.failed_at, letter.to_json()),
        )

    def dead(self, service: str, limit: int, offset: int = 0) -> list[DeadLetter]:
        rows = self.db.execute(
            "SELECT letter FROM dead WHERE service = ? ORDER BY failed_at, seq LIMIT ? OFFSET ?",
            (service, limit, offset),
        ).fetchall()
        return [DeadLetter.from_json(bytes(r[0])) for r in rows]

    def all_dead(self) -> list[tuple[int, bytes]]:
        """Every dead letter as ``(seq, stored JSON)``, for handing over."""
        return [(seq, bytes(letter)) for seq, letter in self.db.execute("SELECT seq, letter FROM dead ORDER BY seq")]

    def delete_dead(self, seqs: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM dead WHERE seq = ?", [(seq,) for seq in seqs])

    def take_dead(self, service: str, ids: list[str] | None) -> list[DeadLetter]:
        """Remove and return dead letters of ``service`` (all, or those with ``ids``)."""
        db = self.db
        if ids is None:
            rows = db.execute("DELETE FROM dead WHERE service = ? RETURNING seq, letter", (service,)).fetchall()
        else:
            rows = []
            for letter_id in ids:
                rows += db.execute(
                    "DELETE FROM dead WHERE service = ? AND id = ? RETURNING seq, letter", (service, letter_id)
                ).fetchall()
        rows.sort()
        return [DeadLetter.from_json(bytes(r[1])) for r in rows]

    # catalog ----------------------------------------------------------------------

    def save_service(self, service: str, events: frozenset[str], commands: frozenset[str]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO catalog (service, events, commands) VALUES (?, ?, ?)",
            (service, to_json(sorted(events)).decode(), to_json(sorted(commands)).decode()),
        )

    def forget(self, service: str, skip: set[int]) -> int:
        """Delete the messages spooled for ``service`` (but rows in ``skip``, out on a
        link) and its catalog entry; how many messages."""
        db = self.db
        rows = [r for (r,) in db.execute("SELECT row FROM spool WHERE service = ?", (service,)) if r not in skip]
        self.delete(rows)
        db.execute("DELETE FROM catalog WHERE service = ?", (service,))
        return len(rows)

    def load_catalog(self) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        out = {}
        for service, events, commands in self.db.execute("SELECT service, events, commands FROM catalog"):
            out[service] = (frozenset(from_json(events)), frozenset(from_json(commands)))
        return out
