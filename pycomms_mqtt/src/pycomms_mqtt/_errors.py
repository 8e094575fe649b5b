"""Translating aiomqtt / paho / socket errors into the PyComms tree, without secrets."""

from __future__ import annotations

import asyncio
import os
import ssl
from contextlib import AbstractContextManager
from urllib.parse import urlsplit

import aiomqtt

from pycomms import PyCommsError, spi

DRIVER_ERRORS: tuple[type[BaseException], ...] = (aiomqtt.MqttError, OSError, asyncio.TimeoutError, ValueError)
"""What aiomqtt and paho raise when a connection or an operation fails."""
QUIET_ERRORS: tuple[type[BaseException], ...] = (PyCommsError, *DRIVER_ERRORS)
"""What a background step (a settle, a heartbeat) logs instead of raising."""

TAKEN_OVER = 0x8E
"""MQTT 5 reason code: another connection took this client id's session."""


def map_mqtt_errors(error: type[PyCommsError], what: str, *, chain: bool = True) -> AbstractContextManager[None]:
    """Raise ``error`` (from the driver's exception) if the block fails with a driver error."""
    return spi.map_errors(error, what, catch=DRIVER_ERRORS, describe=describe, chain=chain)


def describe(exc: BaseException) -> str:
    """One line for a driver error; the system's words for an OS error behind it."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError):  # an OSError whose errno is the library's, not the system's
            return f"{type(seen).__name__}: {seen.args[-1] if seen.args else seen}"[:500]
        if isinstance(seen, OSError) and seen.errno:
            return f"{type(seen).__name__}: {os.strerror(seen.errno)}"
        seen = seen.__cause__ or seen.__context__
    text = str(exc) or type(exc).__name__
    if "@" in text and "://" in text:  # never a URL that may carry a password
        text = type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def reason_code(exc: BaseException | None) -> int | None:
    """The MQTT reason code behind a disconnection, if the driver gave one."""
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


def address(url: str) -> str:
    """``host:port`` of an ``mqtt://``/``mqtts://`` URL, for errors and logs (no credentials)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        return "<unparseable address>"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
