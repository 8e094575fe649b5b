"""Translation of aio-pika / aiormq / socket errors into the PyComms exception tree."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aio_pika.exceptions as amqp_exc

from pycomms import PyCommsError

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


@contextmanager
def map_amqp_errors(error: type[PyCommsError], what: str) -> Iterator[None]:
    """Raise ``error`` (from the driver's exception) if the block fails with a driver error."""
    try:
        yield
    except PyCommsError:
        raise
    except DRIVER_ERRORS as exc:
        raise error(f"{what}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """A short description of a driver error, without any credentials in it."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    # aiormq puts the URL in some messages; it may contain a password.
    if "@" in text and "://" in text:
        text = type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
