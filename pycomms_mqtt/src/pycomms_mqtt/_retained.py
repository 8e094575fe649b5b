"""Reading and clearing retained messages: presence, dead letters, session records.

A read subscribes a short-lived connection to the filter and to a private sync topic,
then publishes to the sync topic: the broker queues the retained messages of a
subscription before it handles the next packet of the same connection, so when the
sync message comes back every retained message has arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from paho.mqtt.client import MQTTMessage

from pycomms import ConnectError, OperationError
from pycomms.spi import new_id

from ._link import Endpoint, Link, Session
from ._topics import Topics


async def read_retained(endpoint: Endpoint, topics: Topics, filters: Sequence[str], what: str) -> dict[str, bytes]:
    """Every non-empty retained message under ``filters``: topic -> payload."""
    token = new_id()
    sync = f"{topics.root}/y/{token}"
    found: dict[str, bytes] = {}
    done = asyncio.Event()

    def collect(message: MQTTMessage, generation: int) -> None:
        topic = message.topic
        if topic == sync:
            done.set()
        elif message.retain and isinstance(message.payload, bytes) and message.payload:
            found[topic] = message.payload

    link = Link(endpoint, Session(f"{topics.root}/q/{token}", subscriptions=(*filters, sync)), on_message=collect)
    await _start(link, what)
    try:
        await link.publish(sync, b"", what=what)
        try:
            async with asyncio.timeout(endpoint.operation_timeout):
                await done.wait()
        except TimeoutError:
            raise OperationError(
                f"mqtt: {what} on {endpoint.address} timed out after {endpoint.operation_timeout}s (operation_timeout)"
            ) from None
    finally:
        await link.close()
    return found


async def clear_retained(link: Link, topics: Sequence[str], what: str) -> int:
    """Remove the retained messages of ``topics`` (an empty retained publish each)."""
    await asyncio.gather(*(link.publish(topic, b"", retain=True, what=what) for topic in topics))
    return len(topics)


async def end_session(endpoint: Endpoint, client_id: str, what: str) -> None:
    """End a persistent session: connect with its id, clean start, no expiry, and leave."""
    link = Link(endpoint, Session(client_id))
    await _start(link, what)
    await link.close()


async def _start(link: Link, what: str) -> None:
    try:
        await link.start()
    except ConnectError as exc:
        raise OperationError(f"{exc} (for {what})") from None
