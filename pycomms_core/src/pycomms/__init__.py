"""PyComms: typed messages between applications, over a backend chosen by configuration.

See the project README and docs/ for the guide; DESIGN.md for the contract.
"""

from __future__ import annotations

from ._bus import Bus, BusState
from ._connect import connect
from ._context import Context
from ._errors import (
    BackendNotFound,
    BusClosed,
    ConfigError,
    ConnectError,
    NamespaceInUse,
    OperationError,
    PublishError,
    PyCommsError,
    Reject,
    RemoteError,
    RequestTimeout,
    RetryLater,
)
from ._messages import Command, Event, Message, Request
from ._retry import Retry
from ._service import Service
from .hookspecs import hookimpl
from .spi import Capabilities, DeadLetter, NodeInfo

__version__ = "0.1.0"

__all__ = [
    "BackendNotFound",
    "Bus",
    "BusClosed",
    "BusState",
    "Capabilities",
    "Command",
    "ConfigError",
    "ConnectError",
    "Context",
    "DeadLetter",
    "Event",
    "Message",
    "NamespaceInUse",
    "NodeInfo",
    "OperationError",
    "PublishError",
    "PyCommsError",
    "Reject",
    "RemoteError",
    "Request",
    "RequestTimeout",
    "Retry",
    "RetryLater",
    "Service",
    "__version__",
    "connect",
    "hookimpl",
]
