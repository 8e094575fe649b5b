"""The command line, run as users run it: in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PYCOMMS = [sys.executable, "-m", "pycomms"]


def test_backends_lists_memory() -> None:
    out = subprocess.run([*PYCOMMS, "backends"], capture_output=True, text=True, check=True).stdout
    assert "memory://" in out
    assert "pycomms-core" in out


def test_demo_runs_and_accounts_for_every_order() -> None:
    proc = subprocess.run(
        [*PYCOMMS, "demo", "--url", "memory://demo", "--orders", "6"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "billing        5 handled" in proc.stdout
    assert "shipping       6 handled" in proc.stdout
    assert "dead letters   1 (billing)" in proc.stdout


def test_run_serves_until_sigterm_and_exits_cleanly(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import pycomms

            class Hello(pycomms.Event):
                name: str

            greeter = pycomms.Service("greeter")

            @greeter.on
            async def hello(event: Hello) -> None:
                print("hello", event.name, flush=True)
            """
        )
    )
    env = {**os.environ, "PYCOMMS_URL": "memory://cli"}
    proc = subprocess.Popen(
        [*PYCOMMS, "run", f"{app}:greeter"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        line = ""
        while "serving" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "serving greeter" in line
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "closing gracefully" in err
    assert "bus closed" in err


def test_run_with_a_bad_target_explains() -> None:
    proc = subprocess.run([*PYCOMMS, "run", "no_such_module_xyz:svc"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "cannot import 'no_such_module_xyz'" in proc.stderr


def test_bench_runs_the_harness_smoke() -> None:
    """``pycomms bench`` is the harness of bench/ (installed by the test set-up as the
    pycomms-bench plugin), every option passed through."""
    proc = subprocess.run(
        [*PYCOMMS, "bench", "--url", "memory://", "--smoke", "--baselines", "none", "--workloads", "events"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pycomms bench memory://: pycomms" in proc.stdout
    assert "OK: 1 of 1 runs succeeded" in proc.stdout
    usage = subprocess.run([*PYCOMMS, "bench", "-h"], capture_output=True, text=True, timeout=60).stdout
    assert usage.startswith("usage: pycomms bench")


def test_listen_refuses_commands_and_bad_counts() -> None:
    proc = subprocess.run(
        [*PYCOMMS, "listen", "pycomms.testing._messages:Job", "--url", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "listen tails events; pycomms.testing._messages:Job is a command" in proc.stderr
    proc = subprocess.run(
        [*PYCOMMS, "listen", "pycomms.testing._messages:Ping", "--count", "0", "--url", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "--count must be at least 1, got 0" in proc.stderr
