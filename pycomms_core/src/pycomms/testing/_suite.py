"""The conformance suite: the semantics every backend must show, as pytest tests.

A backend runs it by subclassing `ConformanceSuite` and saying how to build a URL::

    from pycomms.testing import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        def make_url(self, namespace: str) -> str:
            return f"mybackend://localhost?namespace={namespace}"

Deliveries are counted strictly: a duplicate in these fault-free scenarios fails.
Scenarios that need a capability the transport does not declare are skipped with
that reason; override a scenario only with an explicit, reasoned ``pytest.skip``.
"""

from __future__ import annotations

from ._failures import FailureScenarios
from ._lifecycle import LifecycleScenarios
from ._presence import PresenceScenarios
from ._replies import ReplyScenarios
from ._routing import RoutingScenarios
from ._volume import VolumeScenarios


class ConformanceSuite(
    RoutingScenarios, ReplyScenarios, FailureScenarios, LifecycleScenarios, PresenceScenarios, VolumeScenarios
):
    """Subclass it, implement `make_url`, and pytest collects every scenario (one
    themed module each: routing, request/reply, failures and dead letters, lifecycle,
    presence, volume)."""
