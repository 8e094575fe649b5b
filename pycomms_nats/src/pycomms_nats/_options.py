"""The options of ``nats://`` URLs, validated once when the bus is built."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pycomms import spi


class NatsOptions(BaseModel):
    """Backend options, from the URL query or keyword arguments of `pycomms.connect`.

    Times are seconds. ``connect_timeout`` bounds connecting (TCP, TLS, the INFO/CONNECT
    exchange, the stream and bucket set-up); ``operation_timeout`` bounds every later
    call, retries through a reconnect included. A silent link is noticed after
    ``ping_interval * (max_outstanding_pings + 1)`` seconds and the client reconnects.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout: float = Field(5.0, gt=0)
    """Deadline of connecting, set-up of streams, bucket and presence included."""
    operation_timeout: float = Field(10.0, gt=0)
    """Deadline of every later call (publish, presence, dead letters, drop); a publish
    is re-sent with the same ``Nats-Msg-Id`` until then, so the server keeps one copy."""
    visibility_timeout: float = Field(30.0, gt=0)
    """The consumers' ``ack_wait``: a delivery not settled nor renewed for this long goes
    to another instance. Live handlers renew it (``+WPI``) every third of it."""
    heartbeat: float = Field(2.0, gt=0)
    """Presence refresh period; the KV bucket's TTL is 3 periods."""
    ping_interval: float = Field(2.0, gt=0)
    """Client PING period (nats-py); with ``max_outstanding_pings`` it bounds silent-link detection."""
    max_outstanding_pings: int = Field(2, ge=1)
    fetch_wait: float = Field(2.0, gt=0)
    """Lifetime (``expires``) of one pull request; also how long a pull lost in a
    reconnect can hold a consumer back."""
    replicas: int = Field(1, ge=1, le=5)
    """Replicas of every stream and of the bucket (3 on a three-node cluster)."""
    storage: Literal["file", "memory"] = "file"
    duplicate_window: float = Field(120.0, gt=0)
    """How long the server remembers a ``Nats-Msg-Id``: re-sent publishes within it are stored once."""
    max_publish_inflight: int = Field(1000, ge=1)
    """Most JetStream publishes awaiting their acknowledgement per ``publish`` call."""
    token: str | None = None
    user_credentials: str | None = None
    """Path of a ``.creds`` file (JWT and NKey seed)."""
    nkeys_seed: str | None = None
    """Path of an NKey seed file."""
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True

    @model_validator(mode="after")
    def _lease_above_renewal(self) -> NatsOptions:
        if self.fetch_wait >= self.visibility_timeout:
            raise ValueError(
                f"fetch_wait ({self.fetch_wait}) must be below visibility_timeout ({self.visibility_timeout})"
            )
        return self


def parse_options(options: dict[str, Any]) -> NatsOptions:
    """Validate ``options``; raise `ConfigError` naming the bad option and what is accepted."""
    return spi.parse_options(NatsOptions, options, backend="nats", secret=("token", "nkeys_seed"))
