"""A private redis-server (AOF everysec) SIGKILLed twice and restarted while 20 tasks
publish 10,000 messages: no acknowledged publish is lost, consumers resume by themselves."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import redis
import redis.asyncio as aioredis
from redis_support import PrivateRedis, new_namespace, url_for

import pycomms
from pycomms import Command, PublishError, Service
from pycomms.testing import run_strict


class Numbered(Command, name="restart.numbered"):
    n: int


@pytest.mark.faults
def test_sigkill_twice_mid_stream_loses_no_acknowledged_publish(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="pycomms.redis")  # reconnect warnings are expected here
    namespace = new_namespace()
    url = url_for(namespace, base=private_redis.url, visibility_timeout=5)
    total, publishers = 10_000, 20

    async def scenario() -> None:
        handled: set[int] = set()
        acked: set[int] = set()
        caught_up = asyncio.Event()
        errors = 0
        svc = Service("counter", concurrency=64)

        @svc.on
        async def count(job: Numbered) -> None:
            handled.add(job.n)
            if len(acked) == total and acked <= handled:
                caught_up.set()

        async def publisher(bus: pycomms.Bus, first: int) -> None:
            nonlocal errors
            for n in range(first, total, publishers):
                while True:
                    try:
                        await bus.send(Numbered(n=n))
                        break
                    except PublishError:
                        errors += 1  # not acknowledged: sending it again is the caller's job
                        await asyncio.sleep(0.05)
                acked.add(n)
                for threshold, reached in thresholds.items():
                    if len(acked) >= threshold:
                        reached.set()

        kills: list[int] = []
        thresholds = {total // 4: asyncio.Event(), total * 3 // 5: asyncio.Event()}

        async def killer() -> None:
            for reached in thresholds.values():
                await reached.wait()
                private_redis.kill()
                kills.append(len(acked))
                await asyncio.sleep(0.3)
                await asyncio.to_thread(private_redis.start)

        async with pycomms.connect(url, services=[svc]), pycomms.connect(url) as pub:
            await asyncio.gather(killer(), *(publisher(pub, i) for i in range(publishers)))
            assert len(acked) == total
            assert len(kills) == 2, f"kills at {kills} acknowledged publishes"
            assert kills[-1] < total, f"kills at {kills} acknowledged publishes"
            if not acked <= handled:
                try:
                    async with asyncio.timeout(60):
                        await caught_up.wait()
                except TimeoutError:
                    pass
            lost = acked - handled
            print(
                f"\n[measured] kills after {kills} acks; {errors} PublishError(s) retried by the caller; "
                f"{len(handled)} distinct handled, {len(lost)} lost"
            )
            assert not lost, await _diagnose(private_redis, namespace, lost)

    run_strict(scenario, 150)


async def _diagnose(server: PrivateRedis, namespace: str, lost: set[int]) -> str:
    """Why messages were not handled: never stored (the server lost them) or stuck."""
    client = aioredis.Redis(port=server.port, socket_timeout=5)
    stream = f"pycomms:{{{namespace}}}:cmd:restart.numbered"
    try:
        stored: dict[int, bytes] = {}
        for entry_id, fields in await client.xrange(stream):
            stored[json.loads(fields[b"d"])["data"]["n"]] = entry_id
        in_stream = sorted(n for n in lost if n in stored)
        try:
            pending = await client.xpending_range(stream, "counter", "-", "+", 100000)
            groups = await client.xinfo_groups(stream)
        except redis.ResponseError as exc:
            pending, groups = [], [str(exc)]
        pending_ids = {p["message_id"]: p for p in pending}
        stuck = [pending_ids.get(stored[n]) for n in in_stream[:5]]
    finally:
        await client.aclose()
    log = (server.dir / "redis.log").read_text(errors="replace").splitlines()
    aof_lines = [line for line in log if "AOF" in line or "fsync" in line][-5:]
    return (
        f"{len(lost)} acknowledged publishes not handled, e.g. {sorted(lost)[:10]}; "
        f"{len(in_stream)} of them are in the stream (e.g. {in_stream[:5]}, pending: {stuck}); "
        f"groups: {groups}; server log: {aof_lines}"
    )
