"""Fixtures for the tcp backend tests (helpers live in tcp_helpers.py: conftest
modules of other test directories share the module name ``conftest``)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def namespace() -> str:
    """A fresh namespace: no other test's nodes can see this test's."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def private_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same-host discovery in a directory of this test's own (inherited by the worker
    processes it starts), so runs leave nothing behind in /tmp/pycomms-UID."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))
