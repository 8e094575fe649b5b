"""The ``redis://`` transport: Redis Streams with one consumer group per service.

Mapping (keys in `pycomms_redis._keys`):

- an event goes to its type's stream (``XADD NOMKSTREAM``: a stream exists once a
  service subscribed, so events nobody ever handled are not stored); each service
  that handles the type is a consumer group on that stream, so it gets its own copy;
- a command or request goes to its type's stream, created on first use so that it
  waits for its service; the first service to subscribe owns the type;
- retries, deliveries released at close and replays go to the service's own stream;
- a reply goes to the requesting node's reply stream, only while that stream exists.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from redis import exceptions as rex

from pycomms import PublishError
from pycomms.spi import BackendConfig, DeadLetter, Envelope, NodeInfo, ReplySink, Subscription

from ._batcher import Batcher
from ._capabilities import CAPABILITIES
from ._connection import make_client, warn_without_aof
from ._delayed import DelayedMover
from ._errors import TRANSIENT, describe, map_connect_errors, map_redis_errors
from ._keys import Keys
from ._options import RedisOptions, parse_options
from ._presence import Presence
from ._receiver import RedisReceiver, remove_observer
from ._replies import ReplyReader
from ._scripts import PUBLISH, REPLAY
from ._tasks import cancel_and_wait

log = logging.getLogger("pycomms.redis")

_CHUNK_BYTES = 4 * 1024 * 1024
_PAGE = 500


class RedisTransport:
    """The `Transport` of ``redis://`` and ``rediss://``.

    ``capabilities.persistent`` turns False at open when the server has no
    append-only file: then a server restart loses messages.
    """

    def __init__(self, config: BackendConfig, options: RedisOptions | None = None) -> None:
        self.capabilities = CAPABILITIES
        self._config = config
        self._options = options or parse_options(config.options)
        self._keys = Keys.for_namespace(config.namespace)
        self._client = make_client(config, self._options)
        self._replay = self._client.register_script(REPLAY)
        self._publish_script = self._client.register_script(PUBLISH)
        self._publisher: Batcher[Envelope, Any] = Batcher(
            self._flush_publish, self._options.max_batch, "pycomms:publish"
        )
        self._node: NodeInfo | None = None
        self._presence: Presence | None = None
        self._mover: DelayedMover | None = None
        self._receivers: list[RedisReceiver] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisTransport {self._config.redacted_url} namespace={self._config.namespace}>"

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        where = self._config.redacted_url.split("?", 1)[0]
        with map_connect_errors(f"connecting to {where}"):  # on failure the bus calls close()
            await self._client.ping()
            if not await warn_without_aof(self._client, where, warn=self._options.aof_warning):
                self.capabilities = dataclasses.replace(CAPABILITIES, persistent=False)
            self._node = node
            presence = Presence(self._client, self._keys, node, self._options.heartbeat)
            await presence.announce()
        self._presence = presence
        reader = ReplyReader(self._client, self._keys.replies(node.id), replies, self._options.block)
        self._spawn(presence.run(), "presence")
        self._spawn(reader.run(), "replies")
        self._spawn(self._sweep_observers(), "observers")

    def _spawn(self, coro: Any, what: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"pycomms:redis:{what}"))

    # publishing --------------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        for env in envelopes:
            if env.kind not in ("event", "command", "request", "reply"):
                raise PublishError(f"unknown envelope kind {env.kind!r}")
        await self._publisher.submit(envelopes)

    async def _flush_publish(self, envelopes: list[Envelope]) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.publish_timeout
        delay = 0.05
        chunks = list(self._publish_chunks(envelopes))
        done = 0
        while True:
            try:
                for keys, args in chunks[done:]:
                    await self._publish_script(keys=keys, args=args)
                    done += 1
                return [None] * len(envelopes)
            except TRANSIENT as exc:
                # A chunk's reply can be lost after the server ran it: sending it again
                # can duplicate (at-least-once), never lose.
                if loop.time() + delay > deadline:
                    raise PublishError(f"redis: publishing {len(envelopes)} message(s): {describe(exc)}") from exc
                log.warning("publish failed (%s); retrying in %.2fs", describe(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except rex.RedisError as exc:
                raise PublishError(f"redis: publishing {len(envelopes)} message(s): {describe(exc)}") from exc

    def _publish_chunks(self, envelopes: list[Envelope]) -> Iterator[tuple[list[str], list[Any]]]:
        """Script calls for ``envelopes``: keys deduplicated, at most ``_CHUNK_BYTES`` each."""
        keys: list[str] = []
        index: dict[str, int] = {}
        args: list[Any] = []
        size = 0
        for env in envelopes:
            data = env.encode()
            if args and size + len(data) > _CHUNK_BYTES:
                yield keys, args
                keys, index, args, size = [], {}, [], 0
            if env.kind == "event":
                mode, key = "e", self._keys.event_stream(env.type)
            elif env.kind == "reply":
                mode, key = "r", self._keys.replies(env.reply_to or "")
            else:
                mode, key = "c", self._keys.command_stream(env.type)
            position = index.get(key)
            if position is None:
                keys.append(key)
                position = index[key] = len(keys)
            args += (f"{mode}{position}", data)
            size += len(data)
        if args:
            yield keys, args

    # consuming ---------------------------------------------------------------------

    async def subscribe(self, subscription: Subscription) -> RedisReceiver:
        assert self._node is not None, "subscribe() before open()"
        keys = self._keys
        with map_redis_errors(f"subscribing service {subscription.service}"):
            commands = sorted(subscription.commands)
            owned: list[str] = []
            if commands:
                async with self._client.pipeline(transaction=False) as pipe:
                    for type_name in commands:
                        pipe.hsetnx(keys.owners, type_name, subscription.service)
                    pipe.hmget(keys.owners, commands)
                    *_, owners = await pipe.execute()
                for type_name, owner in zip(commands, owners, strict=True):
                    if owner == subscription.service.encode():
                        owned.append(type_name)
                    else:
                        log.warning(
                            "service %s handles %s, but service %s owns that command type and receives it",
                            subscription.service,
                            type_name,
                            owner.decode() if owner else "?",
                        )
            if subscription.ephemeral:
                entry = json.dumps({"node": self._node.id, "events": sorted(subscription.events)})
                await self._client.hset(keys.observers, subscription.service, entry)
            streams = [(keys.event_stream(t), "$") for t in sorted(subscription.events)]
            streams += [(keys.command_stream(t), "0") for t in owned]
            streams.append((keys.service_stream(subscription.service), "0"))
            if self._mover is None:
                self._mover = DelayedMover(self._client, keys, self._options.max_batch)
                self._spawn(self._mover.run(), "delayed")
            receiver = RedisReceiver(
                self._client, keys, self._options, subscription, streams, self._node.id, self._mover.scheduled
            )
            await receiver.setup()
        receiver.start()
        self._receivers.append(receiver)
        return receiver

    async def _sweep_observers(self) -> None:
        """Remove the groups and streams of ephemeral services whose node is gone (killed
        before it could remove them itself), so that they hold back no trimming."""
        while True:
            await asyncio.sleep(self._options.trim_interval)
            try:
                entries: Any = await self._client.hgetall(self._keys.observers)
                for raw_service, raw in entries.items():
                    entry = json.loads(raw)
                    if not await self._client.exists(self._keys.node(str(entry["node"]))):
                        service = raw_service.decode()
                        await remove_observer(self._client, self._keys, service, entry["events"])
                        log.info("removed ephemeral service %s of node %s, which is gone", service, entry["node"])
            except (rex.RedisError, OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("sweeping ephemeral services failed: %s", describe(exc))

    # presence and dead letters ----------------------------------------------------------

    async def nodes(self) -> list[NodeInfo]:
        assert self._presence is not None, "nodes() before open()"
        with map_redis_errors("listing nodes"):
            return await self._presence.nodes()

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        with map_redis_errors(f"reading dead letters of {service}"):
            entries: Any = await self._client.xrange(self._keys.dead_letters(service), count=limit)
        return [_letter(fields) for _, fields in entries]

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        dlq, target = self._keys.dead_letters(service), self._keys.service_stream(service)
        moved = 0
        with map_redis_errors(f"replaying dead letters of {service}"):
            async for chunk in self._letter_entries(dlq, ids):
                moved += int(await self._replay(keys=[dlq, target], args=chunk))
        return moved

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        dlq = self._keys.dead_letters(service)
        deleted = 0
        with map_redis_errors(f"purging dead letters of {service}"):
            async for chunk in self._letter_entries(dlq, ids):
                deleted += int(await self._client.xdel(dlq, *chunk))
        return deleted

    async def _letter_entries(self, dlq: str, ids: Sequence[str] | None) -> AsyncIterator[list[bytes]]:
        """Pages of dead-letter stream entry ids whose letter id is in ``ids`` (or all)."""
        wanted = None if ids is None else {i.encode() for i in ids}
        start: bytes | str = "-"
        while True:
            entries: Any = await self._client.xrange(dlq, min=start, count=_PAGE)
            if not entries:
                return
            chunk = [eid for eid, fields in entries if wanted is None or fields.get(b"i") in wanted]
            if chunk:
                yield chunk
            if len(entries) < _PAGE:
                return
            start = b"(" + entries[-1][0]

    # closing ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for receiver in self._receivers:  # normally closed by the bus already
            await receiver.close()
        await self._publisher.close()
        await cancel_and_wait(self._tasks)
        if self._presence is not None:
            try:
                async with asyncio.timeout(self._options.socket_timeout * 2):
                    await self._presence.leave()
            except (rex.RedisError, OSError, TimeoutError) as exc:
                log.warning("could not leave presence (%s); the node expires within 3 heartbeats", describe(exc))
        try:
            await self._client.aclose()
        except Exception as exc:  # close never raises
            log.debug("closing the redis client: %s", describe(exc))


def _letter(fields: dict[bytes, bytes]) -> DeadLetter:
    letter = DeadLetter.from_json(fields[b"l"])
    return dataclasses.replace(letter, envelope=fields.get(b"e", b""))
