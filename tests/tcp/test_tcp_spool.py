"""The sender-side spool: messages for a known service with no live instance wait
there, bounded by count and bytes (an error, never a drop), and survive a restart of
the sender with ``spool=DIR``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from tcp_helpers import scale
from tcp_worker import Job

import pycomms
from pycomms import Service
from pycomms.testing import eventually, run_strict

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]


def recording(seen: list[int], arrived: asyncio.Event, total: int) -> Service:
    svc = Service("work")

    @svc.on
    async def job(msg: Job) -> None:
        nonlocal total
        seen.append(msg.n)
        if len(seen) >= total:
            arrived.set()
            total += 1

    return svc


def gated(gate: asyncio.Event, seen: list[int], all_in: asyncio.Event, total: int) -> Service:
    """A slow service (concurrency 2): its handlers wait for ``gate``, so its window fills."""
    svc = Service("work", concurrency=2)

    @svc.on
    async def job(msg: Job) -> None:
        await gate.wait()
        seen.append(msg.n)
        if len(seen) == total:
            all_in.set()

    return svc


def test_spool_count_bound_is_an_error_not_a_drop(namespace: str) -> None:
    url = f"tcp://127.0.0.1:0?namespace={namespace}"

    async def scenario() -> None:
        seen: list[int] = []
        arrived = asyncio.Event()
        async with pycomms.connect(url, spool_max_messages=5) as pub:
            async with pycomms.connect(url, services=[recording(seen, arrived, 5)]):
                pass  # the service is known now, and down
            await pub.send(*(Job(n=i) for i in range(3)))
            with pytest.raises(pycomms.PublishError, match="spool_max_messages=5"):
                await pub.send(Job(n=3), Job(n=4), Job(n=5))  # would pass the bound: none is stored
            await pub.send(Job(n=3), Job(n=4))
            with pytest.raises(pycomms.PublishError, match="spool full"):
                await pub.send(Job(n=99))
            async with pycomms.connect(url, services=[recording(seen, arrived, 5)]):
                async with asyncio.timeout(20 * scale()):
                    await arrived.wait()
                async with asyncio.timeout(20 * scale()):
                    while True:  # room again once the drained messages are acked (no event to await)
                        try:
                            await pub.send(Job(n=6))
                            break
                        except pycomms.PublishError:
                            await asyncio.sleep(0.02)
                arrived.clear()
                async with asyncio.timeout(20 * scale()):
                    await arrived.wait()
        assert sorted(seen) == [0, 1, 2, 3, 4, 6]

    run_strict(scenario, 90)


def test_spool_byte_bound(namespace: str) -> None:
    url = f"tcp://127.0.0.1:0?namespace={namespace}"

    async def scenario() -> None:
        async with pycomms.connect(url, spool_max_bytes=2048) as pub:
            async with pycomms.connect(url, services=[recording([], asyncio.Event(), 1)]):
                pass
            stored, error = 0, ""
            while stored < 100 and not error:
                try:
                    await pub.send(Job(n=stored))
                    stored += 1
                except pycomms.PublishError as exc:
                    error = str(exc)
            assert "spool_max_bytes=2048" in error
            assert 5 <= stored < 100, f"{stored} messages of ~280 bytes fit in 2048 bytes?"

    run_strict(scenario, 90)


def test_spool_dir_survives_a_sender_restart(namespace: str, tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:0?namespace={namespace}&spool={tmp_path}"
    plain = f"tcp://127.0.0.1:0?namespace={namespace}"

    async def scenario() -> None:
        seen: list[int] = []
        arrived = asyncio.Event()
        async with pycomms.connect(url) as pub:
            async with pycomms.connect(plain, services=[recording(seen, arrived, 10)]):
                pass
            await pub.send(*(Job(n=i) for i in range(10)))
        assert (tmp_path / "pycomms-spool.sqlite3").exists()
        async with pycomms.connect(url), pycomms.connect(plain, services=[recording(seen, arrived, 10)]):
            async with asyncio.timeout(20 * scale()):
                await arrived.wait()
        assert sorted(seen) == list(range(10))

    run_strict(scenario, 90)


def test_closing_sender_hands_its_spool_to_a_peer(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    """With the default in-memory spool, a sender that exits gives what it spooled to
    another node, so a message for a down service outlives a short-lived publisher."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"
    caplog.set_level(logging.INFO, logger="pycomms.tcp")

    async def scenario() -> None:
        seen: list[int] = []
        arrived = asyncio.Event()
        async with pycomms.connect(url):  # a bystander that stays up
            async with pycomms.connect(url, services=[recording(seen, arrived, 5)]):
                pass
            async with pycomms.connect(url) as short_lived:
                await short_lived.send(*(Job(n=i) for i in range(5)))
            async with pycomms.connect(url, services=[recording(seen, arrived, 5)]):
                async with asyncio.timeout(20 * scale()):
                    await arrived.wait()
        assert sorted(seen) == list(range(5))

    run_strict(scenario, 90)
    assert "handed 5 spooled message(s)" in caplog.text


def test_window_then_spool_bound_push_back_on_a_slow_service(namespace: str) -> None:
    """A sender keeps at most ``window`` unacked messages at an instance; with
    ``window_wait=0`` more go straight to its spool; past the spool's bound the caller
    gets an error. Memory stays bounded on both sides, and everything accepted is
    handled exactly once."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"
    gate, all_in = asyncio.Event(), asyncio.Event()
    seen: list[int] = []
    svc = gated(gate, seen, all_in, 15)

    async def scenario() -> None:
        async with (
            pycomms.connect(url, services=[svc]),
            pycomms.connect(url, window=5, window_wait=0, spool_max_messages=10) as pub,
        ):
            await pub.send(*(Job(n=i) for i in range(5)))  # the window: out on the link
            await pub.send(*(Job(n=i) for i in range(5, 15)))  # the spool: full now
            with pytest.raises(pycomms.PublishError, match="spool full"):
                await pub.send(Job(n=99))
            gate.set()
            async with asyncio.timeout(20 * scale()):
                await all_in.wait()
        assert sorted(seen) == list(range(15))

    run_strict(scenario, 90)


def test_a_full_window_makes_publishers_wait_for_room(namespace: str) -> None:
    """With every instance's window full, ``send()`` waits for acks to free room
    (back-pressure) instead of spooling; it returns once the consumer catches up, and
    nothing went through the spool."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"
    gate, all_in = asyncio.Event(), asyncio.Event()
    seen: list[int] = []
    svc = gated(gate, seen, all_in, 12)

    async def scenario() -> None:
        async with (
            pycomms.connect(url, services=[svc]),
            pycomms.connect(url, window=8, window_wait=60, spool_max_messages=1) as pub,
        ):
            await pub.send(*(Job(n=i) for i in range(8)))  # fills the window
            blocked = asyncio.create_task(pub.send(*(Job(n=i) for i in range(8, 12))))
            await asyncio.sleep(0.3)
            assert not blocked.done(), "send() returned although the window was full"
            gate.set()  # acks free room: the send goes out on the link, not to the 1-message spool
            async with asyncio.timeout(20 * scale()):
                await blocked
                await all_in.wait()
        assert sorted(seen) == list(range(12))

    run_strict(scenario, 60)


def test_keyed_messages_keep_their_order_through_the_spool(namespace: str) -> None:
    """Messages with one key from one sender, spooled while the service was down, then
    more sent while the spool drains: the service (concurrency 1) sees them in order."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"
    seen: list[int] = []
    all_in = asyncio.Event()

    def make() -> Service:
        svc = Service("ordered", concurrency=1)

        @svc.on
        async def job(msg: Job) -> None:
            seen.append(msg.n)
            if len(seen) == 400:
                all_in.set()

        return svc

    async def scenario() -> None:
        async with pycomms.connect(url) as pub:
            async with pycomms.connect(url, services=[make()]):
                pass
            for i in range(200):
                await pub.send(Job(n=i), key="k")
            async with pycomms.connect(url, services=[make()]):
                for i in range(200, 400):
                    await pub.send(Job(n=i), key="k")
                async with asyncio.timeout(30 * scale()):
                    await all_in.wait()
        assert seen == list(range(400))

    run_strict(scenario, 60)


def test_dead_letters_outlive_the_node_that_made_them(namespace: str) -> None:
    """With the in-memory store, a closing node hands its dead letters to a peer: they
    can still be listed and replayed after the failing instance is gone."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"
    handled: list[int] = []
    replayed = asyncio.Event()

    def make(broken: bool) -> Service:
        svc = Service("work")

        @svc.on
        async def job(msg: Job) -> None:
            if broken:
                raise pycomms.Reject("not today")
            handled.append(msg.n)
            replayed.set()

        return svc

    async def scenario() -> None:
        async with pycomms.connect(url) as bystander:
            async with pycomms.connect(url, services=[make(broken=True)]) as worker:
                await bystander.send(Job(n=1))

                async def dead() -> bool:
                    return len(await worker.dead_letters("work")) == 1

                await eventually(dead, 10, "the dead letter")
            [letter] = await bystander.dead_letters("work")
            assert (letter.reason, letter.error, letter.body["n"]) == ("rejected", "not today", 1)
            async with pycomms.connect(url, services=[make(broken=False)]):
                assert await bystander.replay("work") == 1
                async with asyncio.timeout(10 * scale()):
                    await replayed.wait()
            assert await bystander.dead_letters("work") == []
        assert handled == [1]

    run_strict(scenario, 60)


def test_a_peer_that_does_not_answer_fails_the_dead_letter_call(namespace: str) -> None:
    """Dead letters live at the node that made them: a listing, replay or purge that a
    peer did not answer within operation_timeout raises, naming it, instead of looking
    complete."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"
    svc = Service("work")

    @svc.on
    async def job(msg: Job) -> None:
        raise pycomms.Reject("not today")

    async def scenario() -> None:
        async with (
            pycomms.connect(url, operation_timeout=0.5) as asker,
            pycomms.connect(url, services=[svc]) as keeper,
        ):
            await asker.send(Job(n=1))

            async def dead() -> bool:
                return len(await asker.dead_letters("work")) == 1

            await eventually(dead, 10, "the dead letter, listed from the other node")
            keeper._transport._dead_letters.answer = lambda conn, body: None  # type: ignore[attr-defined]
            loop = asyncio.get_running_loop()
            for call in (asker.dead_letters("work"), asker.replay("work"), asker.purge("work")):
                started = loop.time()
                with pytest.raises(pycomms.OperationError, match=f"node {keeper.node.id} at 127.0.0.1:[0-9]+ did not "):
                    await call
                assert loop.time() - started < 0.5 + 2 * scale()
            assert len(await keeper.dead_letters("work")) == 1  # nothing was taken

    run_strict(scenario, 60)


def test_a_node_closing_during_a_dead_letter_call_is_asked_no_more(namespace: str) -> None:
    """A node that closes while a listing or purge is asking it hands its letters over
    and says BYE: the call asks again and is complete, neither failing nor missing nor
    doubling the letters in transit (it failed with "left while answering" when
    `pycomms dlq ls` processes ran side by side). Round k starts the listing k loop
    steps after the close began (or before it, for k < 0), walking it through every
    stage of the close: settling, hand-over, BYE."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"

    def broken() -> Service:
        svc = Service("work")

        @svc.on
        async def job(msg: Job) -> None:
            raise pycomms.Reject("not today")

        return svc

    async def steps(count: int) -> None:
        for _ in range(count):
            await asyncio.sleep(0)

    async def holding(bus: pycomms.Bus, count: int) -> None:
        async def enough() -> bool:
            return len(await bus.dead_letters("work")) == count

        await eventually(enough, 10, f"{count} dead letter(s)")

    async def scenario() -> None:
        async with pycomms.connect(url) as asker, pycomms.connect(url) as holder:
            made: list[str] = []
            for k in range(-4, 40):
                keeper = await pycomms.connect(url, services=[broken()])
                try:
                    await asker.send(Job(n=k))
                    await holding(keeper, len(made) + 1)
                    made = [letter.id for letter in await keeper.dead_letters("work")]
                finally:
                    closing = asyncio.ensure_future(keeper.close())
                    if k < 0:
                        listing = asyncio.ensure_future(asker.dead_letters("work"))
                        await steps(-k)
                    else:
                        await steps(k)
                        listing = asyncio.ensure_future(asker.dead_letters("work"))
                    await closing
                listed = [letter.id for letter in await listing]
                assert sorted(listed) == sorted(made), f"round {k}: listed {len(listed)} of {len(made)}"
            assert sorted(letter.id for letter in await holder.dead_letters("work")) == sorted(made)
            leaving = await pycomms.connect(url)  # a node with nothing to hand over, like a CLI process
            for k in range(8):
                closing = asyncio.ensure_future(leaving.close())
                await steps(k)
                listing = asyncio.ensure_future(asker.dead_letters("work"))
                await closing
                assert len(await listing) == len(made), f"a leaving client, step {k}"
                leaving = await pycomms.connect(url)
            purge = asyncio.ensure_future(asker.purge("work"))
            await leaving.close()
            assert await purge == len(made)
            assert await asker.dead_letters("work") == []

    run_strict(scenario, 120)
