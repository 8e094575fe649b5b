"""The conformance suite against ``tcp://`` (brokerless; buses find each other through
the same-host registry directory of their namespace)."""

from __future__ import annotations

from pycomms.testing import ConformanceSuite


class TestTcp(ConformanceSuite):
    redelivery_timeout = 10.0

    def make_url(self, namespace: str) -> str:
        return f"tcp://127.0.0.1:0?namespace={namespace}"
