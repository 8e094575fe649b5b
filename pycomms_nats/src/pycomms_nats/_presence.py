"""Presence: one KV bucket per namespace, a key per node (its id) holding its `NodeInfo`;
the bucket's TTL is three heartbeats, so a node that stops refreshing its key vanishes
within that; a node that closes deletes its key at once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError

from pycomms.spi import NodeInfo, describe_error

from ._connection import STEP_ERRORS, Link
from ._names import Names
from ._options import NatsOptions

log = logging.getLogger("pycomms.nats")


class Presence:
    def __init__(self, link: Link, names: Names, node: NodeInfo, options: NatsOptions) -> None:
        self._link = link
        self._names = names
        self._node = node
        self._options = options
        self._kv: Any = None

    async def setup(self) -> None:
        """Find or create the bucket."""
        js, bucket, options = self._link.js, self._names.presence_bucket, self._options
        try:
            self._kv = await js.key_value(bucket)
        except BucketNotFoundError:
            self._kv = await js.create_key_value(
                config=KeyValueConfig(
                    bucket=bucket,
                    description="pycomms presence: a key per live node",
                    history=1,
                    ttl=3 * options.heartbeat,
                    storage=StorageType.FILE if options.storage == "file" else StorageType.MEMORY,
                    replicas=options.replicas,
                )
            )

    def _key_subject(self) -> str:
        """The subject that writes this node's key: ``$KV.<bucket>.<id>``, behind the
        domain's API prefix when there is a domain (a leaf node forwards a hub's
        ``$JS.<domain>.API``, not its ``$KV`` subjects; nats-py's KeyValue does not)."""
        subject = f"$KV.{self._names.presence_bucket}.{self._node.id}"
        return f"{self._link.api}.{subject}" if self._options.domain else subject

    async def announce(self) -> None:
        await self._link.js.publish(self._key_subject(), self._node.seen().to_json())

    async def run(self) -> None:
        """Refresh this node's key every heartbeat (failures logged, never raised)."""
        while True:
            await asyncio.sleep(self._options.heartbeat)
            try:
                async with asyncio.timeout(self._options.operation_timeout):
                    await self.announce()
            except STEP_ERRORS as exc:
                log.warning("nats: presence heartbeat on %s failed: %s", self._link.server, describe_error(exc))

    async def nodes(self) -> list[NodeInfo]:
        watcher = await self._kv.watchall(ignore_deletes=True)
        found: list[NodeInfo] = []
        try:
            while True:
                entry = await watcher.updates(timeout=self._options.operation_timeout)
                if entry is None:
                    break
                if entry.value and entry.operation is None:
                    try:
                        found.append(NodeInfo.from_json(entry.value))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("nats: presence key %s is unreadable: %s", entry.key, describe_error(exc))
        finally:
            await watcher.stop()
        return found

    async def leave(self) -> None:
        await self._link.js.publish(self._key_subject(), headers={"KV-Operation": "DEL"})
