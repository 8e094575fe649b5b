"""``amqps://`` against a private RabbitMQ node with a TLS listener and a throwaway CA
(made with the ``openssl`` CLI): messages and replies go through, and the broker's
certificate is verified unless ``verify=false``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqp_support import RABBITMQ_SERVER, PrivateBroker, TlsFiles, fresh_namespace, make_tls_files

import pycomms
from pycomms import Event, Message, Request, Service
from pycomms.testing import run_strict, unavailable


class Greeted(Event, name="amqp_tls.greeted"):
    text: str


class Echo(Message, name="amqp_tls.echo"):
    text: str


class Shout(Request[Echo], name="amqp_tls.shout"):
    text: str


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[PrivateBroker, TlsFiles]]:
    """A private node listening for AMQP over TLS on ``tls_port`` (and plain AMQP)."""
    if shutil.which("openssl") is None:
        unavailable("the openssl CLI is not installed; it makes the test certificates")
    if not Path(RABBITMQ_SERVER).exists():
        unavailable(f"{RABBITMQ_SERVER} is not installed; this test needs a private RabbitMQ node")
    root = Path(tempfile.mkdtemp(prefix="pycomms-rabbit-tls-"))
    broker: PrivateBroker | None = None
    try:
        files = make_tls_files(root)
        broker = PrivateBroker(root, tls=files)
        broker.start()
        yield broker, files
    finally:
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.kill()
        shutil.rmtree(root, ignore_errors=True)


def amqps_url(broker: PrivateBroker, namespace: str, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"namespace": namespace, "connect_timeout": 10, **options}.items())
    return f"amqps://guest:guest@localhost:{broker.tls_port}/?{query}"


def test_amqps_carries_events_and_requests(tls_broker: tuple[PrivateBroker, TlsFiles]) -> None:
    broker, files = tls_broker
    url = amqps_url(broker, fresh_namespace(), cafile=files.ca)

    async def scenario() -> None:
        got: asyncio.Queue[str] = asyncio.Queue()
        service = Service("tls", concurrency=4)

        @service.on
        async def greeted(event: Greeted) -> None:
            await got.put(event.text)

        @service.on
        async def shout(request: Shout) -> Echo:
            return Echo(text=request.text.upper())

        async with pycomms.connect(url, services=[service]) as server, pycomms.connect(url) as client:
            await client.publish(Greeted(text="over tls"))
            assert await got.get() == "over tls"
            reply = await client.request(Shout(text="hello"), timeout=20)
            assert reply.text == "HELLO"
            assert {node.name for node in await client.nodes()} >= {server.node.name, client.node.name}

    run_strict(scenario, 60)


def test_amqps_verifies_the_broker_certificate(tls_broker: tuple[PrivateBroker, TlsFiles]) -> None:
    """Signed by a CA the client does not trust: refused (system CAs only), accepted
    with ``verify=false``."""
    broker, _ = tls_broker

    async def scenario() -> None:
        with pytest.raises(pycomms.ConnectError):
            async with pycomms.connect(amqps_url(broker, fresh_namespace())):
                pass
        async with pycomms.connect(amqps_url(broker, fresh_namespace(), verify="false")) as bus:
            assert await bus.nodes()

    run_strict(scenario, 60)
