"""Faults as tests: a consumer process killed with SIGKILL mid-handler."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from sql_helpers import with_options
from sql_worker import Job

import pycomms
from pycomms import Context, Service
from pycomms.testing import Recorder, eventually, run_strict, scale

WORKER = Path(__file__).with_name("sql_worker.py")
pytestmark = pytest.mark.faults


async def _start_worker(url: str, service: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), url, service, stdout=asyncio.subprocess.PIPE, env={**os.environ}
    )
    line = await _expect(proc, "ready")
    return proc, line.split()[1]


async def _expect(proc: asyncio.subprocess.Process, prefix: str) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(30 * scale()):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError(f"worker exited before printing {prefix!r}")
            line = raw.decode().strip()
            if line.startswith(prefix):
                return line


def test_sigkill_mid_handler_redelivers_once_after_the_lease(url: str) -> None:
    async def main() -> None:
        worker_url = with_options(url, visibility_timeout=2.0, heartbeat=0.5)
        rec = Recorder()
        svc = Service("workers")

        @svc.on
        async def handle(job: Job, ctx: Context) -> None:
            rec.add((job.n, ctx.attempt), time.monotonic())

        async with pycomms.connect(worker_url) as pub:
            proc, node_id = await _start_worker(worker_url, "workers")
            try:
                await pub.send(Job(n=1, hang=True))
                assert await _expect(proc, "started") == "started 1 1"
                proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

            async def gone() -> bool:
                return all(n.id != node_id for n in await pub.nodes())

            await eventually(gone, 3 * 0.5 + 2.0, "the killed node to leave nodes() within 3 heartbeats")
            async with pycomms.connect(worker_url, services=[svc]):
                await rec.wait(1, 30)
                await pub.send(Job(n=2))  # a marker behind it: the queue holds nothing else
                await rec.wait(2, 30)
        rec.assert_exactly_once([(1, 2), (2, 1)])
        redelivered_after = rec.items[0] - killed
        # The lease was last renewed at most a third of 2 s before the kill.
        assert redelivered_after >= 1.0, f"redelivered {redelivered_after:.2f}s after the kill, inside the lease"

    run_strict(main, 90)
