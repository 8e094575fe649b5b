"""The outbox, as functions: ``publish_in(conn, bus, ...)`` is
``bus.publish(..., connection=conn)``.

The events are written with the caller's `AsyncConnection`, in the transaction it has
open: if that transaction rolls back, nothing was published; once it commits, the rows
are there for consumers. Consumers claim by availability, not by increasing id, so a
transaction that commits late is never skipped. See `SqlTransport.publish_in`.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from pycomms import Bus, Command, Event


async def publish_in(
    conn: AsyncConnection, bus: Bus, *events: Event, key: str | None = None, headers: dict[str, str] | None = None
) -> None:
    """Publish ``events`` inside ``conn``'s open transaction (the outbox).

    ``conn`` must be a connection to the database of ``bus`` (an SQL bus). The events
    are delivered if and only if the caller's transaction commits.
    """
    await bus.publish(*events, key=key, headers=headers, connection=conn)


async def send_in(
    conn: AsyncConnection, bus: Bus, *commands: Command, key: str | None = None, headers: dict[str, str] | None = None
) -> None:
    """Send ``commands`` inside ``conn``'s open transaction (the outbox)."""
    await bus.send(*commands, key=key, headers=headers, connection=conn)
