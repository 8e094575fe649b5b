"""What every test folder needs to know about the shared local services: their URLs
(``$PYCOMMS_TEST_*_URL``, defaulting to the services of docs/services.md). Tests
remove what their namespaces left with `pycomms.Bus.drop_namespace`.

On the path of every test through ``pythonpath`` in pyproject.toml, so that the
conformance, CLI and backend folders share one copy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from urllib.parse import urlsplit

REDIS_URL = os.environ.get("PYCOMMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("PYCOMMS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get("PYCOMMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("PYCOMMS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def delete_amqp_namespaces(namespaces: list[str], url: str = AMQP_URL) -> None:
    """Delete the queues and exchanges of ``namespaces``. Their names come from the local
    ``rabbitmqctl``, which speaks to the local default node only: elsewhere, nothing."""
    if not namespaces or shutil.which("rabbitmqctl") is None or (urlsplit(url).port or 5672) != 5672:
        return
    prefixes = tuple(f"pycomms.{ns}." for ns in namespaces)

    def names(kind: str) -> list[str]:
        listing = subprocess.run(
            ["rabbitmqctl", f"list_{kind}", "-q", "--no-table-headers", "name"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return [n.strip() for n in listing.stdout.splitlines() if n.strip().startswith(prefixes)]

    async def delete() -> None:
        import aio_pika

        connection = await aio_pika.connect(url.split("?", 1)[0], timeout=10)
        async with asyncio.timeout(60), connection:
            channel = await connection.channel()
            for queue in names("queues"):
                await channel.queue_delete(queue)
            for exchange in names("exchanges"):
                await channel.exchange_delete(exchange)

    asyncio.run(delete())
