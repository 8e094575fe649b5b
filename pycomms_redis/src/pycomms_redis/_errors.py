"""Classifying redis-py's exceptions (translated into the PyComms tree by `_deadline`)."""

from __future__ import annotations

import os

from redis import exceptions as rex

#: Errors after which the connection is gone or unusable and a retry may succeed.
TRANSIENT: tuple[type[BaseException], ...] = (rex.ConnectionError, rex.TimeoutError, OSError)


def is_nogroup(exc: BaseException) -> bool:
    """True for the server's "no such key or consumer group" error (stream or group lost)."""
    return isinstance(exc, rex.ResponseError) and str(exc).startswith("NOGROUP")


def describe(exc: BaseException) -> str:
    """``exc`` in one line, with the system's words for an OS error behind it (redis-py
    says only "Error 111 connecting to ...")."""
    text = f"{type(exc).__name__}: {exc}"
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno:
            reason = os.strerror(seen.errno)
            return text if reason in text else f"{text} ({reason})"
        seen = seen.__cause__ or seen.__context__
    return text
