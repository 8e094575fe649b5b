"""``pycomms run --workers N`` and ``--reload``, with real processes: every worker in
presence under its own name, a killed worker restarted with nothing lost, signals
forwarded for a graceful stop, a supervisor that gives up on workers that cannot start,
and a worker restarted when its code changes."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from pathlib import Path

from cli_support import CLI_TIMEOUT, backend_url, drop_namespace, fresh_namespace, pycomms, start

from pycomms import Command, Event, Service, connect
from pycomms.testing import Recorder, eventually, run_strict, scale, unavailable

JOBS = 300

APP = """
import asyncio
import importlib.util
import os

from pycomms import Command, Context, Event, Service


class Job(Command, name="workers.job"):
    n: int


class Done(Event, name="workers.done"):
    n: int
    pid: int


jobs = Service("jobs", concurrency=8)


@jobs.on
async def job(command: Job, ctx: Context) -> None:
    await asyncio.sleep(0.005)
    await ctx.publish(Done(n=command.n, pid=os.getpid()))
"""


class Job(Command, name="workers.job"):
    n: int


class Done(Event, name="workers.done"):
    n: int
    pid: int


async def read_until(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    """Read lines of ``stream`` into ``seen`` until one contains ``needle``."""
    async with asyncio.timeout(CLI_TIMEOUT * scale()):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"the output ended before {needle!r}:\n{''.join(seen)}")
            seen.append(line)
            if needle in line:
                return


def test_two_workers_a_killed_one_restarted_nothing_lost_then_a_graceful_stop(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP, encoding="utf-8")
    url = backend_url("redis", fresh_namespace(), tmp_path) + "&visibility_timeout=2"

    async def scenario() -> None:
        done = Recorder()
        collector = Service("collector")

        @collector.on
        async def on_done(event: Done) -> None:
            done.add(event.n, event.pid)

        async with connect(url, services=[collector]) as bus:
            proc = await start("run", f"{app}:jobs", "--workers", "2", "--url", url, "--grace", "5")
            assert proc.stderr is not None
            try:

                async def workers() -> dict[str, int]:
                    return {n.name: n.pid for n in await bus.nodes() if n.name.startswith("jobs-")}

                async def both_present() -> bool:
                    return set(await workers()) == {"jobs-w1", "jobs-w2"}

                await eventually(both_present, CLI_TIMEOUT, "both workers in presence")
                first = await workers()
                assert len(set(first.values())) == 2
                await bus.send(*(Job(n=n) for n in range(JOBS // 2)))
                await done.wait(JOBS // 4, 60)
                os.kill(first["jobs-w1"], signal.SIGKILL)  # mid-stream: it may hold jobs on lease
                await bus.send(*(Job(n=n) for n in range(JOBS // 2, JOBS)))

                async def restarted() -> bool:
                    now = await workers()
                    return now.get("jobs-w1") not in (None, first["jobs-w1"])

                await eventually(restarted, CLI_TIMEOUT, "worker 1 restarted, in presence again")
                await done.wait(JOBS, 120)  # jobs leased by the killed worker come back after 2 s
                assert set(done.counts) == set(range(JOBS)), "a job was lost"
                assert len(set(done.items)) >= 2, "one worker did all the work"

                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(CLI_TIMEOUT * scale()):
                    _, raw = await proc.communicate()
                err = raw.decode()
                assert proc.returncode == 0, err
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.communicate()
            assert "worker 1 exited with code -9" in err, err
            assert "restarting it in" in err
            assert err.count("stopped with exit code 0") == 2, err

            async def workers_gone() -> bool:
                return not await workers()

            await eventually(workers_gone, 10, "the workers' nodes gone from presence")

    try:
        run_strict(scenario, 300)
    finally:
        drop_namespace(url)


def test_workers_that_keep_failing_at_start_make_it_exit_non_zero(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('this module cannot be imported')\n", encoding="utf-8")

    async def scenario() -> None:
        result = await pycomms("run", f"{broken}:svc", "--workers", "2", "--url", "memory://workers")
        assert result.returncode == 1, result
        assert "failed at start 3 times in a row; giving up" in result.stderr, result
        assert "restarting it in 0.25s" in result.stderr, result  # the backoff, logged
        assert "restarting it in 0.50s" in result.stderr, result

    run_strict(scenario, 120)


def test_reload_restarts_the_worker_when_its_code_changes(tmp_path: Path) -> None:
    if importlib.util.find_spec("watchfiles") is None:
        unavailable("watchfiles is not installed (pip install 'pycomms-core[reload]')")
    code = tmp_path / "code"
    code.mkdir()
    app = code / "app.py"
    app.write_text(APP, encoding="utf-8")

    async def scenario() -> None:
        proc = await start("run", f"{app}:jobs", "--reload", "--reload-dir", str(code), "--url", "memory://reload")
        assert proc.stderr is not None
        seen: list[str] = []
        try:
            await read_until(proc.stderr, "is ready", seen)
            app.write_text(APP + "\n# changed\n", encoding="utf-8")
            await read_until(proc.stderr, "app.py changed; restarting the worker", seen)
            await read_until(proc.stderr, "is ready", seen)
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(CLI_TIMEOUT * scale()):
                _, err = await proc.communicate()
            seen.append(err.decode())
            assert proc.returncode == 0, "".join(seen)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
        assert "".join(seen).count("started: pid") == 2, "".join(seen)

    run_strict(scenario, 120)


def test_reload_without_watchfiles_names_the_extra_and_refuses_workers(tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "watchfiles.py").write_text("raise ImportError('watchfiles hidden by the test')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pycomms", *args, env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        return proc.returncode or 0, err.decode()

    async def scenario() -> None:
        code, err = await run("run", "nowhere:svc", "--reload")
        assert code == 1
        assert "pycomms-core[reload]" in err, err
        code, err = await run("run", "nowhere:svc", "--reload", "--workers", "2")
        assert code == 1
        assert "--reload runs one worker" in err, err

    run_strict(scenario, 60)
