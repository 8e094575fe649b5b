"""The options of ``mqtt://`` URLs, validated once when the bus is built."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pycomms import spi


class MqttOptions(BaseModel):
    """Backend options, from the URL query or keyword arguments of `pycomms.connect`.

    Times are seconds. ``connect_timeout`` bounds connecting (TCP, TLS, CONNECT/CONNACK),
    ``operation_timeout`` each later call (publish until PUBACK, subscribe, presence,
    dead letters, drop), reconnections included.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout: float = Field(5.0, gt=0)
    """Deadline of connecting: TCP, TLS and the broker's CONNACK."""
    operation_timeout: float = Field(10.0, gt=0)
    """Deadline of every later call, waiting through a reconnection included."""
    heartbeat: float = Field(2.0, ge=1)
    """Presence refresh, in seconds; the MQTT keep-alive is twice it, so the broker drops a
    silent link (and publishes the node's Last Will) after 3 heartbeats, and a node that
    stops refreshing is hidden after 3 too."""
    session_expiry: int = Field(7 * 86400, ge=60, le=0xFFFFFFFF)
    """How long the broker keeps a stopped service's session (its subscriptions and the
    messages queued for it), in seconds."""
    receive_maximum: int = Field(65535, ge=1, le=65535)
    """MQTT 5 Receive Maximum of a consuming session: unacknowledged deliveries the broker
    may have out to one instance at once (handlers still run at most ``concurrency``).
    High on purpose: what the broker cannot send it queues, and Mosquitto queues only
    ``max_queued_messages`` (1000 by default) per client, then drops, silently to us."""
    topic_prefix: str = Field("pycomms", min_length=1, pattern=r"^[^#+$/][^#+]*$")
    """First topic level(s) of every PyComms topic; the namespace comes after it."""
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True


def parse_options(options: dict[str, Any]) -> MqttOptions:
    """Validate ``options``; raise `ConfigError` naming the bad option and what is accepted."""
    return spi.parse_options(MqttOptions, options, backend="mqtt")
