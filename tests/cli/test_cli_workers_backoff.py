"""The supervisor's restart backoff, over real worker processes: a worker that dies soon
after it was ready is restarted later each time (0.25 s, then 0.5 s, …), and one that was
ready for ``STABLE_AFTER`` seconds before it died starts a fresh series (0.25 s again).

The supervisor runs as ``pycomms run --workers 2`` in a process of its own, with only
``STABLE_AFTER`` set for the test (30 s in use); its workers are ordinary
``python -m pycomms`` processes that exit by themselves a few seconds after they start.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from cli_support import CLI_TIMEOUT, cli_env

from pycomms.testing import run_strict, scale

APP = """
import os
import threading

from pycomms import Event, Service


class Noop(Event, name="backoff.noop"):
    pass


svc = Service("backoff")


@svc.on(Noop)
async def noop(event: Noop) -> None:
    pass


# the worker dies by itself, ready or not (the supervisor tells the two apart)
threading.Timer(float(os.environ["BACKOFF_LIFE"]), os._exit, (3,)).start()
"""

SUPERVISOR = (
    "import sys; import pycomms._supervisor as s; s.STABLE_AFTER = float(sys.argv[1]); "
    "from pycomms._cli import main; raise SystemExit(main(sys.argv[2:]))"
)
RESTART = re.compile(r"worker 1 exited with code 3 after [\d.]+s; restarting it in ([\d.]+)s \(restart (\d+)\)")


async def restart_delays(app: Path, stable_after: float, life: float) -> list[str]:
    """The delays the supervisor logged before worker 1's first two restarts."""
    env = {**cli_env(None), "BACKOFF_LIFE": str(life)}
    args = ["run", f"{app}:svc", "--workers", "2", "--url", "memory://backoff", "--grace", "1"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUPERVISOR,
        str(stable_after),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    delays: list[str] = []
    try:
        async with asyncio.timeout(CLI_TIMEOUT * scale()):
            while len(delays) < 2:
                line = (await proc.stderr.readline()).decode()
                assert line, "the supervisor's output ended early:\n" + "".join(seen)
                seen.append(line)
                assert "failed at start" not in line, "a worker was not ready in time:\n" + "".join(seen)
                if found := RESTART.search(line):
                    delays.append(found.group(1))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(CLI_TIMEOUT * scale()):
            await proc.communicate()
    return delays


def test_a_worker_ready_long_enough_starts_a_fresh_backoff_and_a_quick_death_does_not(tmp_path: Path) -> None:
    app = tmp_path / "backoff_app.py"
    app.write_text(APP, encoding="utf-8")
    life = 6.0 * scale()  # seconds from a worker's start to its exit; it is ready well before

    async def scenario() -> None:
        stable, unstable = await asyncio.gather(
            restart_delays(app, stable_after=0.5, life=life),  # each worker lived past it: reset
            restart_delays(app, stable_after=3600.0, life=life),  # none did: the series goes on
        )
        assert stable == ["0.25", "0.25"], stable
        assert unstable == ["0.25", "0.50"], unstable

    run_strict(scenario, 3 * CLI_TIMEOUT)
