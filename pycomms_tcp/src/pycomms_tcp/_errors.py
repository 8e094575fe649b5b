"""Translation of OS, TLS and SQLite (spool) errors into the PyComms exception tree,
through `pycomms.spi.map_errors`."""

from __future__ import annotations

import sqlite3
import ssl
from contextlib import AbstractContextManager

from pycomms import ConnectError, OperationError, PublishError, PyCommsError, spi

_IO = (OSError, sqlite3.Error)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc) or 'no answer in time'}"


def map_connect_errors(what: str) -> AbstractContextManager[None]:
    """Raise `ConnectError` for OS/TLS/SQLite errors while ``what`` happens (one line)."""
    return spi.map_errors(ConnectError, what, catch=(*_IO, ssl.SSLError, TimeoutError), describe=_reason, chain=False)


def map_publish_errors(what: str) -> AbstractContextManager[None]:
    """Raise `PublishError` for OS/SQLite errors while ``what`` happens."""
    return spi.map_errors(PublishError, what, catch=_IO, describe=_reason)


def map_errors(what: str) -> AbstractContextManager[None]:
    """Raise `PyCommsError` for OS/SQLite errors while ``what`` happens."""
    return spi.map_errors(PyCommsError, what, catch=_IO, describe=_reason)


def map_operation_errors(what: str) -> AbstractContextManager[None]:
    """Raise `OperationError` for OS/SQLite errors while ``what`` happens."""
    return spi.map_errors(OperationError, f"tcp: {what}", catch=_IO, describe=_reason)
