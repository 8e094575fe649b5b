"""Test prerequisites (a broker, a tool): skipped on a developer's machine when missing,
a failure under ``CI=true``, so that CI never counts a missing service as a pass."""

from __future__ import annotations

import os
import socket
from typing import NoReturn
from urllib.parse import urlsplit

import pytest


def unavailable(message: str) -> NoReturn:
    """Skip the test for ``message``, or fail it when ``$CI`` is ``true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_reachable(url: str, default_port: int, timeout: float = 3.0) -> None:
    """Call `unavailable` unless ``url``'s host accepts a TCP connection (password not shown)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=timeout):
            return
    except OSError:
        pass
    unavailable(f"{parts.scheme} is not reachable at {parts.netloc.rpartition('@')[2]}")
