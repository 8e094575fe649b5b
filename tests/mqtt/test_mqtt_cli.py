"""The CLI on mqtt://: ``run`` a worker, ``nodes``, ``publish``, ``listen``, ``dlq ls``
and ``namespace drop``, each as its own process, as a user would type them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mqtt_support import url_of

MODULE = """
from pycomms import Event, Reject, Service

class Beep(Event, name="mqtt_cli.beep"):
    n: int

svc = Service("cli-svc")

@svc.on
async def beep(e: Beep) -> None:
    raise Reject("no thanks")
"""
PYCOMMS = [sys.executable, "-m", "pycomms"]


def test_cli_on_mqtt(namespace: str, tmp_path: Path) -> None:
    (tmp_path / "climsgs.py").write_text(MODULE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    url = url_of(namespace)

    def cli(*args: str) -> str:
        done = subprocess.run([*PYCOMMS, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    def wait_for(checks: str | tuple[str, ...], *args: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            out = cli(*args)
            if all(check in out for check in (checks if isinstance(checks, tuple) else (checks,))):
                return out
            if time.monotonic() > deadline:
                return out
            time.sleep(0.2)  # a separate process's state: polled, there is nothing to await

    worker = subprocess.Popen([*PYCOMMS, "run", "climsgs:svc", "--url", url], env=env, cwd=tmp_path)
    listener = subprocess.Popen(
        [*PYCOMMS, "listen", "--url", url, "climsgs:Beep"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        nodes = wait_for(("pycomms-listen", "cli-svc"), "nodes", "--url", url)  # two processes starting
        assert "cli-svc" in nodes, nodes
        assert "pycomms-listen" in nodes, nodes
        assert "accepted" in cli("publish", "--url", url, "climsgs:Beep", '{"n": 5}')
        letters = wait_for("rejected", "dlq", "ls", "cli-svc", "--url", url)
        assert "mqtt_cli.beep" in letters, letters
        assert "no thanks" in letters, letters
        assert listener.stdout is not None
        seen = ""
        deadline = time.monotonic() + 30
        while '{"n":5}' not in seen and time.monotonic() < deadline:
            seen += listener.stdout.readline()
        assert '{"n":5}' in seen, seen
    finally:
        for proc in (worker, listener):
            proc.terminate()
            proc.wait(30)
        if listener.stdout is not None:
            listener.stdout.close()
    assert worker.returncode == 0
