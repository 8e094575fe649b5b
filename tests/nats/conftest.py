"""Fixtures of the NATS backend's own tests (helpers live in nats_support.py).

The CLI tests of tests/cli run here against ``nats://`` too (test_nats_cli.py), so
their helpers' folder is put on the path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats_support import NATS_URL, drop_namespace, new_namespace, url_for

from pycomms.testing import require_reachable

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))


@pytest.fixture(scope="session", autouse=True)
def shared_server() -> None:
    """The shared server must answer: skipped locally when it does not, failed under CI."""
    require_reachable(NATS_URL, 4222)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh namespace on the shared server, dropped after the test."""
    name = new_namespace()
    yield name
    drop_namespace(url_for(name))
