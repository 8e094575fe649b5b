"""The transport SPI: what a backend implements to carry PyComms messages.

A backend is a `Transport` plus a pluggy hook that builds it (see `pycomms.hookspecs`).
Everything else, namely validation, retry policy, dead-letter format, request/reply,
routing of handlers, lives in core once for every backend. A transport only moves
opaque encoded envelopes (``bytes``) and keeps the few facts routing needs.

Contract for every method below:

- All methods are coroutines run on the bus's event loop; a transport need not be
  thread-safe. Calls may overlap (many concurrent ``publish`` calls are normal and
  should share round trips).
- Errors leave a transport only as `pycomms.PyCommsError` subclasses
  (`ConnectError`, `PublishError`, ...), raised ``from`` the driver's exception.
- ``close`` is called once, after every receiver was closed; it must not raise.
- Every network operation has a deadline. A backend accepts the options
  ``connect_timeout`` (connecting: TCP, TLS, the server's greeting, auth) and
  ``operation_timeout`` (each later call: publish, settle, presence, dead letters,
  drop) in seconds, with defaults that fit its broker, and on expiry raises
  `ConnectError` / `PublishError` / `OperationError` naming the backend, the host
  (never a secret) and the operation. A background step (a settle, a heartbeat) that
  passes its deadline is logged and retried or left to the lease, never hung on.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from pydantic_core import from_json, to_json

from ._boundary import describe_error, map_errors, parse_options, redact_url
from ._envelope import (
    DEFAULT_MAX_MESSAGE_SIZE,
    STRUCTURED_CONTENT_TYPE,
    WIRE_VERSION,
    Envelope,
    EnvelopeError,
    Kind,
    new_id,
    peek_type,
)

__all__ = [
    "CLOSE_BOUND",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "STRUCTURED_CONTENT_TYPE",
    "WIRE_VERSION",
    "BackendConfig",
    "BacklogTransport",
    "Capabilities",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "EnvelopeError",
    "Kind",
    "NodeInfo",
    "Receiver",
    "ReplySink",
    "SchemeInfo",
    "Subscription",
    "TransactionalTransport",
    "Transport",
    "describe_error",
    "map_errors",
    "new_id",
    "parse_options",
    "peek_type",
    "redact_url",
    "stop_tasks",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can promise; the conformance kit tests exactly these. Every
    field is required: a backend states each promise, none is assumed.

    - ``retention``: messages for a service that has started once are kept while all
      its instances are down.
    - ``persistent``: messages survive a restart of the broker/process that holds them.
    - ``delayed_delivery``: ``Delivery.retry(delay)`` is honoured by the backend itself
      rather than emulated.
    - ``ordering``: messages with the same ``key`` from one publisher are handled in
      order by a service whose concurrency is 1.
    - ``presence``: ``nodes()`` sees other processes (not only this one).
    - ``cross_process``: buses in different OS processes can talk to each other.
    - ``transactional_publish``: the transport implements `TransactionalTransport`, so
      ``publish(..., connection=conn)`` writes inside the caller's own transaction.
    """

    retention: bool
    persistent: bool
    delayed_delivery: bool
    ordering: bool
    presence: bool
    cross_process: bool
    transactional_publish: bool


@dataclass(frozen=True, slots=True)
class SchemeInfo:
    """One URL scheme a plugin serves, for ``pycomms backends`` and error messages.

    ``capabilities``: what the transport for this scheme declares (shown by
    ``pycomms backends --capabilities``); ``None`` when it depends on the URL.
    """

    scheme: str
    distribution: str
    description: str
    capabilities: Capabilities | None = None


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """What a backend factory receives.

    ``url`` is the user's URL with the core's own query options removed;
    ``options`` holds the remaining query options merged with keyword options given to
    `pycomms.connect` (keyword wins). A backend validates ``options`` and raises
    `pycomms.ConfigError` naming any option it does not accept.
    """

    url: str
    scheme: str
    namespace: str
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One running bus, as seen by presence (``Bus.nodes()``).

    Times are UNIX seconds. ``handles`` lists the message type names the node's
    services handle.
    """

    id: str
    name: str
    services: tuple[str, ...] = ()
    handles: tuple[str, ...] = ()
    host: str = ""
    pid: int = 0
    started_at: float = 0.0
    last_seen: float = 0.0

    def seen(self, when: float | None = None) -> NodeInfo:
        return replace(self, last_seen=time.time() if when is None else when)

    def to_json(self) -> bytes:
        return to_json(
            {
                "id": self.id,
                "name": self.name,
                "services": list(self.services),
                "handles": list(self.handles),
                "host": self.host,
                "pid": self.pid,
                "started_at": self.started_at,
                "last_seen": self.last_seen,
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeInfo:
        raw = from_json(data)
        return cls(
            id=str(raw["id"]),
            name=str(raw["name"]),
            services=tuple(raw.get("services", ())),
            handles=tuple(raw.get("handles", ())),
            host=str(raw.get("host", "")),
            pid=int(raw.get("pid", 0)),
            started_at=float(raw.get("started_at", 0.0)),
            last_seen=float(raw.get("last_seen", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a service gave up on.

    ``id`` is the message id; ``reason`` is one of ``failed`` (handler raised on the
    last attempt), ``rejected`` (handler raised `Reject`), ``invalid`` (body failed
    validation), ``unknown_type``, ``malformed`` or ``too_large``. ``body`` is the
    decoded message body when it could be decoded, else ``None``. ``source`` is the
    publishing node. ``envelope`` holds the original encoded envelope, for replay.
    """

    id: str
    type: str
    service: str
    reason: str
    error: str
    attempts: int
    failed_at: float
    body: Any = None
    source: str = ""
    envelope: bytes = b""

    def to_json(self) -> bytes:
        """Serialize for storage in a backend."""
        return to_json(
            {
                "id": self.id,
                "type": self.type,
                "service": self.service,
                "reason": self.reason,
                "error": self.error,
                "attempts": self.attempts,
                "failed_at": self.failed_at,
                "body": self.body,
                "source": self.source,
                "envelope": base64.b64encode(self.envelope).decode("ascii"),
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> DeadLetter:
        raw = from_json(data)
        return cls(
            id=str(raw["id"]),
            type=str(raw["type"]),
            service=str(raw["service"]),
            reason=str(raw["reason"]),
            error=str(raw["error"]),
            attempts=int(raw["attempts"]),
            failed_at=float(raw["failed_at"]),
            body=raw.get("body"),
            source=str(raw.get("source", "")),
            envelope=base64.b64decode(raw.get("envelope", "")),
        )


@dataclass(frozen=True, slots=True)
class Subscription:
    """A service's interest, given to `Transport.subscribe` when an instance starts.

    ``events``: event type names (fan-out: each service gets its own copy).
    ``commands``: command and request type names (one instance of one service).
    The backend records the subscription durably where it can, so that messages for
    a service that started once are retained while its instances are down.
    """

    service: str
    events: frozenset[str]
    commands: frozenset[str]
    concurrency: int
    ephemeral: bool = False
    """An observer (``pycomms listen``, a chat window): events only (``commands`` is
    empty), delivered only while the instance runs. Nothing is retained for it and its
    queues, groups or rows are removed when its receiver closes; a backend also drops
    them when the owning node dies, where it can (and documents when it cannot)."""


@runtime_checkable
class Delivery(Protocol):
    """One delivery of one message to one service instance.

    Exactly one settle call (``ack``, ``retry``, ``dead_letter``) is made per delivery
    by core. A settle call on a delivery whose lease has expired or been released
    (the message moved on to another instance) must settle nothing and not raise.
    """

    data: bytes
    """The encoded envelope, exactly as published."""

    attempt: int
    """1 for the first delivery, then one more for each retry or redelivery."""

    async def ack(self) -> None:
        """Done: remove the message for this service.

        May return before the backend confirmed (acks batched in the background), as
        long as `Receiver.close` flushes them; an ack lost in a crash only means the
        message is delivered again (at-least-once)."""

    async def retry(self, delay: float) -> None:
        """Deliver again to this service (any instance) after ``delay`` seconds, with
        ``attempt + 1``. Must not block the caller for ``delay``."""

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Remove the message and store ``letter`` in the service's dead letters."""


@runtime_checkable
class Receiver(Protocol):
    """A running consumption of one `Subscription` by one bus."""

    async def receive(self, max_messages: int) -> Sequence[Delivery]:
        """Wait for and return between 1 and ``max_messages`` deliveries.

        Returns an empty sequence once the receiver is closed. Core calls this from
        one task at a time and never asks for more than it has free handler slots.
        Core cancels a pending ``receive`` when the bus closes: a message fetched but
        not yet returned must then not be lost (release it, or let the backend's
        visibility timeout hand it to another instance).
        """

    async def close(self) -> None:
        """Stop receiving. Deliveries not yet settled are released unacknowledged
        so that another instance receives them (at once or after the backend's
        visibility timeout). Wakes a pending ``receive``, which returns empty."""


ReplySink = Callable[[bytes], None]
"""Called by a transport with each encoded reply envelope addressed to this node."""


@runtime_checkable
class Transport(Protocol):
    """A backend's connection, owned by one bus."""

    capabilities: Capabilities

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        """Connect, announce ``node`` to presence and start passing replies whose
        ``reply_to`` is ``node.id`` to ``replies``. Raises `ConnectError`."""

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Hand envelopes to the backend; return once it accepted all of them.

        Routing by ``envelope.kind`` (never ``reply``: those go to `send_reply`):
        ``event``: one copy to every service whose subscription lists
        ``envelope.type``; ``command``/``request``: one copy to the service handling
        the type. Use ``envelope.encode()`` (cached) for the bytes. Raises
        `PublishError`.
        """

    async def send_reply(self, envelope: Envelope) -> None:
        """Send a reply (``kind == "reply"``) to the node ``envelope.reply_to``, whose
        `ReplySink` gets ``envelope.encode()``. Best effort: it may be dropped if that
        node is gone. Raises `PublishError`."""

    async def subscribe(self, subscription: Subscription) -> Receiver:
        """Record the subscription and start receiving for it."""

    async def nodes(self) -> list[NodeInfo]:
        """Live nodes, this one included; a node closed cleanly is absent at once."""

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``service``, oldest first."""

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        """Move dead letters (all, or those with ``ids``) back to ``service`` only,
        with attempt 1; return how many were moved."""

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters (all, or those with ``ids``); return how many."""

    async def drop_namespace(self) -> int:
        """Remove every broker-side object of this bus's namespace: streams, keys,
        queues, exchanges, tables, rows, registry entries, this node's own presence
        included, and return how many objects were removed. Core calls it only after
        checking that no other node of the namespace is present (or when forced);
        ``close`` is called afterwards and must not fail because the objects are gone.
        Raises `OperationError`."""

    async def close(self) -> None:
        """Leave presence at once and release every resource. Never raises.
        Core bounds it (see `CLOSE_BOUND`); a transport should finish well within.

        A transport that can hold accepted messages in memory only (``tcp://``
        without ``spool=``) sets an ``unsent: int`` attribute here to the number it
        still held, and logs it; core shows it as `Bus.unsent`."""


CLOSE_BOUND = 5.0
"""Seconds `Bus.close(grace)` may take beyond ``grace`` (flushing, releasing,
disconnecting), even when the broker is silent; core abandons what is still running
then, with an error in the log."""


@runtime_checkable
class TransactionalTransport(Transport, Protocol):
    """A transport that can publish inside a transaction the caller owns (an outbox)."""

    async def publish_in(self, connection: Any, envelopes: Sequence[Envelope]) -> None:
        """Write ``envelopes`` with ``connection`` (the caller's open transaction) so
        they are delivered if and only if that transaction commits. Raises
        `TypeError` for a connection the backend cannot use, `PublishError` else."""


@runtime_checkable
class BacklogTransport(Transport, Protocol):
    """A transport that can tell cheaply how many messages wait for a service (the
    ``pycomms.backlog`` gauge of pycomms-otel). Optional: a transport without it
    reports nothing, which means "cannot tell cheaply"."""

    async def backlog(self, service: str) -> int | None:
        """How many messages for ``service`` are ready and not yet taken by any
        instance (neither those being handled nor delayed retries are counted), from
        one cheap backend query: it runs once per metrics collection, never per
        message, and must not scan. ``None`` when the backend cannot tell now (e.g.
        ``service`` is not served by this bus, or the bus is closed). Raises
        `OperationError`."""


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any] | None], *, recancel_after: float = 0.1, give_up_after: float | None = None
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` (``None`` entries skipped) and wait until each has ended,
    cancelling again every ``recancel_after`` seconds while one runs on.

    Why: a driver can swallow a cancellation. On Python < 3.12 ``asyncio.wait_for``
    returns the result instead of raising when the cancellation of its task arrives in
    the same loop iteration as that result (CPython gh-86296; asyncmy's connect uses
    it), and redis-py's zero-timeout socket check (``asyncio.timeout(0)``) turns a
    cancel landing inside it into a ``TimeoutError`` it handles. A close that cancelled
    once and awaited would then wait forever. (This is the one place that explains it.)

    With ``give_up_after`` seconds, the tasks still running then are returned
    (abandoned); without, it waits as long as it takes and returns ``[]``. The outcome
    of every task that ended is retrieved, so none is reported as "never retrieved";
    callers that care inspect ``task.exception()``.
    """
    running = [task for task in tasks if task is not None]
    loop = asyncio.get_running_loop()
    end = None if give_up_after is None else loop.time() + give_up_after
    pending = {task for task in running if not task.done()}
    while pending and (end is None or loop.time() < end):
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel_after)
    for task in running:
        if task.done() and not task.cancelled():
            task.exception()
    return [task for task in running if not task.done()]
