"""A flight: a message this node sent (on a link or to a local inbox) and waits an
outcome for, an ACK, a RELEASE or the loss of its link (see `Outbox`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._connection import Connection
    from ._membership import Target


@dataclass(slots=True, eq=False)
class Flight:
    """A message this node sent and waits an outcome for."""

    seq: int
    service: str
    data: bytes
    attempt: int
    row: int | None
    key: str | None
    target: Target
    conn: Connection | None
