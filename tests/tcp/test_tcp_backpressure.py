"""Back-pressure: a publish whose link has a full kernel buffer waits until the link
takes data again (`Connection.pause_writing` reported to `Links.paused`)."""

from __future__ import annotations

import asyncio

import pytest
from tcp_helpers import free_port
from tcp_rawpeer import RawPeer
from tcp_worker import Done

import pycomms
from pycomms.testing import run_strict
from pycomms_tcp._frames import Frame, json_frame

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]


def test_a_publish_waits_while_its_link_is_paused(namespace: str) -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"

    async def scenario() -> None:
        async with pycomms.connect(url) as bus:
            peer = await RawPeer.connect("127.0.0.1", port)
            their = await peer.hello(namespace, "slow-client-1")
            peer.send(peer.auth_frame(None, their))
            peer.send(json_frame(Frame.STATE, {}))
            token = {"token": "t1", "service": "slow-audit", "events": ["tcptest.done"], "commands": []}
            peer.send(json_frame(Frame.SUBSCRIBE, token))
            while (got := await peer.read_frame()) is not None and got[0] != Frame.SUBSCRIBED:
                pass
            links = bus._transport._links  # type: ignore[attr-defined]
            (conn,) = links.conns
            conn.pause_writing()  # as asyncio does when the kernel buffer toward the peer is full
            assert links.paused == {conn}
            publishing = asyncio.create_task(bus.publish(Done(n=1, pid=0)))
            while (got := await peer.read_frame()) is not None and got[0] != Frame.DELIVER:
                pass
            assert got is not None  # written at once; the publish then waits for the link to drain
            assert not publishing.done()
            conn.resume_writing()
            await publishing
            assert not links.paused
            await peer.close()

    run_strict(scenario, 60)
