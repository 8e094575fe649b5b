"""Wake-ups between the buses of one process and event loop on one database.

A publish wakes this process's receivers of the types it wrote at once, and a reply
to a node of this process is handed over directly; other processes learn through
LISTEN/NOTIFY (PostgreSQL) or by polling.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import Protocol

from pycomms.spi import ReplySink


class Wakeable(Protocol):
    @property
    def service(self) -> str: ...
    @property
    def types(self) -> frozenset[str]: ...
    def wake(self) -> None: ...


class LocalGroup:
    """The receivers and reply sinks of one database and namespace in one event loop."""

    def __init__(self) -> None:
        self.receivers: set[Wakeable] = set()
        self.reply_sinks: dict[str, ReplySink] = {}

    def wake_types(self, type_names: Iterable[str]) -> None:
        names = frozenset(type_names)
        for receiver in self.receivers:
            if not receiver.types.isdisjoint(names):
                receiver.wake()

    def wake_service(self, service: str) -> None:
        for receiver in self.receivers:
            if receiver.service == service:
                receiver.wake()


_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], LocalGroup]] = (
    weakref.WeakKeyDictionary()
)


def local_group(database: str, namespace: str) -> LocalGroup:
    """The group of the running loop for ``database`` and ``namespace``."""
    groups = _groups.setdefault(asyncio.get_running_loop(), {})
    group = groups.get((database, namespace))
    if group is None:
        group = groups[(database, namespace)] = LocalGroup()
    return group
