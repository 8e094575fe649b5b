"""LAN discovery with mDNS/DNS-SD (``mdns=true``), through ``zeroconf``.

Each node registers ``NODE_ID._pycomms._tcp.local.`` with TXT records ``ns``
(namespace), ``id`` and ``proto``, and browses the same type; a node of the same
namespace that appears is dialled like a gossiped address.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ._handshake import PROTOCOL_VERSION

log = logging.getLogger("pycomms.tcp")
SERVICE_TYPE = "_pycomms._tcp.local."


class Mdns:
    """Announce this node and report the nodes of its namespace seen on the LAN to
    ``found(host, port, node_id)``."""

    def __init__(self, namespace: str, node_id: str, *, found: Callable[[str, int, str], None]) -> None:
        self._namespace = namespace
        self._node_id = node_id
        self._found = found
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._announce: Awaitable[Any] | None = None

    async def start(self, addr: tuple[str, int]) -> None:
        self._zc = AsyncZeroconf()
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{self._node_id}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(addr[0])],
            port=addr[1],
            properties={"ns": self._namespace, "id": self._node_id, "proto": str(PROTOCOL_VERSION)},
        )
        # registering returns the task that announces the service (about a second): let it run
        self._announce = await self._zc.async_register_service(self._info)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Added:
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str) -> None:
        if self._zc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._zc.zeroconf, 3000):
            return
        props: dict[Any, Any] = info.properties or {}
        ns, node_id = props.get(b"ns", b"").decode(), props.get(b"id", b"").decode()
        if ns != self._namespace or not node_id or node_id == self._node_id or info.port is None:
            return
        for host in info.parsed_addresses():
            log.debug("mDNS found node %s at %s:%d", node_id, host, info.port)
            self._found(host, info.port, node_id)
            break

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._browser is not None:
            await self._browser.async_cancel()
        if isinstance(self._announce, asyncio.Future) and not self._announce.done():
            self._announce.cancel()
            await asyncio.gather(self._announce, return_exceptions=True)
        if self._zc is not None:
            await self._zc.async_close()  # also unregisters the service (goodbye packets)
