"""Every Python sample in the README and the core's docs runs, and so do the examples.

A ```python block is run on its own, in a subprocess, from an empty directory and with
``$PYCOMMS_URL`` unset, so it cannot lean on the blocks around it or on the developer's
configuration. A block that must not run (it needs a broker, say) is marked with
``<!-- no-run -->`` on the line just before its fence; keep those rare.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycomms.testing import unavailable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# The pages whose samples this test owns; the backend pages, the TCP protocol and the
# figures are tested by their own authors.
PAGES = (
    "README.md",
    "docs/index.md",
    "docs/concepts.md",
    "docs/api.md",
    "docs/wire-format.md",
    "docs/write-a-backend.md",
    "docs/services.md",
    "docs/operations.md",
)
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^(```+|~~~+)\s*(\S*)")
TIMEOUT = 60.0 * float(os.environ.get("PYCOMMS_TEST_TIMEOUT_SCALE", "1"))


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    code: str
    run: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def python_blocks(page: str) -> list[Block]:
    """The ```python blocks of ``page``, with the line of their opening fence."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, lang = match.groups()
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        if lang in ("python", "py"):
            marked = i > 0 and lines[i - 1].strip() == NO_RUN
            blocks.append(Block(page, i + 1, "\n".join(lines[i + 1 : end]) + "\n", run=not marked))
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in PAGES if (ROOT / page).is_file() for block in python_blocks(page)]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYCOMMS_URL"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_every_page_exists() -> None:
    missing = [page for page in PAGES if not (ROOT / page).is_file()]
    assert not missing, f"pages missing: {missing}"


def test_no_run_marks_are_rare() -> None:
    blocks = all_blocks()
    skipped = [block.id for block in blocks if not block.run]
    assert len(blocks) >= 20, f"expected the docs to have samples, found {len(blocks)}"
    assert len(skipped) <= max(3, len(blocks) // 10), f"too many samples marked no-run: {skipped}"


@pytest.mark.parametrize("block", [b for b in all_blocks() if b.run], ids=lambda b: b.id)
def test_sample_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "sample.py"
    script.write_text(block.code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{block.id} failed:\n{proc.stdout}\n{proc.stderr}"


def run_example(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_quickstart_example(tmp_path: Path) -> None:
    proc = run_example(str(EXAMPLES / "quickstart.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "charging 9.5" in proc.stdout
    assert "price: 999 cents" in proc.stdout


def test_client_and_worker_in_one_process_over_memory(tmp_path: Path) -> None:
    """memory:// does not cross processes, so the client serves the greeter itself."""
    proc = run_example(str(EXAMPLES / "client.py"), "--url", "memory://docs", "Ada", "Grace", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Hello, Ada! (greeting #1)" in proc.stdout
    assert "Hello, Grace! (greeting #2)" in proc.stdout
    assert "greeter:" in proc.stdout  # the presence listing


def test_worker_runs_under_pycomms_run_until_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pycomms", "run", f"{EXAMPLES / 'worker.py'}:greeter", "--url", "memory://docs"]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            deadline = time.monotonic() + TIMEOUT
            line = ""
            while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
                line = proc.stderr.readline()
            assert "serving greeter on memory://docs" in line, line
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err
            assert "closing gracefully" in err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("backend", ["tcp", "sqlite"])
def test_client_and_worker_across_processes(tmp_path: Path, backend: str) -> None:
    """The pair as the docs tell users to run it, in two processes: over the default
    (``tcp://``, no URL given at all) and over a SQLite file."""
    for package in ("pycomms_tcp", *(["pycomms_sql"] if backend == "sqlite" else [])):
        if importlib.util.find_spec(package) is None:
            unavailable(f"{package} is not installed")
    url_args = [] if backend == "tcp" else ["--url", f"sqlite:///{tmp_path / 'greeter.db'}"]
    command = [sys.executable, "-m", "pycomms", "run", f"{EXAMPLES / 'worker.py'}:greeter", *url_args]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as worker:
        try:
            client = run_example(str(EXAMPLES / "client.py"), *url_args, "--timeout", "30", "Ada", cwd=tmp_path)
            assert client.returncode == 0, client.stdout + client.stderr
            assert "Hello, Ada! (greeting #1)" in client.stdout
            assert "serving the greeter in this process" not in client.stdout
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=TIMEOUT)
            assert worker.returncode == 0, err
            assert "greeting Ada" in out
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
