"""Ephemeral services on Redis leave nothing behind: their consumer groups and streams
go when they close, and those of an observer whose node died are swept by another
node, so that they never hold back the trimming of the event streams."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from redis_support import REDIS_URL, url_for

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, eventually, run_strict


class Ping(Event, name="observers.ping"):
    n: int


pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]


def observer(rec: Recorder) -> Service:
    svc = Service("tail", ephemeral=True)

    @svc.on
    async def seen(msg: Ping) -> None:
        rec.add(msg.n)

    return svc


async def groups(client: aioredis.Redis, namespace: str) -> list[bytes]:
    info = await client.xinfo_groups(f"pycomms:{{{namespace}}}:ev:observers.ping")
    return [g["name"] for g in info]


def test_closing_an_ephemeral_service_removes_its_groups_and_streams(namespace: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        rec = Recorder()
        try:
            lasting = Service("keeper")
            lasting.on(Ping)(lambda msg: None)
            async with pycomms.connect(url_for(namespace), services=[lasting]) as pub:
                async with pycomms.connect(url_for(namespace), services=[observer(rec)]):
                    assert sorted(await groups(client, namespace)) == [b"keeper", b"tail"]
                    assert await client.hexists(f"pycomms:{{{namespace}}}:observers", "tail")
                    await pub.publish(Ping(n=1))
                    await rec.wait(1, 10)
                assert await groups(client, namespace) == [b"keeper"]
                assert not await client.exists(f"pycomms:{{{namespace}}}:svc:tail")
                assert not await client.hexists(f"pycomms:{{{namespace}}}:observers", "tail")
        finally:
            await client.aclose()

    run_strict(scenario, 30)


def test_the_groups_of_an_observer_whose_node_died_are_swept(namespace: str) -> None:
    """A group registered for a node with no presence key (as after SIGKILL) is removed
    by a live node's sweep within a few trim intervals."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        stream = f"pycomms:{{{namespace}}}:ev:observers.ping"
        try:
            await client.xgroup_create(stream, "orphan", id="$", mkstream=True)
            entry = {"node": "dead0000node", "events": ["observers.ping"]}
            await client.hset(f"pycomms:{{{namespace}}}:observers", "orphan", json.dumps(entry))
            async with pycomms.connect(url_for(namespace, trim_interval=0.2)):

                async def swept() -> bool:
                    return not await groups(client, namespace) and not await client.hlen(
                        f"pycomms:{{{namespace}}}:observers"
                    )

                await eventually(swept, 10, "the dead observer's group to be swept")
        finally:
            await client.aclose()

    run_strict(scenario, 30)
