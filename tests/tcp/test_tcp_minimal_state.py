"""The minimal STATE of docs/tcp-protocol.md §8: a foreign client that sends ``{}`` (no
``info``, ``addr``, ``live``, ``catalog`` nor ``peers``) joins, is named by its id, can
subscribe and be delivered to, and is never dialled back (no address, or port 0)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tcp_helpers import free_port
from tcp_rawpeer import RawPeer
from tcp_worker import Done

import pycomms
from pycomms.testing import eventually, run_strict
from pycomms_tcp._frames import Frame, frame, json_frame, parse_deliver, seqs_payload

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]


async def joined(namespace: str, port: int, node_id: str, state: dict[str, Any]) -> tuple[RawPeer, dict[str, Any]]:
    """Handshake as ``node_id`` and send ``state``; the node's own STATE body."""
    peer = await RawPeer.connect("127.0.0.1", port)
    their = await peer.hello(namespace, node_id)
    assert their["_kind"] == Frame.HELLO
    peer.send(peer.auth_frame(None, their))
    peer.send(json_frame(Frame.STATE, state))
    got = await peer.read_frame()
    assert got is not None
    assert got[0] == Frame.STATE, got
    return peer, json.loads(got[1])


@pytest.mark.parametrize(
    "state",
    [{}, {"live": {}}, {"info": {"host": "js"}, "addr": ["127.0.0.1", 0], "live": {}}],
    ids=["empty", "live-only", "port-0"],
)
def test_a_minimal_state_joins_and_is_never_dialled(namespace: str, state: dict[str, Any]) -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"

    async def scenario() -> None:
        async with pycomms.connect(url) as bus:
            peer, theirs = await joined(namespace, port, "js-client-1", state)
            assert theirs["info"]["id"] == bus.node.id
            listed = {n.id: n for n in await bus.nodes()}
            assert listed["js-client-1"].name == "js-client-1"  # no info.name: the id
            # It serves a service: the node delivers to it.
            token = {"token": "t1", "service": "js-audit", "events": ["tcptest.done"], "commands": []}
            peer.send(json_frame(Frame.SUBSCRIBE, token))
            while (got := await peer.read_frame()) is not None and got[0] != Frame.SUBSCRIBED:
                pass
            assert got is not None
            await bus.publish(Done(n=7, pid=0))
            while (got := await peer.read_frame()) is not None and got[0] != Frame.DELIVER:
                pass
            assert got is not None
            seq, attempt, service, data = parse_deliver(got[1])
            assert (attempt, service, json.loads(data)["data"]) == (1, "js-audit", {"n": 7, "pid": 0})
            peer.send(frame(Frame.ACK, seqs_payload([seq])))
            # It leaves without BYE: gone from nodes(), and never dialled (it has no address).
            await peer.close()
            await eventually(lambda: _absent(bus, "js-client-1"), 10, "the client to leave nodes()")
            links = bus._transport._links  # type: ignore[attr-defined]
            assert "js-client-1" not in links._peers.known

    run_strict(scenario, 60)


async def _absent(bus: pycomms.Bus, node_id: str) -> bool:
    return node_id not in {n.id for n in await bus.nodes()}


def test_a_malformed_member_is_still_refused(namespace: str) -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"

    async def scenario() -> None:
        async with pycomms.connect(url):
            peer = await RawPeer.connect("127.0.0.1", port)
            their = await peer.hello(namespace, "js-client-2")
            peer.send(peer.auth_frame(None, their))
            peer.send(json_frame(Frame.STATE, {"addr": ["127.0.0.1", 70000]}))
            assert await peer.closed_by_node()
            await peer.close()

    run_strict(scenario, 60)


def test_a_closing_node_hands_nothing_to_a_client_that_does_not_listen(namespace: str) -> None:
    """A node leaving with spooled messages gives them to a peer that can keep them;
    a client with the minimal STATE (no address) gets no HANDOFF, only the BYE."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"

    async def scenario() -> None:
        bus = await pycomms.connect(url)
        try:
            peer, _ = await joined(namespace, port, "js-client-3", {})
            # A durable service that then stops: the node spools its events.
            token = {"token": "t1", "service": "js-audit", "events": ["tcptest.done"], "commands": []}
            peer.send(json_frame(Frame.SUBSCRIBE, token))
            while (got := await peer.read_frame()) is not None and got[0] != Frame.SUBSCRIBED:
                pass
            peer.send(json_frame(Frame.UNSUBSCRIBE, {"service": "js-audit"}))
            await eventually(lambda: _not_live(bus, "js-client-3"), 10, "js-audit to stop")
            await bus.publish(Done(n=1, pid=0), Done(n=2, pid=0))
        finally:
            await bus.close(grace=1)
        kinds = []
        while (got := await peer.read_frame()) is not None:
            kinds.append(got[0])
        assert Frame.BYE in kinds
        assert Frame.HANDOFF not in kinds
        assert bus.unsent == 2  # counted as lost, as with no peer at all
        await peer.close()

    run_strict(scenario, 60)


async def _not_live(bus: pycomms.Bus, node_id: str) -> bool:
    links = bus._transport._links  # type: ignore[attr-defined]
    peer = links._peers.get(node_id)
    return peer is not None and "js-audit" not in peer.live


def test_a_retired_durable_service_is_forgotten_with_its_spool(namespace: str) -> None:
    """UNSUBSCRIBE with ``"forget": true``: the node drops the service from its catalog
    and deletes what it spooled for it, so a retired subscriber leaves nothing; a
    plain UNSUBSCRIBE keeps both (the service is durable)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"

    async def scenario() -> None:
        async with pycomms.connect(url) as bus:
            transport = bus._transport  # type: ignore[attr-defined]
            peer, _ = await joined(namespace, port, "js-client-4", {})
            token = {"token": "t1", "service": "js-audit", "events": ["tcptest.done"], "commands": []}
            peer.send(json_frame(Frame.SUBSCRIBE, token))
            while (got := await peer.read_frame()) is not None and got[0] != Frame.SUBSCRIBED:
                pass
            peer.send(json_frame(Frame.UNSUBSCRIBE, {"service": "js-audit"}))
            await eventually(lambda: _not_live(bus, "js-client-4"), 10, "js-audit to stop")
            await bus.publish(Done(n=1, pid=0), Done(n=2, pid=0))
            assert transport._spool.count == 2  # kept for the durable service
            assert "js-audit" in transport._catalog.services
            peer.send(json_frame(Frame.UNSUBSCRIBE, {"service": "js-audit", "forget": True}))
            await eventually(lambda: _forgotten(bus), 10, "js-audit to be forgotten")
            assert transport._spool.count == 0
            await bus.publish(Done(n=3, pid=0))  # nobody handles it now: not kept
            assert transport._spool.count == 0
            await peer.close()

    run_strict(scenario, 60)


async def _forgotten(bus: pycomms.Bus) -> bool:
    return "js-audit" not in bus._transport._catalog.services  # type: ignore[attr-defined]
