"""The ``redis://`` transport: Redis Streams with one consumer group per service.

Mapping (keys in `pycomms_redis._keys`):

- an event goes to its type's stream (``XADD NOMKSTREAM``: a stream exists once a
  service subscribed, so events nobody ever handled are not stored); each service
  that handles the type is a consumer group on that stream, so it gets its own copy;
- a command or request goes to its type's stream, created on first use so that it
  waits for its service; the first service to subscribe owns the type;
- retries, deliveries released at close and replays go to the service's own stream;
- a reply goes to the requesting node's reply stream (``reply:<replyto>``); one that
  does not exist, as a foreign requester's may not, is created with a TTL of 60 s.
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
from ._deadline import CloseSteps, Deadlines, server_of
from ._delayed import DelayedMover
from ._errors import describe
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
        self._deadlines = Deadlines(
            server_of(config.url), self._options.connect_timeout, self._options.operation_timeout
        )
        self._close_steps = CloseSteps()

    def __repr__(self) -> str:
        return f"<RedisTransport {self._config.redacted_url} namespace={self._config.namespace}>"

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        self._node = node
        presence = Presence(self._client, self._keys, node, self._options.heartbeat)

        async def connect() -> None:  # on failure the bus calls close()
            await self._client.ping()
            if not await warn_without_aof(self._client, self._deadlines.server, warn=self._options.aof_warning):
                self.capabilities = dataclasses.replace(CAPABILITIES, persistent=False)
            await presence.announce()

        await self._deadlines.connect(connect)
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
            if env.kind not in ("event", "command", "request"):
                raise PublishError(f"publish() routes events, commands and requests; got kind {env.kind!r}")
        await self._submit(envelopes)

    async def send_reply(self, envelope: Envelope) -> None:
        # batched with the loop turn's publishes: one script call carries both
        await self._submit([envelope])

    async def _submit(self, envelopes: Sequence[Envelope]) -> None:
        try:  # a little slack: the batch's own deadline error, which says why, comes first
            async with asyncio.timeout(self._options.operation_timeout + 0.25):
                await self._publisher.submit(envelopes)
        except TimeoutError:
            raise self._deadlines.expired(PublishError, "publish to") from None

    async def _flush_publish(self, envelopes: list[Envelope]) -> list[Any]:
        chunks = list(self._publish_chunks(envelopes))
        done = 0

        async def send() -> None:
            # A chunk's reply can be lost after the server ran it: sending it again can
            # duplicate (at-least-once), never lose.
            nonlocal done
            for keys, args in chunks[done:]:
                await self._publish_script(keys=keys, args=args)
                done += 1

        await self._deadlines.call("publish to", send, error=PublishError)
        return [None] * len(envelopes)

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
        keys, node_id = self._keys, self._node.id
        if self._mover is None:
            self._mover = DelayedMover(self._client, keys, self._options.max_batch)
            self._spawn(self._mover.run(), "delayed")
        mover = self._mover

        async def record() -> RedisReceiver:  # every step is idempotent: safe to repeat after a lost reply
            owned = await self._own_commands(subscription)
            if subscription.ephemeral:
                entry = json.dumps({"node": node_id, "events": sorted(subscription.events)})
                await self._client.hset(keys.observers, subscription.service, entry)
            streams = [(keys.event_stream(t), "$") for t in sorted(subscription.events)]
            streams += [(keys.command_stream(t), "0") for t in owned]
            streams.append((keys.service_stream(subscription.service), "0"))
            receiver = RedisReceiver(
                self._client,
                keys,
                self._options,
                subscription,
                streams,
                node_id,
                mover.scheduled,
                self._deadlines,
                self._close_steps,
            )
            await receiver.setup()
            return receiver

        receiver = await self._deadlines.call(f"subscribing service {subscription.service!r} on", record)
        receiver.start()
        self._receivers.append(receiver)
        return receiver

    async def _own_commands(self, subscription: Subscription) -> list[str]:
        """The command types of ``subscription`` its service owns (first come, first served)."""
        commands = sorted(subscription.commands)
        if not commands:
            return []
        keys = self._keys
        async with self._client.pipeline(transaction=False) as pipe:
            for type_name in commands:
                pipe.hsetnx(keys.owners, type_name, subscription.service)
            pipe.hmget(keys.owners, commands)
            *_, owners = await pipe.execute()
        owned: list[str] = []
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
        return owned

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
        presence = self._presence
        assert presence is not None, "nodes() before open()"
        return await self._deadlines.call("nodes() on", presence.nodes)

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        async def read() -> Any:
            return await self._client.xrange(self._keys.dead_letters(service), count=limit)

        entries = await self._deadlines.call(f"dead_letters({service!r}) on", read)
        return [_letter(fields) for _, fields in entries]

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        dlq, target = self._keys.dead_letters(service), self._keys.service_stream(service)

        async def move() -> int:
            moved = 0
            async for chunk in self._letter_entries(dlq, ids):
                moved += int(await self._replay(keys=[dlq, target], args=chunk))
            return moved

        # Repeating after a lost reply moves nothing twice: a moved letter is gone.
        return await self._deadlines.call(f"replay({service!r}) on", move)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        dlq = self._keys.dead_letters(service)

        async def delete() -> int:
            deleted = 0
            async for chunk in self._letter_entries(dlq, ids):
                deleted += int(await self._client.xdel(dlq, *chunk))
            return deleted

        return await self._deadlines.call(f"purge({service!r}) on", delete)

    async def backlog(self, service: str) -> int | None:
        """Entries of the streams ``service`` reads on this bus not yet delivered to its
        consumer group (``XINFO GROUPS`` ``lag``, one pipelined round trip; pending
        deliveries and delayed retries are not counted); ``None`` for a service this
        bus does not serve, or when Redis cannot tell (``lag`` is nil after some
        deletions; servers before 7.0 have none)."""
        streams = [name for r in self._receivers if r._service == service for name in r._streams]
        if not streams or self._closed:
            return None
        group = service.encode()

        async def count() -> int | None:
            async with self._client.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xinfo_groups(stream)
                replies = await pipe.execute()
            lags = [g.get("lag") for groups in replies for g in groups if g.get("name") in (group, service)]
            return None if not lags or None in lags else sum(lags)

        return await self._deadlines.call(f"backlog({service!r}) on", count)

    async def drop_namespace(self) -> int:
        """Delete every key under the namespace's prefix (`pycomms_redis._keys`): found
        with ``SCAN MATCH``, removed with ``UNLINK``. The presence heartbeat stops first,
        so that it does not write this node's keys back."""
        presence = [t for t in self._tasks if t.get_name() == "pycomms:redis:presence"]
        await cancel_and_wait(presence)
        pattern = _glob_escape(self._keys.prefix) + "*"

        async def drop() -> int:
            removed = 0
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    removed += int(await self._client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(await self._client.unlink(*batch))
            return removed

        try:
            return await self._deadlines.call(f"drop_namespace({self._config.namespace!r}) on", drop)
        except BaseException:
            if self._presence is not None and not self._closed:
                self._spawn(self._presence.run(), "presence")  # the bus stays open: keep announcing it
            raise

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
        """Close receivers, flush publishes, leave presence, disconnect; each network
        step bounded (`CloseSteps`), so a silent server costs at most a few seconds."""
        if self._closed:
            return
        self._closed = True
        steps = self._close_steps
        for receiver in self._receivers:  # normally closed by the bus already
            await receiver.close()
        if not await self._publisher.close(steps.bound(), self._unsent_error):
            steps.silent = True
            log.warning("closing: publishes still unconfirmed after %.2fs were abandoned", steps.bound())
        await cancel_and_wait(self._tasks)
        if self._presence is not None:
            consequence = "the node expires from presence within 3 heartbeats"
            await steps.run("leaving presence", consequence, self._presence.leave())
        await steps.run("disconnecting", "its sockets are dropped", self._client.aclose())

    def _unsent_error(self) -> PublishError:
        server = self._deadlines.server
        return PublishError(f"redis: publish to {server} abandoned: the bus closed before the server confirmed it")


def _letter(fields: dict[bytes, bytes]) -> DeadLetter:
    letter = DeadLetter.from_json(fields[b"l"])
    return dataclasses.replace(letter, envelope=fields.get(b"e", b""))


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
