"""``pycomms demo --url nats://...`` runs the shop demo to its summary (as a user runs it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from nats_support import drop_namespace, new_namespace, url_for

from pycomms.testing import scale

pytestmark = pytest.mark.timeout(180)


def test_the_demo_runs_on_nats() -> None:
    url = url_for(new_namespace())
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pycomms", "demo", "--url", url, "--orders", "6"],
            capture_output=True,
            text=True,
            timeout=120 * scale(),
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "summary" in done.stdout
        assert "dead letters   1 (billing)" in done.stdout
    finally:
        drop_namespace(url)
