"""``pycomms bench`` (the harness of bench/, as a CLI plugin) against every backend, at
smoke sizes: a check that every workload runs and counts every message, not a
measurement."""

from __future__ import annotations

import re

import pytest
from cli_support import pycomms

from pycomms.testing import run_strict

pytestmark = pytest.mark.timeout(300)


def test_bench_smoke(url: str) -> None:
    base = re.sub(r"namespace=[^&]*&?", "", url).rstrip("?&")  # the harness picks fresh namespaces

    async def scenario() -> None:
        result = await pycomms("bench", "--url", base, "--smoke", "--baselines", "none", "--workloads", "events")
        assert "OK: 1 of 1 runs succeeded" in result.ok().stdout

    run_strict(scenario, 240)
