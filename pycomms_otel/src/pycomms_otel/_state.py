"""Whether PyComms is instrumented, and with what: read by the plugin's hooks when a
bus is built. Imports nothing from OpenTelemetry, so that a process that never
instruments does not pay for loading it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._telemetry import Telemetry

current: list[Telemetry] = []
"""The active `Telemetry` (at most one), set by `PyCommsInstrumentor.instrument`."""


def active() -> Telemetry | None:
    return current[0] if current else None
