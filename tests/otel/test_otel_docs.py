"""The Python samples of docs/observability.md run, each on its own in a subprocess from
an empty directory, and print what the page says they print (the ``# ...`` lines that
end a block)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks() -> list[str]:
    return BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_samples() -> None:
    assert len(blocks()) >= 2


@pytest.mark.parametrize("index", range(len(blocks())))
def test_sample_runs_and_prints_what_the_page_says(index: int, tmp_path: Path) -> None:
    code = blocks()[index]
    expected = []
    for line in reversed(code.rstrip().splitlines()):
        if not line.startswith("# "):
            break
        expected.insert(0, line[2:])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYCOMMS_URL", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if expected:
        assert done.stdout.splitlines() == expected
