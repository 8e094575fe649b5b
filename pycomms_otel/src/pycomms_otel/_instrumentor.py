"""`PyCommsInstrumentor`: the OpenTelemetry instrumentor of PyComms."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import _state
from ._telemetry import Telemetry


class PyCommsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces and metrics of every bus connected after `instrument` (buses read the
    hooks when they are built), by the OpenTelemetry messaging conventions.

    ``instrument(tracer_provider=None, meter_provider=None)``: the global providers
    unless given. A bus built while both providers are no-op ones
    (`trace.NoOpTracerProvider`, `metrics.NoOpMeterProvider`), or the API's proxies
    with no SDK set up yet, is not wrapped at all. ``uninstrument()`` stops recording
    at once, also on buses already open (their wrappers then pass through).
    Registered under the ``opentelemetry_instrumentor`` entry point, so
    ``opentelemetry-instrument python app.py`` instruments PyComms too.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("pycomms-core >= 0.1.0",)

    def _instrument(self, **kwargs: Any) -> None:
        _state.current[:] = [Telemetry(kwargs.get("tracer_provider"), kwargs.get("meter_provider"))]

    def _uninstrument(self, **kwargs: Any) -> None:
        for telemetry in _state.current:
            telemetry.on = False
        _state.current.clear()
