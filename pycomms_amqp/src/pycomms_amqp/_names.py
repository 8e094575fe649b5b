"""Broker-side names and queue arguments: everything lives under ``pycomms.{namespace}.``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ATTEMPT_HEADER = "pycomms-attempt"
"""Header carrying the attempt number of a republished (retried) message."""
QUEUE_HEADER = "pycomms-queue"
"""Header of a dead letter: the queue the message came from, where replay sends it."""
DELAY_HEADER = "pycomms-delay"
"""Header matched by the delay exchange to pick the TTL queue of a delay bucket."""

# A delay queue outlives its last declaration by this long, so that every message in it
# expires (and is dead-lettered back) before the queue itself can expire.
DELAY_QUEUE_SLACK_MS = 120_000
# How long a delay-queue declaration is trusted before it is declared again.
DELAY_REDECLARE_S = 30.0


@dataclass(frozen=True, slots=True)
class Names:
    """The names of one namespace's exchanges and queues."""

    namespace: str

    @property
    def prefix(self) -> str:
        return f"pycomms.{self.namespace}"

    @property
    def events(self) -> str:
        """Topic exchange for events; routing key = event type name."""
        return f"{self.prefix}.events"

    @property
    def delay(self) -> str:
        """Headers exchange routing retries to the TTL queue of their delay bucket."""
        return f"{self.prefix}.delay"

    @property
    def presence(self) -> str:
        """Fanout exchange of presence heartbeats."""
        return f"{self.prefix}.presence"

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Every exchange of the namespace (declared at each connection)."""
        return (self.events, self.delay, self.presence, self.replies)

    def service_queue(self, service: str) -> str:
        """Durable queue of a service's events."""
        return f"{self.prefix}.svc.{service}"

    def command_queue(self, type_name: str) -> str:
        """Durable queue of one command or request type."""
        return f"{self.prefix}.cmd.{type_name}"

    def dead_letter_queue(self, service: str) -> str:
        """Durable queue holding a service's dead letters."""
        return f"{self.prefix}.dlq.{service}"

    def delay_queue(self, delay_ms: int) -> str:
        """TTL queue of one delay bucket; expired messages go back to their queue."""
        return f"{self.prefix}.delay.{delay_ms}"

    @property
    def registry(self) -> str:
        """Durable queue recording the namespace's named queues (see `Registry`)."""
        return f"{self.prefix}.registry"

    @property
    def replies(self) -> str:
        """Direct exchange of replies; routing key = the requesting node's id. Each node
        binds a server-named exclusive queue to it, so a new connection never collides
        with the queue of a previous one the broker has not dropped yet."""
        return f"{self.prefix}.replies"


def work_queue_arguments(queue_type: str) -> dict[str, Any]:
    """Arguments of service and command queues (every declarer must use the same)."""
    return {"x-queue-type": queue_type}


def delay_queue_arguments(delay_ms: int) -> dict[str, Any]:
    """A classic TTL queue dead-lettering to the default exchange, i.e. back to the queue
    named by the message's routing key. One TTL per queue: no head-of-line blocking."""
    return {
        "x-queue-type": "classic",
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-expires": delay_ms + DELAY_QUEUE_SLACK_MS,
    }


def delay_bucket_ms(delay: float) -> int:
    """``delay`` seconds rounded to two significant digits in milliseconds (at most 5%
    off), so that jittered delays share a few TTL queues instead of one queue each."""
    ms = max(1, round(delay * 1000))
    if ms < 100:
        return ms
    digits = len(str(ms)) - 2
    return int(round(ms, -digits))
