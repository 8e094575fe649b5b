"""Whether PyComms is instrumented, and with what: read by the plugin's hooks when a
bus is built. Imports nothing from OpenTelemetry, so that a process that never
instruments does not pay for loading it."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._telemetry import Telemetry

current: list[Telemetry] = []
"""The active `Telemetry` (at most one), set by `PyCommsInstrumentor.instrument`."""


def active() -> Telemetry | None:
    return current[0] if current else None


class _Built(threading.local):
    transport: object = None


_built = _Built()


def built(transport: object) -> None:
    """Keep the transport `pycomms.connect` just built, for the bus it builds next
    in this thread (`take_built`, when the bus asks for its middleware)."""
    _built.transport = transport


def take_built() -> object:
    transport, _built.transport = _built.transport, None
    return transport
