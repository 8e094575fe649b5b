"""The conformance suite against ``tcp://`` (brokerless; buses find each other through
the same-host registry directory of their namespace)."""

from __future__ import annotations

import pytest

from pycomms.testing import ConformanceSuite


@pytest.fixture(autouse=True)
def private_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same-host discovery in a directory of this test's own, so that runs leave nothing
    behind in /tmp/pycomms-UID."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))


class TestTcp(ConformanceSuite):
    redelivery_timeout = 10.0

    def make_url(self, namespace: str) -> str:
        return f"tcp://127.0.0.1:0?namespace={namespace}"
