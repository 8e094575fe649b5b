"""The conformance suite against the in-process reference backend."""

from __future__ import annotations

from pycomms.testing import ConformanceSuite


class TestMemory(ConformanceSuite):
    redelivery_timeout = 5.0

    def make_url(self, namespace: str) -> str:
        return f"memory://conformance?namespace={namespace}"
