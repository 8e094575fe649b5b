"""A consumer process killed mid-handler: its message is redelivered and handled once more."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aio_pika
import pytest
from amqp_messages import Job
from amqp_support import AMQP_URL, url_for

import pycomms
from pycomms import Context, Service
from pycomms.testing import Recorder, run_strict, scale

WORKER = Path(__file__).with_name("amqp_worker.py")


async def queued(namespace: str, queue: str) -> int:
    """Messages ready in a queue (with no consumer, unacknowledged ones are back in it)."""
    async with await aio_pika.connect(AMQP_URL.split("?", 1)[0]) as conn:
        channel = await conn.channel()
        declared = await channel.declare_queue(f"pycomms.{namespace}.{queue}", passive=True)
        return declared.declaration_result.message_count or 0


@pytest.mark.faults
def test_consumer_killed_mid_handler_is_redelivered(namespace: str) -> None:
    async def scenario() -> None:
        url = url_for(namespace)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        worker = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), url, stdout=asyncio.subprocess.PIPE, env=env
        )
        assert worker.stdout is not None
        try:
            async with asyncio.timeout(30 * scale()):
                assert (await worker.stdout.readline()).strip() == b"ready"
            async with pycomms.connect(url) as client:
                await client.send(Job(n=7))
                async with asyncio.timeout(30 * scale()):
                    assert (await worker.stdout.readline()).strip() == b"started 7 1"
                worker.send_signal(signal.SIGKILL)
                await worker.wait()

                rec = Recorder()
                survivor = Service("victim")

                @survivor.on
                async def handle(job: Job, ctx: Context) -> None:
                    rec.add(job.n, (job.n, ctx.attempt))

                async with pycomms.connect(url, services=[survivor]):
                    await rec.wait(1, 30)
                assert rec.items == [(7, 2)], "handled once more, counted as attempt 2"
                assert await queued(namespace, "cmd.amqp_test.job") == 0, "no other copy left to deliver"
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()

    run_strict(scenario, 90)
