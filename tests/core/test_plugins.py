"""A plugin that fails to import is skipped with a warning: the other backends work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, logging
import pycomms

logging.basicConfig(level=logging.WARNING)

async def main() -> None:
    async with pycomms.connect("memory://still-works") as bus:
        print("nodes:", len(await bus.nodes()))

asyncio.run(main())
"""


def test_a_broken_plugin_does_not_take_down_other_backends(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist_info = site / "pycomms_broken-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pycomms-broken\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[pycomms]\nbroken = pycomms_broken_plugin\n")
    (site / "pycomms_broken_plugin.py").write_text("raise ImportError('a dependency is missing')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "nodes: 1" in proc.stdout
    assert "pycomms-broken failed to import and is skipped: a dependency is missing" in proc.stderr
