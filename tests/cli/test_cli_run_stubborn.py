"""``pycomms run`` with a handler that ignores its cancellation (it catches
``CancelledError`` and goes on): after SIGTERM the process still exits by itself, once
grace, the consumer's second and `CLOSE_BOUND` have passed, naming the task it
abandoned. (`asyncio.run` would wait for that task forever.)"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from cli_support import CLI_TIMEOUT, backend_url, drop_namespace, finish, fresh_namespace, start

from pycomms import Command, connect
from pycomms.spi import CLOSE_BOUND
from pycomms.testing import eventually, run_strict

APP = """
import asyncio
from pathlib import Path

from pycomms import Command, Service


class Hold(Command, name="stubborn.hold"):
    n: int


jobs = Service("jobs")


@jobs.on
async def hold(command: Hold) -> None:
    Path({mark!r}).write_text("held")
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # the bug under test: it goes on after its cancellation
"""


class Hold(Command, name="stubborn.hold"):
    n: int


def test_run_exits_when_a_handler_ignores_its_cancellation(tmp_path: Path) -> None:
    grace = 0.5
    url = backend_url("redis", fresh_namespace(), tmp_path)
    mark = tmp_path / "held"
    app = tmp_path / "stubborn_app.py"
    app.write_text(APP.format(mark=str(mark)), encoding="utf-8")

    async def scenario() -> None:
        proc = await start("run", f"{app}:jobs", "--url", url, "--grace", str(grace))
        try:
            async with connect(url) as bus:

                async def serving() -> bool:
                    return any(node.name == "jobs" for node in await bus.nodes())

                await eventually(serving, CLI_TIMEOUT, "the worker in presence")
                await bus.send(Hold(n=1))

            async def held() -> bool:
                return mark.exists()

            await eventually(held, 60, "the handler holding its message")
        except BaseException:
            proc.kill()
            await proc.communicate()
            raise
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        result = await finish(proc, ("run",))  # fails if it does not exit within CLI_TIMEOUT
        elapsed = time.monotonic() - signalled
        assert result.returncode == 0, result
        assert "1 handler(s) ignore cancellation; abandoning them" in result.stderr, result
        assert "abandoning them: pycomms:jobs:worker" in result.stderr, result
        assert elapsed >= grace + CLOSE_BOUND, f"exited after {elapsed:.1f}s: the handler was not given its bounds"

    try:
        run_strict(scenario, 240)
    finally:
        drop_namespace(url)
