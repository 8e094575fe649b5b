"""The publisher's re-send rounds, as pure logic (a client double in place of nats-py):
an ack of the previous round that arrives while the next round is sending counts once,
so it can never stand in for the ack of another message of the call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.msg import Msg
from pycomms_nats._publisher import Outgoing, Publisher

from pycomms import PublishError

STORED = b'{"stream":"s","seq":1}'


class Client:
    """What the publisher uses of nats-py's client. ``on_publish`` decides, per publish,
    which answers (reply subject, body) arrive at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (message id, reply subject)
        self.deliver: Callable[[Msg], Awaitable[None]] | None = None
        self.on_publish: Callable[[str, str], list[tuple[str, bytes]]] = lambda _id, _reply: []

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> object:
        self.deliver = cb
        return object()

    async def publish(self, subject: str, data: bytes, reply: str, headers: dict[str, str]) -> None:
        msg_id = headers["Nats-Msg-Id"]
        self.sent.append((msg_id, reply))
        for subject_, body in self.on_publish(msg_id, reply):
            assert self.deliver is not None
            await self.deliver(Msg(None, subject=subject_, data=body))  # type: ignore[arg-type]


class Link:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.server = "127.0.0.1:4222"


def test_a_late_ack_during_a_resend_does_not_count_for_another_message() -> None:
    async def scenario() -> None:
        client = Client()
        publisher = Publisher(Link(client), timeout=6.0, inflight=64)  # type: ignore[arg-type]
        await publisher.start()
        replies: dict[str, str] = {}

        def on_publish(msg_id: str, reply: str) -> list[tuple[str, bytes]]:
            first = msg_id not in replies
            replies[msg_id] = reply
            if first:
                return []  # round 1: the server is slow, nothing is acked in time
            if msg_id == "b":
                return [(replies["c"], STORED)]  # c's round-1 ack arrives while b is re-sent
            return [(reply, STORED)]  # a re-sent c would be acked at once (deduplicated)

        client.on_publish = on_publish
        outgoing = [Outgoing("p.c.t", b"{}", "b"), Outgoing("p.c.t", b"{}", "c")]
        with pytest.raises(PublishError, match="timed out"):
            await publisher.publish(outgoing)  # b is never acknowledged: publish must not succeed
        assert [m for m, _ in client.sent].count("c") == 1, "c was sent again after its ack came"

    asyncio.run(scenario())


def test_every_message_acked_in_the_second_round_returns() -> None:
    async def scenario() -> None:
        client = Client()
        publisher = Publisher(Link(client), timeout=6.0, inflight=64)  # type: ignore[arg-type]
        await publisher.start()
        seen: set[str] = set()

        def on_publish(msg_id: str, reply: str) -> list[tuple[str, bytes]]:
            if msg_id not in seen:
                seen.add(msg_id)
                return []
            return [(reply, STORED)]

        client.on_publish = on_publish
        await publisher.publish([Outgoing("p.c.t", b"{}", "a"), Outgoing("p.c.t", b"{}", "b")])
        assert [m for m, _ in client.sent] == ["a", "b", "a", "b"]

    asyncio.run(scenario())
