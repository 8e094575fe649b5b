"""Translation of OS and socket errors into the PyComms exception tree."""

from __future__ import annotations

import contextlib
import sqlite3
import ssl
from collections.abc import Iterator

from pycomms import ConnectError, OperationError, PublishError, PyCommsError


@contextlib.contextmanager
def map_connect_errors(what: str) -> Iterator[None]:
    """Raise `ConnectError` for OS/TLS/SQLite errors while ``what`` happens."""
    try:
        yield
    except PyCommsError:
        raise
    except (OSError, ssl.SSLError, sqlite3.Error, TimeoutError) as exc:
        reason = str(exc) or "no answer in time"
        raise ConnectError(f"{what} failed: {type(exc).__name__}: {reason}") from None  # one clear line


@contextlib.contextmanager
def map_publish_errors(what: str) -> Iterator[None]:
    """Raise `PublishError` for OS/SQLite errors while ``what`` happens."""
    try:
        yield
    except PyCommsError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise PublishError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def map_errors(what: str) -> Iterator[None]:
    """Raise `PyCommsError` for OS/SQLite errors while ``what`` happens."""
    try:
        yield
    except PyCommsError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise PyCommsError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def map_operation_errors(what: str) -> Iterator[None]:
    """Raise `OperationError` for OS/SQLite errors while ``what`` happens."""
    try:
        yield
    except PyCommsError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise OperationError(f"tcp: {what} failed: {type(exc).__name__}: {exc}") from exc
