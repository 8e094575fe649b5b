"""Translation of aio-pika / aiormq / socket errors into the PyComms exception tree."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from typing import TypeVar

import aio_pika.exceptions as amqp_exc
from yarl import URL

from pycomms import PyCommsError, spi

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    amqp_exc.AMQPError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)
"""What aio-pika and aiormq raise when a connection, channel or operation fails."""
SETTLE_ERRORS: tuple[type[BaseException], ...] = (PyCommsError, *DRIVER_ERRORS)
"""What a background operation (a settle, a heartbeat) logs instead of raising."""
QUIET_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *SETTLE_ERRORS)

E = TypeVar("E", bound=PyCommsError)


def map_amqp_errors(error: type[PyCommsError], what: str) -> AbstractContextManager[None]:
    """Raise ``error`` (from the driver's exception) if the block fails with a driver error."""
    return spi.map_errors(error, what, catch=DRIVER_ERRORS, describe=describe)


def describe(exc: BaseException) -> str:
    """A short description of a driver error, without any credentials in it."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, amqp_exc.AMQPConnectionError) and isinstance(exc.__cause__, OSError):
        return describe(exc.__cause__)  # aiormq's wrapper of a socket error says less than the error itself
    text = str(exc) or type(exc).__name__
    # aiormq puts the URL in some messages; it may contain a password.
    if "@" in text and "://" in text:
        text = type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def address(url: str) -> str:
    """``host:port`` of an ``amqp://`` or ``amqps://`` URL, for errors and logs (no
    credentials, no options)."""
    try:
        parsed = URL(url)
        host = parsed.host or "localhost"
        port = parsed.explicit_port or (5671 if parsed.scheme == "amqps" else 5672)
    except ValueError:
        return "<unparseable address>"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def timed_out(error: type[E], what: str, timeout: float, option: str, detail: str = "") -> E:
    """The error of an operation that passed its deadline: ``what`` names the backend,
    the operation and the address (e.g. ``amqp: publish to 127.0.0.1:5672``)."""
    return error(f"{what} timed out after {timeout}s ({option}){'; ' + detail if detail else ''}")
