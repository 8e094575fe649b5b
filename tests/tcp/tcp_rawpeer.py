"""A hand-written protocol peer over asyncio streams, to poke a node from outside:
handshakes done right, wrong, replayed, or not at all."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from pycomms_tcp._frames import Frame, frame, json_frame, parse_json
from pycomms_tcp._handshake import PROTOCOL_VERSION, new_nonce, proof


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame, or None once the node closed the link."""
        try:
            async with asyncio.timeout(timeout):
                head = await self.reader.readexactly(5)
                length, kind = struct.unpack(">IB", head)
                return kind, await self.reader.readexactly(length - 1)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def closed_by_node(self, timeout: float = 10.0) -> bool:
        """Read (and skip) frames until the node closes the link."""
        async with asyncio.timeout(timeout):
            while await self.read_frame(timeout) is not None:
                pass
        return True

    async def hello(
        self, namespace: str, node_id: str, nonce: str | None = None, proto: int = PROTOCOL_VERSION
    ) -> dict[str, Any]:
        """Send HELLO; return the node's HELLO (or ERROR) body."""
        self.nonce = nonce or new_nonce()
        self.node_id = node_id
        self.namespace = namespace
        body = {"proto": proto, "namespace": namespace, "id": node_id, "nonce": self.nonce, "mac": ""}
        self.send(json_frame(Frame.HELLO, body))
        got = await self.read_frame()
        assert got is not None, "node closed the link instead of answering HELLO"
        kind, payload = got
        body = parse_json(payload)
        body["_kind"] = kind
        return body

    def auth_frame(self, secret: str | None, their: dict[str, Any]) -> bytes:
        mac = proof(secret, "dialer", self.namespace, (self.node_id, self.nonce), (their["id"], their["nonce"]))
        return json_frame(Frame.AUTH, {"mac": mac})

    def state_frame(self, port: int = 1) -> bytes:
        return json_frame(
            Frame.STATE,
            {
                "info": {"id": self.node_id, "name": "raw", "services": [], "handles": [], "host": "raw", "pid": 1},
                "addr": ["127.0.0.1", port],
                "live": {},
                "catalog": {},
                "peers": [],
            },
        )

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def ping() -> bytes:
    return frame(Frame.PING)
