"""Translating driver and SQLAlchemy errors into PyComms errors, and retrying the
transient ones (deadlocks, serialization failures, SQLite's busy lock)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from pycomms import PyCommsError, spi

log = logging.getLogger("pycomms.sql")
T = TypeVar("T")

# PostgreSQL SQLSTATEs and MariaDB error numbers worth a second try.
_PG_TRANSIENT = frozenset({"40001", "40P01", "55P03"})
_MYSQL_TRANSIENT = frozenset({1205, 1213, 1020})
_ATTEMPTS = 8


def describe(exc: BaseException) -> str:
    """A one-line description without the SQL statement or its parameters."""
    orig = getattr(exc, "orig", None)
    inner = orig if orig is not None else exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    return (f"{type(inner).__name__}: {text}" if text else type(inner).__name__)[:500]


def is_transient(exc: BaseException) -> bool:
    """True for errors a repeat of the same transaction should get past.

    A lost connection is one: the transaction may have committed before the loss, so
    the repeat can store or claim twice, which at-least-once delivery allows."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True  # a connection that died in the pool (no pre-ping): try a fresh one
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _PG_TRANSIENT:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database is busy" in message or "deadlock" in message


async def retrying(operation: Callable[[], Awaitable[T]]) -> T:
    """Run ``operation`` (a whole transaction) again after transient errors."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await operation()
        except DBAPIError as exc:
            if attempt == _ATTEMPTS or not is_transient(exc):
                raise
            log.debug("transient database error, attempt %d: %s", attempt, describe(exc))
            await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
    raise AssertionError("unreachable")


def map_errors(error: type[PyCommsError], what: str) -> AbstractContextManager[None]:
    """Re-raise anything but PyComms errors and cancellation as ``error`` (``from`` it)."""
    return spi.map_errors(error, what, describe=describe)
