"""Nothing acknowledged is lost: a join whose seed is down or flooded, messages a
closing node still holds (counted, or kept on disk), dead letters too large for one
listing page, and dropping a namespace."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
from tcp_helpers import free_port, scale
from tcp_rawpeer import RawPeer
from tcp_worker import Job

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, eventually, run_strict
from pycomms_tcp._frames import Frame, json_frame

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(90)]
EVENTS = 150


class Noted(Event, name="tcptest.noted"):
    n: int
    text: str = ""


def noting(rec: Recorder, name: str = "notes") -> Service:
    svc = Service(name)

    @svc.on
    async def noted(event: Noted) -> None:
        rec.add(event.n)

    return svc


def test_events_published_while_the_seed_is_down_are_delivered_once_it_is_up(namespace: str) -> None:
    """The publisher cannot know who wants its events before it has talked to anyone:
    it keeps them (counted as unsent if it closed now) and delivers them once linked."""
    port = free_port()
    publisher_url = f"tcp://127.0.0.1:0?namespace={namespace}&discovery=off&seeds=127.0.0.1:{port}"
    seed_url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"

    async def scenario() -> None:
        rec = Recorder()
        async with pycomms.connect(publisher_url) as publisher:
            await publisher.publish(*(Noted(n=i) for i in range(EVENTS)))
            assert publisher._transport._outbox.unsent() == EVENTS  # type: ignore[attr-defined]
            async with pycomms.connect(seed_url, services=[noting(rec)]):
                await rec.wait(EVENTS, 20)
        assert publisher.unsent == 0
        rec.assert_exactly_once(range(EVENTS))

    run_strict(scenario, 90)


def test_a_seed_flooded_with_idle_connections_still_takes_a_real_peer(namespace: str) -> None:
    """40 idle unauthenticated sockets from this host (the cap of unfinished handshakes
    per address is 16) do not lock a peer on the same address out."""
    port = free_port()
    seed_url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"
    publisher_url = f"tcp://127.0.0.1:0?namespace={namespace}&discovery=off&seeds=127.0.0.1:{port}"

    async def scenario() -> None:
        rec = Recorder()
        async with pycomms.connect(seed_url, services=[noting(rec)]) as seed:
            flood = [await RawPeer.connect("127.0.0.1", port) for _ in range(40)]
            try:
                async with pycomms.connect(publisher_url) as publisher:
                    assert publisher.node.id in {n.id for n in await seed.nodes()}
                    await publisher.publish(*(Noted(n=i) for i in range(EVENTS)))
                    await rec.wait(EVENTS, 20)
            finally:
                for peer in flood:
                    await peer.close()
        rec.assert_exactly_once(range(EVENTS))

    run_strict(scenario, 90)


def test_messages_a_closing_node_still_holds_are_counted(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    """send() with no peer at all, and events published before any seed answered, are
    held in memory: at close they are counted in Bus.unsent and in the log line."""
    caplog.set_level(logging.WARNING, "pycomms.tcp")
    alone = f"tcp://127.0.0.1:0?namespace={namespace}&discovery=off"
    seeded = f"{alone}&seeds=127.0.0.1:{free_port()}"

    async def scenario() -> None:
        async with pycomms.connect(alone) as bus:
            await bus.send(*(Job(n=i) for i in range(7)))
        assert bus.unsent == 7
        assert "closing with 7 message(s) accepted and not delivered" in caplog.text
        async with pycomms.connect(seeded) as bus:
            await bus.publish(*(Noted(n=i) for i in range(5)))
        assert bus.unsent == 5

    run_strict(scenario, 60)


def test_a_registry_entry_nobody_listens_at_does_not_hold_events(namespace: str) -> None:
    """An entry left by a node whose pid lives on (reused) but whose port is closed is
    stale: the node is alone, so an event nobody handles is not held for anyone; it is
    counted at close as not delivered (`Bus.unsent`, what ``pycomms publish`` reports)."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"

    async def scenario() -> None:
        async with pycomms.connect(url) as first:
            nodes = first._transport._links.registry.directory / "nodes"  # type: ignore[attr-defined]
        nodes.mkdir(parents=True, exist_ok=True)
        entry = {"id": "ghost", "host": "127.0.0.1", "port": free_port(), "pid": os.getpid()}
        (nodes / "ghost.json").write_text(json.dumps(entry))
        async with pycomms.connect(url) as bus:
            assert bus._transport.catalog_complete  # type: ignore[attr-defined]
            await bus.publish(*(Noted(n=i) for i in range(5)))
            assert bus._transport._outbox.unsent() == 0  # type: ignore[attr-defined]  # nothing held
        assert bus.unsent == 5  # reached nobody: not held, but counted as not delivered

    run_strict(scenario, 60)


def test_with_a_spool_dir_what_is_still_held_at_close_is_kept_on_disk(
    namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "pycomms.tcp")
    port = free_port()
    url = f"tcp://127.0.0.1:0?namespace={namespace}&discovery=off&seeds=127.0.0.1:{port}&spool={tmp_path}"
    seed_url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"

    async def scenario() -> None:
        async with pycomms.connect(url) as bus:
            await bus.publish(*(Noted(n=i) for i in range(EVENTS)))
        assert bus.unsent == 0
        assert f"closing with {EVENTS} message(s) not yet delivered" in caplog.text
        rec = Recorder()
        async with pycomms.connect(seed_url, services=[noting(rec)]), pycomms.connect(url):
            await rec.wait(EVENTS, 20)
        rec.assert_exactly_once(range(EVENTS))

    run_strict(scenario, 90)


def test_a_dead_letter_too_large_for_a_page_is_listed_cut_never_left_out(namespace: str) -> None:
    url = f"tcp://127.0.0.1:0?namespace={namespace}&max_message_size=65536"
    svc = Service("notes")

    @svc.on
    async def noted(event: Noted) -> None:
        raise pycomms.Reject("not today")

    async def scenario() -> None:
        async with pycomms.connect(url) as asker, pycomms.connect(url, services=[svc]) as keeper:
            await asker.publish(Noted(n=1, text="x" * 40_000), Noted(n=2))

            async def both() -> bool:
                return len(await keeper.dead_letters("notes")) == 2

            await eventually(both, 10, "two dead letters at the keeper")
            listed = await asker.dead_letters("notes")
            letters = {letter.body["n"] if letter.body else None: letter for letter in listed}
            assert set(letters) == {None, 2}, "both listed from the other node"
            cut = letters[None]
            assert (cut.type, cut.reason, cut.envelope) == ("tcptest.noted", "rejected", b"")
            assert cut.error.startswith("not today [listing cut: the letter is ")
            assert keeper.node.id in cut.error
            assert letters[2].envelope, "a letter that fits is listed whole"
            assert await asker.purge("notes", [cut.id]) == 1  # what is listed can be acted on
            assert [letter.body["n"] for letter in await keeper.dead_letters("notes")] == [2]

    run_strict(scenario, 60)


def test_drop_namespace_removes_registry_entries_and_refuses_while_nodes_run(namespace: str) -> None:
    url = f"tcp://127.0.0.1:0?namespace={namespace}"

    async def scenario() -> None:
        rec = Recorder()
        async with pycomms.connect(url, services=[noting(rec)]) as worker:
            directory = worker._transport._links.registry.directory  # type: ignore[attr-defined]
            async with pycomms.connect(url) as admin:
                with pytest.raises(pycomms.NamespaceInUse, match="in use by 1 node"):
                    await admin.drop_namespace()
        assert (directory / "catalog" / "notes.json").exists(), "the catalog outlives the worker"
        admin = await pycomms.connect(url)
        removed = await admin.drop_namespace()
        assert removed >= 2  # its own entry and the catalog entry
        assert admin.closed
        assert not directory.exists()
        async with pycomms.connect(url) as fresh:  # the namespace starts empty
            assert fresh._transport._catalog.services == {}  # type: ignore[attr-defined]

    run_strict(scenario, 60)


def test_close_returns_in_time_with_a_peer_that_never_acks(namespace: str) -> None:
    """A linked peer that takes deliveries and never acknowledges them does not hold
    close() past its bound."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"

    async def scenario() -> None:
        bus = await pycomms.connect(url)
        peer = await RawPeer.connect("127.0.0.1", port)
        their = await peer.hello(namespace, "sink")
        peer.send(peer.auth_frame(None, their))
        peer.send(peer.state_frame())
        subscribe = {"service": "notes", "events": ["tcptest.noted"], "commands": [], "token": 1}
        peer.send(json_frame(Frame.SUBSCRIBE, subscribe))

        async def routed() -> bool:
            return bool(bus._transport._routes.instances("notes"))  # type: ignore[attr-defined]

        await eventually(routed, 10, "the sink to subscribe")
        await bus.publish(*(Noted(n=i) for i in range(10)))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bus.close(grace=0)
        assert loop.time() - started < 3.0 + 2 * scale()
        await peer.close()

    run_strict(scenario, 60)
