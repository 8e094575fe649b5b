"""Where everything lives in Redis: the key layout of one namespace.

Every key starts with ``pycomms:{NAMESPACE}:``. The braces are a Redis Cluster hash
tag: all keys of a namespace hash to one slot, so the Lua scripts that touch several
of them stay atomic and legal on a cluster too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names of one namespace."""

    prefix: str

    @classmethod
    def for_namespace(cls, namespace: str) -> Keys:
        return cls(f"pycomms:{{{namespace}}}:")

    def event_stream(self, type_name: str) -> str:
        """Stream of one event type; each subscribing service is a consumer group."""
        return f"{self.prefix}ev:{type_name}"

    def command_stream(self, type_name: str) -> str:
        """Stream of one command or request type; its owning service is the only group."""
        return f"{self.prefix}cmd:{type_name}"

    def service_stream(self, service: str) -> str:
        """Stream of one service's retries, released deliveries and replays."""
        return f"{self.prefix}svc:{service}"

    def dead_letters(self, service: str) -> str:
        """Stream of one service's dead letters."""
        return f"{self.prefix}dlq:{service}"

    @property
    def owners(self) -> str:
        """Hash: command type name -> the service that owns it."""
        return f"{self.prefix}owners"

    @property
    def observers(self) -> str:
        """Hash: ephemeral service -> JSON ``{"node", "events"}``, so that the groups of
        an observer whose node died can be removed by any other node."""
        return f"{self.prefix}observers"

    @property
    def delayed(self) -> str:
        """Sorted set of delayed retries, scored by due time (server ms)."""
        return f"{self.prefix}delayed"

    @property
    def nodes(self) -> str:
        """Set of node ids that announced themselves (pruned of expired ones on read)."""
        return f"{self.prefix}nodes"

    def node(self, node_id: str) -> str:
        """Presence key of one node (its `NodeInfo` as JSON), with a TTL."""
        return f"{self.prefix}node:{node_id}"

    def replies(self, node_id: str) -> str:
        """Stream of the replies addressed to one node, with the node's TTL."""
        return f"{self.prefix}reply:{node_id}"
