"""The ``nats://`` transport: NATS JetStream, one namespace = three streams and a bucket.

Mapping (names in `pycomms_nats._names`, listed in docs/interop/nats.md):

- an event goes to ``pycomms.<ns>.e.<type>`` in the events stream (interest retention:
  kept until every service consumer on that subject acked it; dropped at once when no
  service handles the type); each service has a durable pull consumer per event type;
- a command or request goes to ``pycomms.<ns>.c.<type>`` in the work stream (work-queue
  retention: kept until handled, also before any service started); the first service
  to create a consumer on a type owns it (JetStream allows one per subject there);
- a retry is ``-NAK`` with a delay on the same consumer; a release is ``-NAK``;
- a replayed dead letter goes to ``pycomms.<ns>.s.<service>`` (work stream), which only
  that service's consumer reads;
- a reply is a plain NATS message to ``pycomms.<ns>.r.<node>``, which that node subscribes to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from pycomms import ConnectError, PublishError
from pycomms.spi import (
    BackendConfig,
    DeadLetter,
    Envelope,
    NodeInfo,
    ReplySink,
    Subscription,
    describe_error,
    stop_tasks,
)

from ._capabilities import CAPABILITIES
from ._connection import CLOSE_STEP, STEP_ERRORS, Link
from ._deadletters import DeadLetters
from ._names import Names
from ._options import NatsOptions, parse_options
from ._presence import Presence
from ._publisher import CONTENT_TYPE, Outgoing, Publisher
from ._receiver import NatsReceiver

log = logging.getLogger("pycomms.nats")


class NatsTransport:
    """The `Transport` of ``nats://`` and ``tls://``."""

    def __init__(self, config: BackendConfig, options: NatsOptions | None = None) -> None:
        self._config = config
        self._options = options or parse_options(config.options)
        self.capabilities = (
            CAPABILITIES if self._options.storage == "file" else dataclasses.replace(CAPABILITIES, persistent=False)
        )
        self._names = Names.for_namespace(config.namespace)
        self._link = Link(config, self._options)
        self._publisher = Publisher(self._link, self._options.operation_timeout, self._options.max_publish_inflight)
        self._letters = DeadLetters(self._link, self._names, self._publisher)
        self._node: NodeInfo | None = None
        self._presence: Presence | None = None
        self._receivers: list[NatsReceiver] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<NatsTransport {self._config.redacted_url} namespace={self._config.namespace}>"

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        self._node = node
        await self._link.connect(f"pycomms {node.name} {node.id}")
        presence = Presence(self._link, self._names, node, self._options)

        async def on_reply(msg: Any) -> None:
            replies(msg.data)

        async def set_up() -> None:
            await self._publisher.start()
            try:
                await self._ensure_streams()
            except ServiceUnavailableError as exc:
                if exc.description is not None:  # a JetStream answer (a cluster electing a leader)
                    raise
                domain = self._options.domain
                why = (
                    f"is {domain!r} the domain (option domain), and does this server reach it?"
                    if domain
                    else "is JetStream enabled (nats-server -js) and up?"
                )
                link = self._link
                raise ConnectError(f"nats: no JetStream answers on {link.api} at {link.server}: {why}") from None
            await presence.setup()
            await presence.announce()
            await self._link.client.subscribe(self._names.replies(node.id), cb=on_reply)

        await self._link.call(
            "setting up streams and presence", set_up, error=ConnectError, timeout=self._options.connect_timeout
        )
        self._presence = presence
        limit = self._link.client.max_payload
        if self._config.max_message_size > limit:
            log.warning(
                "nats: max_message_size is %d bytes but the server's max_payload is %d: larger messages are refused",
                self._config.max_message_size,
                limit,
            )
        self._tasks.append(asyncio.create_task(presence.run(), name="pycomms:nats:presence"))

    async def _ensure_streams(self) -> None:
        names, options = self._names, self._options
        storage = StorageType.FILE if options.storage == "file" else StorageType.MEMORY
        common: dict[str, Any] = {
            "storage": storage,
            "num_replicas": options.replicas,
            "duplicate_window": options.duplicate_window,
        }
        wanted = [
            StreamConfig(
                name=names.events_stream,
                subjects=[f"{names.prefix}.e.>"],
                retention=RetentionPolicy.INTEREST,
                description="pycomms events: kept until every service consumer acked",
                **common,
            ),
            StreamConfig(
                name=names.work_stream,
                subjects=[f"{names.prefix}.c.>", f"{names.prefix}.s.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                description="pycomms commands, requests and replays: kept until handled",
                **common,
            ),
            StreamConfig(
                name=names.dead_letter_stream,
                subjects=[f"{names.prefix}.d.>"],
                retention=RetentionPolicy.LIMITS,
                description="pycomms dead letters, a subject per service",
                **common,
            ),
        ]
        js = self._link.js
        for config in wanted:
            try:
                await js.stream_info(config.name)
            except NotFoundError:
                await js.add_stream(config=config)

    # publishing ----------------------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        names = self._names
        outgoing = []
        for env in envelopes:
            if env.kind == "event":
                subject = names.event(env.type)
            elif env.kind in ("command", "request"):
                subject = names.command(env.type)
            else:
                raise PublishError(f"publish() routes events, commands and requests; got kind {env.kind!r}")
            outgoing.append(Outgoing(subject, env.encode(), env.id))
        await self._publisher.publish(outgoing)

    async def send_reply(self, envelope: Envelope) -> None:
        subject = self._names.replies(envelope.reply_to or "")
        await self._link.call(
            f"reply to {subject}",
            lambda: self._link.client.publish(subject, envelope.encode(), headers={"Content-Type": CONTENT_TYPE}),
            error=PublishError,
        )

    # consuming -----------------------------------------------------------------------------

    async def subscribe(self, subscription: Subscription) -> NatsReceiver:
        receiver = NatsReceiver(self._link, self._names, self._options, subscription, self._letters.store)
        await self._link.call(f"creating the consumers of service {subscription.service!r}", receiver.setup)
        receiver.start()
        self._receivers.append(receiver)
        return receiver

    # presence and dead letters -------------------------------------------------------------

    async def nodes(self) -> list[NodeInfo]:
        presence = self._presence
        assert presence is not None, "nodes() before open()"
        return await self._link.call("nodes()", presence.nodes)

    # each step of these has its own deadline (`DeadLetters`): a large store takes longer than one

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        return await self._letters.list(service, limit)

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        return await self._letters.replay(service, ids)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        return await self._letters.purge(service, ids)

    async def backlog(self, service: str) -> int | None:
        """Messages for ``service`` that its consumers on this bus have not delivered yet
        (`NatsReceiver.backlog`); ``None`` for a service this bus does not serve."""
        receivers = [r for r in self._receivers if r.service == service]
        if not receivers or self._closed:
            return None

        async def count() -> int:
            return sum([await r.backlog() for r in receivers])

        return await self._link.call(f"backlog({service!r})", count)

    async def drop_namespace(self) -> int:
        """Delete the namespace's three streams (their consumers go with them) and its
        presence bucket; the heartbeat stops first so it does not create it again."""
        await stop_tasks([t for t in self._tasks if t.get_name() == "pycomms:nats:presence"])
        js = self._link.js
        names = [*self._names.streams(), f"KV_{self._names.presence_bucket}"]

        async def drop() -> int:
            removed = 0
            for name in names:
                try:
                    await js.delete_stream(name)
                    removed += 1
                except NotFoundError:
                    pass
            return removed

        removed = await self._link.call(f"drop_namespace({self._config.namespace!r})", drop)
        self._presence = None  # its bucket is gone: nothing to leave at close
        return removed

    # closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close receivers, leave presence, disconnect; each network step bounded."""
        if self._closed:
            return
        self._closed = True
        for receiver in self._receivers:
            await receiver.close()
        await stop_tasks(self._tasks)
        if self._presence is not None:
            try:
                async with asyncio.timeout(CLOSE_STEP):
                    await self._presence.leave()
            except STEP_ERRORS as exc:
                log.warning(
                    "nats: leaving presence on %s failed (%s); the key expires within 3 heartbeats",
                    self._link.server,
                    describe_error(exc),
                )
        await self._link.close()
