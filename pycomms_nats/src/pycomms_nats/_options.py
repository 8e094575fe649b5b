"""The options of ``nats://`` URLs, validated once when the bus is built."""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    domain: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")
    """The JetStream domain to use (``$JS.<domain>.API``): a leaf node's or a hub's, as
    its server's ``jetstream { domain: ... }`` names it. None: the local JetStream."""
    token: str | None = None
    user_credentials: str | None = None
    """Path of a ``.creds`` file (the user's JWT and NKey seed, as ``nsc`` writes it)."""
    nkeys_seed: str | None = None
    """Path of a file holding an NKey user seed (``SU...``); never the seed itself."""
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True

    @field_validator("nkeys_seed")
    @classmethod
    def _seed_file(cls, path: str | None) -> str | None:
        if path is None:
            return None
        if _SEED_LIKE.fullmatch(path.strip()):
            raise ValueError("this looks like a seed, not the path of a file holding it: never put a seed in a URL")
        text = _read_key_file(path)
        if not _SEED.fullmatch(text.strip()):
            raise ValueError(f"{path} does not hold an NKey user seed (one line, 'SU' and 56 more characters)")
        return os.path.expanduser(path)

    @field_validator("user_credentials")
    @classmethod
    def _creds_file(cls, path: str | None) -> str | None:
        if path is None:
            return None
        text = _read_key_file(path)
        if "BEGIN NATS USER JWT" not in text or "BEGIN USER NKEY SEED" not in text:
            raise ValueError(f"{path} is not a NATS credentials file (a user JWT and an NKey seed, as nsc writes them)")
        return os.path.expanduser(path)

    @model_validator(mode="after")
    def _lease_above_renewal(self) -> NatsOptions:
        if self.fetch_wait >= self.visibility_timeout:
            raise ValueError(
                f"fetch_wait ({self.fetch_wait}) must be below visibility_timeout ({self.visibility_timeout})"
            )
        return self


_SEED = re.compile(r"SU[A-Z2-7]{56}")
_SEED_LIKE = re.compile(r"S[A-Z2-7]{40,}")


def _read_key_file(path: str) -> str:
    """The text of an NKey seed or credentials file; its content is never put in an error."""
    if importlib.util.find_spec("nkeys") is None:
        raise ValueError("NKey authentication needs the 'nkeys' package: pip install 'nats-py[nkeys]'")
    try:
        with open(os.path.expanduser(path), "rb") as file:
            return file.read(64 * 1024).decode("ascii", "replace")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def parse_options(options: dict[str, Any]) -> NatsOptions:
    """Validate ``options``; raise `ConfigError` naming the bad option and what is accepted."""
    return spi.parse_options(NatsOptions, options, backend="nats", secret=("token", "nkeys_seed"))
