"""The options of ``redis://`` URLs, validated once when the bus is built."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pycomms import spi

log = logging.getLogger("pycomms.redis")

_DEPRECATED = {"publish_timeout": "operation_timeout"}
"""Old option name -> the one that replaced it (still accepted, with a warning in the log)."""


class RedisOptions(BaseModel):
    """Backend options, from the URL query or keyword arguments of `pycomms.connect`.

    Times are seconds. Every call has a deadline: ``connect_timeout`` for connecting,
    ``operation_timeout`` for each later call. Below those, ``socket_timeout`` bounds
    the wait for one reply, so a silently dead connection is noticed (and replaced by
    the background loops) within 3 s, and a dead node vanishes within ``3 * heartbeat``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout: float = Field(3.0, gt=0)
    """Deadline of connecting: TCP, TLS, AUTH and the server's first replies."""
    operation_timeout: float = Field(10.0, gt=0)
    """Deadline of every later call (publish, settle, presence, dead letters, drop),
    retries through connection errors included; long enough to ride out a restart."""
    socket_timeout: float = Field(3.0, gt=0)
    """Longest wait for one reply; a stalled connection is dropped and replaced after it."""
    visibility_timeout: float = Field(30.0, gt=0)
    """A delivery not renewed for this long is taken over by another consumer."""
    heartbeat: float = Field(2.0, gt=0)
    """Presence refresh period; a node that stops refreshing vanishes after 3 periods."""
    health_check_interval: int = Field(2, ge=0)
    """redis-py pings a pooled connection idle for longer than this before reusing it."""
    block: float = Field(1.0, gt=0)
    """Longest server-side wait of one blocking read; must be below ``socket_timeout``."""
    trim_interval: float = Field(30.0, gt=0)
    """How often a consuming node trims the streams it reads (only acknowledged entries)."""
    max_batch: int = Field(1000, ge=1)
    """Most envelopes or settle operations sent in one pipelined round trip."""
    aof_warning: bool = True
    """Log a warning (once per process) at connect when the server's append-only file is off."""
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True

    @model_validator(mode="after")
    def _block_below_socket_timeout(self) -> RedisOptions:
        if self.block >= self.socket_timeout:
            raise ValueError(f"block ({self.block}) must be below socket_timeout ({self.socket_timeout})")
        return self


def parse_options(options: dict[str, Any]) -> RedisOptions:
    """Validate ``options``; raise `ConfigError` naming the bad option and what is accepted."""
    return spi.parse_options(RedisOptions, options, backend="redis", renamed=_DEPRECATED)
