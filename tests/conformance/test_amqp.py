"""The conformance suite against RabbitMQ (``amqp://``, pycomms-amqp).

The broker comes from ``$PYCOMMS_TEST_AMQP_URL`` (default: guest on 127.0.0.1:5672).
Unreachable broker: skipped locally, a failure with ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import aio_pika
import pytest

from pycomms.testing import ConformanceSuite, unavailable

AMQP_URL = os.environ.get("PYCOMMS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=3):
            return True
    except OSError:
        return False


_namespaces: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _broker() -> Iterator[None]:
    if not _reachable(AMQP_URL):
        unavailable(f"RabbitMQ is not reachable at {urlsplit(AMQP_URL).netloc.rpartition('@')[2]}")
    yield
    with contextlib.suppress(Exception):
        _delete_namespaces(_namespaces)


def _delete_namespaces(namespaces: list[str]) -> None:
    """Remove the durable queues and exchanges the scenarios left (needs local rabbitmqctl)."""
    if not namespaces or shutil.which("rabbitmqctl") is None or (urlsplit(AMQP_URL).port or 5672) != 5672:
        return  # rabbitmqctl speaks to the local default node only
    prefixes = tuple(f"pycomms.{ns}" for ns in namespaces)

    def names(kind: str) -> list[str]:
        listing = subprocess.run(
            ["rabbitmqctl", f"list_{kind}", "-q", "--no-table-headers", "name"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return [n.strip() for n in listing.stdout.splitlines() if n.strip().startswith(prefixes)]

    async def delete() -> None:
        async with asyncio.timeout(60), await aio_pika.connect(AMQP_URL.split("?", 1)[0], timeout=10) as conn:
            channel = await conn.channel()
            for queue in names("queues"):
                await channel.queue_delete(queue)
            for exchange in names("exchanges"):
                await channel.exchange_delete(exchange)

    asyncio.run(delete())


class TestAmqp(ConformanceSuite):
    redelivery_timeout = 30.0

    def setup_method(self, method: object) -> None:
        super().setup_method(method)
        _namespaces.extend((self.namespace, f"{self.namespace}x"))  # ...x: test_namespace_isolation

    def make_url(self, namespace: str) -> str:
        separator = "&" if "?" in AMQP_URL else "?"
        return f"{AMQP_URL}{separator}namespace={namespace}"
