"""Presence: each node refreshes a key holding its `NodeInfo` with a TTL of three
heartbeats, and deletes it when it closes."""

from __future__ import annotations

import asyncio
import logging

from redis import exceptions as rex
from redis.asyncio import Redis

from pycomms.spi import NodeInfo

from ._errors import describe
from ._keys import Keys
from ._scripts import HEARTBEAT, NODES

log = logging.getLogger("pycomms.redis")


class Presence:
    """Announces one node and lists the live ones."""

    def __init__(self, client: Redis, keys: Keys, node: NodeInfo, heartbeat: float) -> None:
        self._client = client
        self._keys = keys
        self._node = node
        self._heartbeat = heartbeat
        self._ttl_ms = round(3 * heartbeat * 1000)
        self._beat = client.register_script(HEARTBEAT)
        self._list = client.register_script(NODES)

    async def announce(self) -> None:
        """Write the node's key (also recreating its reply stream if the server lost it)."""
        node_id = self._node.id
        await self._beat(
            keys=[self._keys.node(node_id), self._keys.nodes, self._keys.replies(node_id)],
            args=[self._node.seen().to_json(), self._ttl_ms, node_id],
        )

    async def run(self) -> None:
        """Refresh the key every heartbeat until cancelled."""
        failing = False
        while True:
            await asyncio.sleep(self._heartbeat if not failing else min(self._heartbeat, 0.5))
            try:
                await self.announce()
            except (rex.RedisError, OSError) as exc:
                if not failing:
                    log.warning("node %s: presence heartbeat failed: %s", self._node.id, describe(exc))
                failing = True
                continue
            if failing:
                log.info("node %s: presence heartbeat works again", self._node.id)
            failing = False

    async def nodes(self) -> list[NodeInfo]:
        raw = await self._list(keys=[self._keys.nodes], args=[self._keys.node("")])
        found = [NodeInfo.from_json(item) for item in raw]
        return sorted(found, key=lambda n: (n.started_at, n.id))

    async def leave(self) -> None:
        node_id = self._node.id
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.delete(self._keys.node(node_id), self._keys.replies(node_id))
            pipe.srem(self._keys.nodes, node_id)
            await pipe.execute()
