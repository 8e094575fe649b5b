"""Joining the cluster: the first round of dials when a node opens, and dialling
again, soon and often, until the node has learned the catalog.

Until a node knows the catalog it cannot tell who wants an event no service it knows
handles; the outbox keeps such events (see `Catalog.complete`) instead of dropping
them, and this module gets the node linked as fast as the peers allow. A peer that
refuses this node (wrong secret, a certificate its CA did not sign, another protocol
version) fails `connect()` with `ConnectError` when it is a seed or listed in the
same-host registry; one found later (gossip, mDNS, a registry entry that appears
after the start) is logged as an error once per address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol, TypeAlias

from pycomms import ConnectError, PyCommsError

from ._connection import HandshakeError

if TYPE_CHECKING:
    from ._connection import Connection

log = logging.getLogger("pycomms.tcp")

RETRY_FIRST = 0.05
RETRY_MAX = 2.0
"""Seconds between dial rounds while the catalog is not known (doubling from the first)."""

Target: TypeAlias = tuple[str, int, str | None, str]
"""``(host, port, expected node id, how it was found)``."""


class Joining(Protocol):
    """What joining needs from its node."""

    @property
    def catalog_complete(self) -> bool: ...

    def alone(self) -> None:
        """Nobody to learn the catalog from: what the node knows is all there is."""

    def dial(self, host: str, port: int, expect: str | None = None) -> Awaitable[Connection | None]:
        """Connect and handshake (raises `ConnectError` or `HandshakeError`)."""

    def targets(self) -> list[Target]:
        """Registry entries and seeds this node has no link with."""


_reported: set[str] = set()


def refusal(host: str, port: int, via: str, exc: HandshakeError) -> str:
    return (
        f"tcp: {host}:{port} ({via}) refused this node: {exc}; every node of a namespace needs the same "
        "secret=, certificates signed by the tls_ca of the others, and the same protocol version"
    )


async def _round(node: Joining, targets: list[Target]) -> tuple[list[str], bool]:
    """Dial ``targets`` at once; the refusals, and whether every one failed with a
    refused TCP connection to a registry entry (stale entries: nobody listens there)."""
    results = await asyncio.gather(*(node.dial(h, p, i) for h, p, i, _ in targets), return_exceptions=True)
    refused: list[str] = []
    stale = True
    for (host, port, _, via), result in zip(targets, results, strict=True):
        if isinstance(result, HandshakeError):
            refused.append(refusal(host, port, via, result))
        elif isinstance(result, PyCommsError):
            if via != "same-host registry" or not isinstance(result.__context__, ConnectionRefusedError):
                stale = False
            log.debug("%s:%d (%s) not reachable: %s", host, port, via, result)
        elif isinstance(result, BaseException):
            raise result
        else:
            stale = False
    return refused, stale


async def first_round(node: Joining) -> bool:
    """Dial every registry entry and seed at once; False if none could be reached and
    the catalog is still unknown (call `until_catalog_known` then). Raises
    `ConnectError` when one of them refused this node."""
    targets = node.targets()
    if not targets:
        node.alone()
        return True
    refused, stale = await _round(node, targets)
    if refused:
        raise ConnectError(refused[0]) from None
    if node.catalog_complete:
        return True
    if stale and all(via == "same-host registry" for *_, via in targets):
        node.alone()
        return True
    for host, port, _, via in node.targets():
        log.warning("%s:%d (%s) not reachable yet; dialling again until it is", host, port, via)
    return False


async def until_catalog_known(node: Joining) -> None:
    """Dial the registry entries and seeds again, more slowly each round, until the
    node learned the catalog (then the node's rescan takes over)."""
    delay = RETRY_FIRST
    while not node.catalog_complete:
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)
        targets = node.targets()
        if not targets:
            continue  # linked: the catalog comes with the peers' subscriptions
        refused, stale = await _round(node, targets)
        for reason in refused:
            report(reason)
        if not node.catalog_complete and stale and all(via == "same-host registry" for *_, via in targets):
            node.alone()


def report(reason: str) -> None:
    """Log a refusal by a peer found after the start, once per process and reason."""
    if reason not in _reported:
        _reported.add(reason)
        log.error("%s", reason)
