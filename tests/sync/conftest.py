"""Fixtures of the blocking-API tests: one URL per cross-process backend, in a fresh
namespace dropped after the test, and no asyncio error logged by a bus's loop thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from sync_support import BACKENDS, backend_url, drop_namespace


@pytest.fixture(params=list(BACKENDS))
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    url = backend_url(str(request.param))
    yield url
    drop_namespace(url)


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = backend_url("redis")
    yield url
    drop_namespace(url)


@pytest.fixture(autouse=True)
def clean_loops(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A loop's complaints (a task destroyed while pending, an exception never retrieved)
    are logged by asyncio from the bus's thread: each one fails the test; so does a
    loop thread left running."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    complaints = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not complaints, complaints
    left = [t.name for t in threading.enumerate() if t.name.startswith("pycomms-sync-")]
    assert not left, f"loop threads left running: {left}"
