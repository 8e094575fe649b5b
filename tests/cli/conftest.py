"""Fixtures of the CLI tests (helpers live in cli_support.py): one URL per backend, in
a fresh namespace that is cleaned up after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import BACKENDS, backend_url, drop_namespace, fresh_namespace


@pytest.fixture(autouse=True)
def private_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """tcp:// same-host discovery in a directory of this test's own, inherited by the
    CLI processes, so nothing is left in /tmp/pycomms-UID and no other run is seen."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, tmp_path: Path) -> Iterator[str]:
    """``backend``'s URL with a fresh ``namespace=``."""
    url = backend_url(backend, fresh_namespace(), tmp_path)
    yield url
    drop_namespace(url)
