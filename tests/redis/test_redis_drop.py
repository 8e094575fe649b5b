"""`drop_namespace()` on Redis: every key of the namespace goes (streams, groups, the
delayed set, dead letters, presence, replies, owners), nothing of another namespace."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis_support import PrivateRedis, drop_namespace, namespace_keys, new_namespace, url_for

import pycomms
from pycomms import Command, Event, Message, NamespaceInUse, Reject, Request, RetryLater, Service
from pycomms.testing import Recorder, eventually, run_strict


class Placed(Event, name="drop.placed"):
    n: int


class Charge(Command, name="drop.charge"):
    n: int


class Quote(Message, name="drop.quote"):
    n: int


class Ask(Request[Quote], name="drop.ask"):
    n: int


def _busy_service(rec: Recorder) -> Service:
    svc = Service("dropper", retry=pycomms.Retry(max_attempts=3, delay=600))

    @svc.on
    async def placed(event: Placed) -> None:
        rec.add(event.n)
        if event.n == 1:
            raise Reject("a dead letter")
        if event.n == 2:
            raise RetryLater(600)  # waits in the delayed set

    @svc.on
    async def charge(command: Charge) -> None:
        rec.add(100 + command.n)

    @svc.on
    async def ask(request: Ask) -> Quote:
        return Quote(n=request.n)

    return svc


def test_drop_removes_every_key_of_the_namespace_and_nothing_else() -> None:
    namespace = new_namespace()
    neighbour = namespace + "x"  # a longer name with the same start must survive
    url = url_for(namespace, aof_warning="false")

    async def scenario() -> None:
        rec = Recorder()
        async with pycomms.connect(url_for(neighbour, aof_warning="false")) as other:
            await other.send(Charge(n=0))  # its stream waits for a service that never comes
        async with pycomms.connect(url, services=[_busy_service(rec)]) as worker:
            await worker.publish(Placed(n=1), Placed(n=2), Placed(n=3))
            await worker.send(Charge(n=1))
            assert (await worker.request(Ask(n=5), timeout=10)).n == 5
            await rec.wait(4, 10)
            await eventually(lambda: _has_dead_letter(worker), 10, "a dead letter")
        client = await pycomms.connect(url)
        before = namespace_keys(namespace)
        kinds = {key.decode().split(":", 2)[2].split(":", 1)[0] for key in before}
        assert {"ev", "cmd", "svc", "dlq", "owners", "delayed", "nodes", "node", "reply"} <= kinds, kinds
        removed = await client.drop_namespace()
        assert client.closed
        print(f"\n[measured] drop_namespace removed {removed} key(s)")
        assert removed == len(before)
        assert namespace_keys(namespace) == []

    try:
        run_strict(scenario, 60)
        assert namespace_keys(neighbour) != []
    finally:
        drop_namespace(neighbour)


async def _has_dead_letter(bus: pycomms.Bus) -> bool:
    return len(await bus.dead_letters("dropper")) == 1


def test_drop_refuses_while_another_node_is_present(namespace: str) -> None:
    url = url_for(namespace, aof_warning="false")

    async def scenario() -> None:
        rec = Recorder()
        async with pycomms.connect(url, services=[_busy_service(rec)]) as worker:
            client = await pycomms.connect(url)
            with pytest.raises(NamespaceInUse, match=namespace):
                await client.drop_namespace()
            assert not client.closed
            await client.send(Charge(n=3))  # the refused drop left the client working
            await rec.wait(1, 10)
            assert worker.node.id in {n.id for n in await client.nodes()}
            assert await client.drop_namespace(force=True) > 0
            assert client.closed
            # The worker carries on: its receiver recreates the groups it lost.
            async with pycomms.connect(url) as again:
                await again.send(Charge(n=9))
                await rec.wait(2, 15)
            assert rec.items == [103, 109]

    run_strict(scenario, 60)


def test_a_failed_drop_keeps_the_node_announced(private_redis: PrivateRedis) -> None:
    """A drop the server refuses (a user without SCAN) raises `OperationError` naming the
    server's reason, leaves the bus open and its presence heartbeat running."""
    namespace = new_namespace()
    admin_url = private_redis.url
    url = url_for(namespace, base=f"redis://scanless:s3cret@127.0.0.1:{private_redis.port}/0", heartbeat=0.2)

    async def scenario() -> None:
        admin = aioredis.Redis.from_url(admin_url)
        await admin.acl_setuser(
            "scanless", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all", "-scan"]
        )
        client = await pycomms.connect(url)
        try:
            with pytest.raises(pycomms.OperationError, match=r"NoPermissionError: .*'scan'") as info:
                await client.drop_namespace()
            assert f"127.0.0.1:{private_redis.port}" in str(info.value)
            assert "s3cret" not in str(info.value)
            assert not client.closed
            node_key = f"pycomms:{{{namespace}}}:node:{client.node.id}"
            await admin.delete(node_key)
            await eventually(lambda: _exists(admin, node_key), 5, "the heartbeat to announce the node again")
        finally:
            await client.close()
            await admin.aclose()

    run_strict(scenario, 30)


async def _exists(client: aioredis.Redis, key: str) -> bool:
    return bool(await client.exists(key))
