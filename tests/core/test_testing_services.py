"""`pycomms.testing.unavailable` / `require_reachable`: skip locally, fail under CI."""

from __future__ import annotations

import socket

import pytest

from pycomms.testing import require_reachable, unavailable


def test_unavailable_skips_without_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no broker"):
        unavailable("no broker")


def test_unavailable_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no broker"):
        unavailable("no broker")


def test_require_reachable_hides_the_password_and_passes_a_listening_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        require_reachable(f"redis://:hunter2@127.0.0.1:{port}/0", 6379)
    with pytest.raises(pytest.fail.Exception) as info:
        require_reachable(f"redis://:hunter2@127.0.0.1:{port}/0", 6379)
    assert "hunter2" not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)
