"""``pycomms run --workers N`` with a worker that cannot stop: a handler that blocks its
event loop, so the forwarded SIGTERM is never handled. The supervisor kills it once its
``grace + CLOSE_BOUND + KILL_MARGIN`` has passed, not before; a second signal (after the
repeat window) kills it at once, whatever the grace."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from cli_support import CLI_TIMEOUT, backend_url, drop_namespace, fresh_namespace, start

from pycomms import Command, connect
from pycomms._supervisor import KILL_MARGIN, REPEAT_WINDOW
from pycomms.spi import CLOSE_BOUND
from pycomms.testing import eventually, run_strict, scale

APP = """
import os
import time
from pathlib import Path

from pycomms import Command, Service


class Stick(Command, name="stuck.stick"):
    n: int


jobs = Service("jobs")


@jobs.on
async def stick(command: Stick) -> None:
    Path({mark!r}).write_text(str(os.getpid()))
    time.sleep(3600)  # blocks the event loop: SIGTERM's handler never runs
"""


class Stick(Command, name="stuck.stick"):
    n: int


async def stuck_supervisor(
    tmp_path: Path, url: str, grace: float, pids: list[int]
) -> tuple[asyncio.subprocess.Process, int]:
    """A supervisor of two workers, one of them stuck in a handler: the process and the
    stuck worker's pid. The workers' pids are added to ``pids`` (for the clean-up)."""
    mark = tmp_path / "stuck.pid"
    app = tmp_path / "stuck_app.py"
    app.write_text(APP.format(mark=str(mark)), encoding="utf-8")
    proc = await start("run", f"{app}:jobs", "--workers", "2", "--url", url, "--grace", str(grace))
    try:
        async with connect(url) as bus:

            async def both_present() -> bool:
                nodes = {n.name: n.pid for n in await bus.nodes()}
                pids[:] = [pid for name, pid in nodes.items() if name in ("jobs-w1", "jobs-w2")]
                return len(pids) == 2

            await eventually(both_present, CLI_TIMEOUT, "both workers in presence")
            await bus.send(Stick(n=1))

        async def stuck_seen() -> bool:
            return mark.exists() and mark.read_text() != ""

        await eventually(stuck_seen, 60, "a worker stuck in its handler")
    except BaseException:
        proc.kill()
        await proc.communicate()
        raise
    return proc, int(mark.read_text())


def kill_left(pids: list[int]) -> None:
    """SIGKILL whichever of ``pids`` still runs (a failed test must not leave a stuck worker)."""
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def stop(proc: asyncio.subprocess.Process) -> str:
    """What the supervisor printed to stderr until it exited (killed after CLI_TIMEOUT)."""
    try:
        async with asyncio.timeout(CLI_TIMEOUT * scale()):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    return err.decode()


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_that_does_not_stop_is_killed_after_its_deadline_not_before(tmp_path: Path) -> None:
    grace = 1.0
    url = backend_url("redis", fresh_namespace(), tmp_path)
    pids: list[int] = []

    async def scenario() -> None:
        proc, stuck = await stuck_supervisor(tmp_path, url, grace, pids)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        err = await stop(proc)
        elapsed = time.monotonic() - signalled
        assert proc.returncode == 0, err
        assert "did not stop in time; killing it" in err, err
        assert f"(pid {stuck}) stopped with exit code -9" in err, err
        assert "stopped with exit code 0" in err, err  # the other worker closed gracefully
        assert elapsed >= grace + CLOSE_BOUND + KILL_MARGIN, f"killed after {elapsed:.1f}s, before its deadline"
        assert not pid_alive(stuck)

    try:
        run_strict(scenario, 240)
    finally:
        kill_left(pids)
        drop_namespace(url)


def test_a_second_signal_kills_the_workers_at_once(tmp_path: Path) -> None:
    grace = 120.0  # far longer than the test: only the second signal can end it in time
    url = backend_url("redis", fresh_namespace(), tmp_path)
    pids: list[int] = []

    async def scenario() -> None:
        proc, stuck = await stuck_supervisor(tmp_path, url, grace, pids)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(REPEAT_WINDOW * 1.5)  # a second signal, not the first one seen twice
        assert proc.returncode is None, "the supervisor stopped before the second signal"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        err = await stop(proc)
        elapsed = time.monotonic() - signalled
        assert "SIGTERM again; killing the workers now" in err, err
        assert f"(pid {stuck}) stopped with exit code -9" in err, err
        assert elapsed < grace / 2, f"the supervisor waited {elapsed:.1f}s after the second signal"
        assert not pid_alive(stuck)

    try:
        run_strict(scenario, 240)
    finally:
        kill_left(pids)
        drop_namespace(url)
