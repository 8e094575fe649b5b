"""The frame decoder: property tests (any split decodes the same, random bytes raise
only `ProtocolError`) and a short fuzz run of every payload parser."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcp_helpers import free_port
from tcp_worker import Ask, Echo, echo_service

import pycomms
from pycomms_tcp import FrameDecoder, ProtocolError
from pycomms_tcp._frames import (
    Frame,
    ack_frame,
    deliver_frame,
    deliver_payload,
    frame,
    json_frame,
    parse_deliver,
    parse_json,
    parse_releases,
    parse_seqs,
    releases_payload,
    seqs_payload,
)

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module")
def live_node() -> Iterator[tuple[int, str]]:
    """A node serving requests in a background thread's event loop, for the whole module."""
    port, namespace = free_port(), f"t{uuid.uuid4().hex[:12]}"
    ready, stop = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    async def serve() -> None:
        url = f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off"
        async with pycomms.connect(url, services=[echo_service()]):
            ready.set()
            await asyncio.to_thread(stop.wait)
            # still serving after the garbage: a real request gets its answer
            client_url = f"tcp://127.0.0.1:0?namespace={namespace}&discovery=off&seeds=127.0.0.1:{port}"
            async with pycomms.connect(client_url) as client:
                assert await client.request(Ask(n=4), timeout=10) == Echo(n=8, pid=os.getpid())

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            outcome.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(20)
    yield port, namespace
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the node did not stop"
    if outcome:
        raise outcome[0]


MAX = 4096
frames_st = st.lists(
    st.tuples(st.sampled_from(list(Frame)), st.binary(max_size=MAX - 1)),
    max_size=12,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[last:p])
        last = p
    return chunks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_st, st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_a_valid_stream_decodes_the_same(frames: list[tuple[Frame, bytes]], cuts: list[int]) -> None:
    stream = b"".join(frame(kind, payload) for kind, payload in frames)
    decoder = FrameDecoder(MAX)
    got: list[tuple[int, bytes]] = []
    for chunk in split(stream, cuts):
        got += decoder.feed(chunk)
    assert got == [(int(k), p) for k, p in frames]
    assert not decoder.partial


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_random_bytes_raise_only_protocol_error(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(MAX)
    try:
        for chunk in chunks:
            for kind, payload in decoder.feed(chunk):
                assert kind in set(Frame)
                assert len(payload) < MAX
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=MAX + 1, max_value=2**32 - 1), st.integers(min_value=0, max_value=4))
def test_oversized_length_is_refused_from_the_prefix_alone(length: int, extra: int) -> None:
    decoder = FrameDecoder(MAX)
    with pytest.raises(ProtocolError, match="frame length"):
        decoder.feed(struct.pack(">I", length) + b"\x05" * extra)


def test_zero_length_and_unknown_type_are_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder(MAX).feed(struct.pack(">I", 0))
    with pytest.raises(ProtocolError, match="unknown frame type"):
        FrameDecoder(MAX).feed(struct.pack(">IB", 1, 200))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.text(max_size=50), st.binary(max_size=200))
def test_deliver_payload_round_trip(seq: int, attempt: int, service: str, data: bytes) -> None:
    assert parse_deliver(deliver_payload(seq, attempt, service, data)) == (seq, attempt, service, data)
    # the one-pack frame of the send path is the same bytes as the general encoder's
    whole = deliver_frame(seq, attempt, service.encode(), data)
    assert whole == frame(Frame.DELIVER, deliver_payload(seq, attempt, service, data))
    assert FrameDecoder(MAX).feed(whole) == [(Frame.DELIVER, deliver_payload(seq, attempt, service, data))]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), max_size=20),
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)), max_size=20),
)
def test_ack_and_release_round_trip(seqs: list[int], releases: list[tuple[int, int]]) -> None:
    assert parse_seqs(seqs_payload(seqs)) == seqs
    if seqs:
        assert ack_frame(seqs) == frame(Frame.ACK, seqs_payload(seqs))
    assert parse_releases(releases_payload(releases)) == releases


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_payload_parsers_fuzz(payload: bytes) -> None:
    """Every parser of untrusted payloads either returns or raises `ProtocolError`."""
    for parse in (parse_deliver, parse_json, parse_seqs, parse_releases):
        try:
            parse(payload)
        except ProtocolError:
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    garbage=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5),
    after_hello=st.booleans(),
)
def test_a_live_node_survives_garbage(garbage: list[bytes], after_hello: bool, live_node: tuple[int, str]) -> None:
    """Random bytes on fresh links, straight away or after a valid HELLO: the node
    closes those links and keeps serving (checked when the fixture ends)."""
    port, namespace = live_node
    hello = {"proto": 2, "namespace": namespace, "id": "fuzzer", "nonce": "0" * 32, "mac": ""}

    async def poke() -> None:
        for chunk in garbage:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write((json_frame(Frame.HELLO, hello) if after_hello else b"") + chunk)
            try:
                async with asyncio.timeout(0.05):
                    await reader.read(1024)
            except (TimeoutError, ConnectionError):
                pass
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    asyncio.run(poke())


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">IB", 1, 99),
        struct.pack(">IB", MAX + 1, Frame.PING) + b"x" * MAX,
        struct.pack(">IB", 0, Frame.PING),
    ],
    ids=["unknown-kind", "over-the-limit", "empty"],
)
def test_a_bad_frame_read_whole_in_one_chunk_is_refused(data: bytes) -> None:
    """The decoder's shortcut for a read holding exactly one frame checks it as the
    general path does."""
    with pytest.raises(ProtocolError):
        FrameDecoder(MAX).feed(data)
