"""PyComms itself, through its public API only: two buses on a fresh namespace."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pycomms
from bench._impl import ALL_WORKLOADS
from bench._messages import BenchEvent, Ping, Pong
from bench._tracker import Tracker
from pycomms import Service
from pycomms.spi import redact_url

REQUEST_TIMEOUT = 30.0


def fresh_namespace() -> str:
    """A namespace no earlier run used, so runs never see each other's messages.

    Kept short: backends derive table, stream and queue names from it."""
    return f"bench{uuid.uuid4().hex[:8]}"


class PyCommsSession:
    def __init__(self, server: pycomms.Bus, client: pycomms.Bus, url: str) -> None:
        self._server = server
        self._client = client
        self._url = url

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        await self._client.publish(*events)

    async def request(self, seq: int) -> None:
        reply = await self._client.request(Ping(seq=seq), timeout=REQUEST_TIMEOUT)
        if reply.seq != seq:
            raise AssertionError(f"request {seq} got the reply to {reply.seq}")

    async def close(self) -> None:
        try:
            await self._client.close(grace=5.0)
        finally:
            await self._server.close(grace=5.0)
        # leave nothing on the broker: the run's streams, queues or tables go with it
        admin = await pycomms.connect(self._url, name="bench-cleanup", namespace=self._server.namespace)
        await admin.drop_namespace(force=True)


class PyComms:
    """``pycomms.connect(url, namespace=fresh)``: a server bus running service
    ``bench`` (events and requests) and a client bus that publishes and requests."""

    workloads = ALL_WORKLOADS

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = "pycomms"
        self.description = f"PyComms over {redact_url(url)}"

    async def open(self, tracker: Tracker, concurrency: int) -> PyCommsSession:
        namespace = fresh_namespace()
        service = Service("bench", concurrency=concurrency)

        @service.on(BenchEvent)
        async def on_event(event: BenchEvent) -> None:
            tracker.hit(event.seq)

        @service.on(Ping)
        async def on_ping(ping: Ping) -> Pong:
            return Pong(seq=ping.seq)

        server = await pycomms.connect(self.url, services=[service], name="bench-server", namespace=namespace)
        try:
            client = await pycomms.connect(self.url, name="bench-client", namespace=namespace)
        except BaseException:
            await server.close(grace=0)
            raise
        return PyCommsSession(server, client, self.url)
