"""The conformance kit: the semantics every PyComms backend must show, as pytest tests.

A backend (ours or a third party's) runs the whole suite with::

    from pycomms.testing import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        def make_url(self, namespace: str) -> str:
            return f"mybackend://localhost?namespace={namespace}"
"""

from __future__ import annotations

from ._base import scenario
from ._runner import Recorder, eventually, run_strict, scale
from ._services import require_reachable, unavailable
from ._suite import ConformanceSuite

__all__ = [
    "ConformanceSuite",
    "Recorder",
    "eventually",
    "require_reachable",
    "run_strict",
    "scale",
    "scenario",
    "unavailable",
]
