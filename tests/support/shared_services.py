"""What every test folder needs to know about the shared local services: their URLs
(``$PYCOMMS_TEST_*_URL``, defaulting to the services of docs/services.md). Tests
remove what their namespaces left with `pycomms.Bus.drop_namespace`.

On the path of every test through ``pythonpath`` in pyproject.toml, so that the
conformance, CLI and backend folders share one copy.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Literal
from urllib.parse import urlsplit

from system_tools import sbin_tool

REDIS_URL = os.environ.get("PYCOMMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("PYCOMMS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get("PYCOMMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("PYCOMMS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
NATS_URL = os.environ.get("PYCOMMS_TEST_NATS_URL", "nats://127.0.0.1:4222")
MQTT_URL = os.environ.get("PYCOMMS_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def amqp_names(kind: Literal["queues", "exchanges"], namespaces: list[str], url: str = AMQP_URL) -> list[str]:
    """The queues or exchanges of ``namespaces`` as the local ``rabbitmqctl`` lists them. It
    speaks to the local default node only: elsewhere (or without rabbitmqctl), nothing."""
    rabbitmqctl = sbin_tool("rabbitmqctl")
    if not namespaces or rabbitmqctl is None or (urlsplit(url).port or 5672) != 5672:
        return []
    prefixes = tuple(f"pycomms.{ns}." for ns in namespaces)
    listing = subprocess.run(
        [rabbitmqctl, f"list_{kind}", "-q", "--no-table-headers", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return sorted(n.strip() for n in listing.stdout.splitlines() if n.strip().startswith(prefixes))


def delete_amqp_namespaces(namespaces: list[str], url: str = AMQP_URL) -> None:
    """Delete the queues and exchanges of ``namespaces`` that `amqp_names` lists: what a
    `Bus.drop_namespace` that failed left on the shared broker (it cannot remove that itself)."""
    queues, exchanges = amqp_names("queues", namespaces, url), amqp_names("exchanges", namespaces, url)
    if not queues and not exchanges:
        return

    async def delete() -> None:
        import aio_pika

        connection = await aio_pika.connect(url.split("?", 1)[0], timeout=10)
        async with asyncio.timeout(60), connection:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in exchanges:
                await channel.exchange_delete(exchange)

    asyncio.run(delete())
