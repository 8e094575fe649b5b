"""OpenTelemetry for PyComms: messaging traces and metrics, and a Prometheus endpoint
with health probes for ``pycomms run --metrics-port``.

    from pycomms_otel import PyCommsInstrumentor
    PyCommsInstrumentor().instrument()  # before pycomms.connect()

Importing this package does not import OpenTelemetry; `PyCommsInstrumentor` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._instrumentor import PyCommsInstrumentor

__all__ = ["PyCommsInstrumentor", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "PyCommsInstrumentor":
        from ._instrumentor import PyCommsInstrumentor

        return PyCommsInstrumentor
    raise AttributeError(f"module 'pycomms_otel' has no attribute {name!r}")
