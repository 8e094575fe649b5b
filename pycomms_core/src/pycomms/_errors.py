"""The exception tree: every error PyComms raises derives from `PyCommsError`.

Backends translate driver exceptions at their boundary (``raise ... from exc``);
users never need to catch a driver's exception type.
"""

from __future__ import annotations


class PyCommsError(Exception):
    """Base class of every error raised by PyComms."""


class ConfigError(PyCommsError, ValueError):
    """A URL, option or configuration file is invalid."""


class BackendNotFound(PyCommsError):
    """No installed backend serves the URL's scheme."""


class ConnectError(PyCommsError):
    """The backend could not be reached or refused the connection."""


class PublishError(PyCommsError):
    """A message could not be handed to the backend (too large, refused, lost link)."""


class OperationError(PyCommsError):
    """A call to the backend other than connecting or publishing failed or passed its
    deadline: presence, dead-letter listing/replay/purge, dropping a namespace. The
    message names the backend, the host (never a secret) and the operation."""


class NamespaceInUse(OperationError):
    """`Bus.drop_namespace` refused: other nodes of the namespace are running."""


class RequestTimeout(PyCommsError, TimeoutError):
    """No reply arrived in time; also raised when nobody handles the request type."""


class RemoteError(PyCommsError):
    """The remote handler of a request failed for good.

    ``error_type`` is the dead-letter reason on the remote side (``failed``,
    ``rejected``, ``invalid``, ...) and ``reason`` the remote error text; the remote
    traceback is not carried over the wire.
    """

    def __init__(self, message: str, *, error_type: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.reason = reason


class BusClosed(PyCommsError):
    """The bus was closed; no further calls are accepted."""


class HandlerSignal(Exception):
    """Base of the exceptions a handler raises to steer delivery (not errors)."""


class Reject(HandlerSignal):
    """Raised by a handler: send the message straight to dead letters, no retries."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason


class RetryLater(HandlerSignal):
    """Raised by a handler: try this message again after ``delay`` seconds.

    It counts as an attempt; once ``max_attempts`` is reached the message is
    dead-lettered like any other failure.
    """

    def __init__(self, delay: float = 1.0) -> None:
        if delay < 0:
            raise ValueError(f"RetryLater delay must be >= 0 seconds, got {delay!r}")
        super().__init__(f"retry later in {delay}s")
        self.delay = delay
