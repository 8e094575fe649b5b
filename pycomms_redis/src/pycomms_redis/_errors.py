"""Translating redis-py's exceptions into the PyComms tree, at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis import exceptions as rex

from pycomms import ConnectError, PublishError, PyCommsError

#: Errors after which the connection is gone or unusable and a retry may succeed.
TRANSIENT: tuple[type[BaseException], ...] = (rex.ConnectionError, rex.TimeoutError, OSError)


def is_nogroup(exc: BaseException) -> bool:
    """True for the server's "no such key or consumer group" error (stream or group lost)."""
    return isinstance(exc, rex.ResponseError) and str(exc).startswith("NOGROUP")


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def map_connect_errors(where: str) -> Iterator[None]:
    """Any driver error while connecting becomes `ConnectError`."""
    try:
        yield
    except rex.AuthenticationError as exc:
        raise ConnectError(f"redis {where}: authentication failed") from exc
    except (rex.RedisError, OSError) as exc:
        raise ConnectError(f"redis {where}: {describe(exc)}") from exc


@contextmanager
def map_publish_errors(where: str) -> Iterator[None]:
    """Any driver error while publishing becomes `PublishError`."""
    try:
        yield
    except (rex.RedisError, OSError) as exc:
        raise PublishError(f"redis {where}: {describe(exc)}") from exc


@contextmanager
def map_redis_errors(where: str) -> Iterator[None]:
    """Any other driver error becomes `PyCommsError`."""
    try:
        yield
    except (rex.RedisError, OSError) as exc:
        raise PyCommsError(f"redis {where}: {describe(exc)}") from exc
