"""The handshake: shared-secret HMAC, wrong secrets, replayed handshakes, frames sent
before authentication, namespace and version checks, and the limits on links."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tcp_helpers import free_port, scale
from tcp_rawpeer import RawPeer, ping
from tcp_worker import Ask, Echo, Job

import pycomms
from pycomms import Service
from pycomms.testing import eventually, run_strict
from pycomms_tcp import _links as tcp_links
from pycomms_tcp._frames import Frame, deliver_payload, frame, json_frame

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]
SECRET = "correct horse battery staple"


def echo() -> Service:
    svc = Service("echo")

    @svc.on
    async def ask(msg: Ask) -> Echo:
        return Echo(n=msg.n, pid=0)

    return svc


def test_same_secret_talks(namespace: str) -> None:
    url = f"tcp://127.0.0.1:0?namespace={namespace}&secret={SECRET}"

    async def scenario() -> None:
        async with pycomms.connect(url, services=[echo()]), pycomms.connect(url) as client:
            assert await client.request(Ask(n=3), timeout=10 * scale()) == Echo(n=3, pid=0)

    run_strict(scenario, 90)


def test_wrong_secret_is_rejected_and_never_logged(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    good = f"tcp://127.0.0.1:{port}?namespace={namespace}&secret={SECRET}"
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with pycomms.connect(good, services=[echo()]) as server:
            # found through the same-host registry and refused: an error at connect(), saying why
            with pytest.raises(pycomms.ConnectError, match=r"same-host registry.*authentication failed") as info:
                await pycomms.connect(f"tcp://127.0.0.1:0?namespace={namespace}&secret=wrong-one")
            assert f"127.0.0.1:{port}" in str(info.value)
            assert info.value.__cause__ is None, "one clear line, no chained traceback"
            assert [n.id for n in await server.nodes()] == [server.node.id]
            # given as a seed, the same
            refused = r"\(seed\) refused this node: authentication failed"
            with pytest.raises(pycomms.ConnectError, match=refused) as info:
                await pycomms.connect(
                    f"tcp://127.0.0.1:0?namespace={namespace}&secret=wrong-two&seeds=127.0.0.1:{port}&discovery=off"
                )
            assert "wrong-two" not in str(info.value)
            # no secret at all
            with pytest.raises(pycomms.ConnectError, match="requires a secret"):
                await pycomms.connect(f"tcp://127.0.0.1:0?namespace={namespace}&seeds=127.0.0.1:{port}&discovery=off")

    run_strict(scenario, 90)
    assert "authentication failed" in caplog.text
    for secret in (SECRET, "wrong-one", "wrong-two"):
        assert secret not in caplog.text


def test_replayed_handshake_is_rejected(namespace: str) -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?namespace={namespace}&secret={SECRET}&discovery=off"

    async def scenario() -> None:
        async with pycomms.connect(url) as bus:
            first = await RawPeer.connect("127.0.0.1", port)
            their = await first.hello(namespace, "recorded-node")
            assert their["_kind"] == Frame.HELLO
            auth = first.auth_frame(SECRET, their)
            first.send(auth)
            first.send(first.state_frame())
            got = await first.read_frame()
            assert got is not None
            assert got[0] == Frame.STATE
            assert "recorded-node" in {n.id for n in await bus.nodes()}
            await first.close()
            # an eavesdropper replays the same HELLO and AUTH bytes on a new link
            second = await RawPeer.connect("127.0.0.1", port)
            again = await second.hello(namespace, "recorded-node", nonce=first.nonce)
            assert again["nonce"] != their["nonce"]
            second.send(auth)
            got = await second.read_frame()
            assert got is not None
            assert got[0] == Frame.ERROR
            assert b"authentication failed" in got[1]
            assert await second.closed_by_node()
            await second.close()

    run_strict(scenario, 90)


def test_message_frames_before_authentication_are_not_parsed(namespace: str) -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?namespace={namespace}&secret={SECRET}&discovery=off"
    handled: list[int] = []
    svc = Service("work")

    @svc.on
    async def job(msg: Job) -> None:
        handled.append(msg.n)

    async def scenario() -> None:
        async with pycomms.connect(url, services=[svc]):
            peer = await RawPeer.connect("127.0.0.1", port)
            their = await peer.hello(namespace, "sneaky")
            assert their["_kind"] == Frame.HELLO
            body = b'{"specversion":"1.0","id":"x","type":"tcptest.job","kind":"command","source":"s","data":{"n":1}}'
            peer.send(frame(Frame.DELIVER, deliver_payload(1, 1, "work", body)))  # no AUTH first
            assert await peer.closed_by_node()
            await peer.close()
            await asyncio.sleep(0.2)  # nothing to await: we assert that something did NOT happen
        assert handled == []

    run_strict(scenario, 90)


@pytest.mark.parametrize(
    ("namespace_suffix", "proto", "error"),
    [
        ("-other", 2, b"namespace mismatch"),
        ("", 99, b"protocol version 99 is not supported (this side speaks 2"),
        ("", 1, b"protocol version 1 is not supported (this side speaks 2"),
    ],
)
def test_namespace_and_version_are_checked(namespace: str, namespace_suffix: str, proto: int, error: bytes) -> None:
    port = free_port()

    async def scenario() -> None:
        async with pycomms.connect(f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"):
            peer = await RawPeer.connect("127.0.0.1", port)
            reply = await peer.hello(namespace + namespace_suffix, "stranger", proto=proto)
            assert reply["_kind"] == Frame.ERROR
            assert error.decode() in reply["error"]
            assert await peer.closed_by_node()
            await peer.close()

    run_strict(scenario, 90)


def test_oversized_frame_before_authentication_is_cut_off(namespace: str) -> None:
    port = free_port()

    async def scenario() -> None:
        async with pycomms.connect(f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"):
            peer = await RawPeer.connect("127.0.0.1", port)
            peer.send((100 * 1024 * 1024).to_bytes(4, "big"))  # claims 100 MiB: refused from the prefix
            assert await peer.closed_by_node(timeout=5)
            await peer.close()

    run_strict(scenario, 90)


def test_idle_links_make_room_for_new_ones_and_handshakes_have_a_deadline(namespace: str) -> None:
    """The 17th unfinished handshake from one address closes the oldest (never the
    newest, which may be a real peer); a link that never finishes its handshake is
    closed at connect_timeout."""
    port = free_port()

    async def scenario() -> None:
        url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off&connect_timeout=1"
        async with pycomms.connect(url):
            loop = asyncio.get_running_loop()
            idle = [await RawPeer.connect("127.0.0.1", port) for _ in range(16)]
            idle[0].send(b"\x00\x00")  # half a length prefix, then nothing
            extra = await RawPeer.connect("127.0.0.1", port)
            started = loop.time()
            assert await idle[0].closed_by_node(timeout=5), "the oldest unfinished handshake makes room"
            assert loop.time() - started < 0.8, "closed when the 17th came, not at its deadline"
            assert await extra.closed_by_node(timeout=10)
            assert loop.time() - started < 1 + 2 * scale(), "closed about connect_timeout after it was made"
            for peer in [*idle, extra]:
                await peer.close()

    run_strict(scenario, 90)


def test_silent_link_is_dropped_within_three_heartbeats(namespace: str) -> None:
    port = free_port()

    async def scenario() -> None:
        url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off&heartbeat=0.2"
        async with pycomms.connect(url) as bus:
            peer = await RawPeer.connect("127.0.0.1", port)
            their = await peer.hello(namespace, "quiet-node")
            peer.send(peer.auth_frame(None, their))
            peer.send(peer.state_frame())
            got = await peer.read_frame()
            assert got is not None
            assert got[0] == Frame.STATE
            assert "quiet-node" in {n.id for n in await bus.nodes()}
            peer.send(ping())
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def gone() -> bool:
                return "quiet-node" not in {n.id for n in await bus.nodes()}

            await eventually(gone, 10, "the silent node to leave nodes()", interval=0.02)
            # 3 heartbeats of silence, plus up to one heartbeat until the check runs
            assert loop.time() - started < 4 * 0.2 + 0.5
            assert await peer.closed_by_node()
            await peer.close()

    run_strict(scenario, 90)


def test_connect_cancelled_while_peers_confirm_a_subscription(namespace: str) -> None:
    """A peer that never confirms SUBSCRIBE holds connect() for up to 3 s; cancelling
    connect() then leaves no task, link or waiter behind."""
    svc = Service("work")

    @svc.on
    async def job(msg: Job) -> None:
        pass

    async def scenario() -> None:
        linked = asyncio.Event()

        async def mute_listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = RawPeer(reader, writer)
            got = await peer.read_frame()
            assert got is not None
            assert got[0] == Frame.HELLO
            peer.send(json_frame(Frame.HELLO, {"proto": 2, "namespace": namespace, "id": "mute", "nonce": "1" * 32}))
            peer.node_id, peer.namespace = "mute", namespace
            while (got := await peer.read_frame()) is not None and got[0] != Frame.STATE:
                pass
            peer.send(peer.state_frame())
            linked.set()
            await peer.closed_by_node(timeout=30)  # reads SUBSCRIBE, never answers
            await peer.close()

        server = await asyncio.start_server(mute_listener, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"tcp://127.0.0.1:0?namespace={namespace}&discovery=off&seeds=127.0.0.1:{port}"
        opening = asyncio.ensure_future(pycomms.connect(url, services=[svc]).__aenter__())
        await linked.wait()
        await asyncio.sleep(0.2)  # connect() is now waiting for SUBSCRIBED
        assert not opening.done()
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        server.close()
        await server.wait_closed()

    run_strict(scenario, 30)


def test_frame_trickled_after_the_handshake_is_cut_off(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that keeps the link busy one byte at a time never finishing a frame is cut
    off at the per-frame deadline (30 s; shortened here), not kept forever."""
    monkeypatch.setattr(tcp_links, "FRAME_DEADLINE", 1.0)
    port = free_port()

    async def scenario() -> None:
        url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off&heartbeat=0.2"
        async with pycomms.connect(url):
            peer = await RawPeer.connect("127.0.0.1", port)
            their = await peer.hello(namespace, "trickler")
            peer.send(peer.auth_frame(None, their))
            peer.send(peer.state_frame())
            got = await peer.read_frame()
            assert got is not None
            assert got[0] == Frame.STATE
            loop = asyncio.get_running_loop()
            started = loop.time()
            stream = frame(Frame.PING, b"x" * 1000)
            for byte in stream:
                peer.send(bytes([byte]))
                try:
                    await peer.writer.drain()
                except ConnectionError:
                    break
                if peer.reader.at_eof():
                    break
                await asyncio.sleep(0.05)  # the trickle is the point of the test
                if loop.time() - started > 10:
                    break
            assert await peer.closed_by_node(timeout=5)
            assert loop.time() - started < 1.0 + 0.2 + 3, "cut off about one deadline after the frame began"
            await peer.close()

    run_strict(scenario, 30)
