"""The options of ``redis://`` URLs, validated once when the bus is built."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pycomms import ConfigError


class RedisOptions(BaseModel):
    """Backend options, from the URL query or keyword arguments of `pycomms.connect`.

    Times are seconds. The defaults detect a silently dead connection within
    ``socket_timeout`` (3 s) and a dead node within ``3 * heartbeat`` (6 s).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    visibility_timeout: float = Field(30.0, gt=0)
    """A delivery not renewed for this long is taken over by another consumer."""
    heartbeat: float = Field(2.0, gt=0)
    """Presence refresh period; a node that stops refreshing vanishes after 3 periods."""
    socket_timeout: float = Field(3.0, gt=0)
    """Longest wait for any reply; a stalled connection is dropped and replaced after it."""
    connect_timeout: float = Field(3.0, gt=0)
    health_check_interval: int = Field(2, ge=0)
    """redis-py pings a pooled connection idle for longer than this before reusing it."""
    block: float = Field(1.0, gt=0)
    """Longest server-side wait of one blocking read; must be below ``socket_timeout``."""
    publish_timeout: float = Field(10.0, ge=0)
    """How long a publish keeps retrying through connection errors before it fails."""
    trim_interval: float = Field(30.0, gt=0)
    """How often a consuming node trims the streams it reads (only acknowledged entries)."""
    max_batch: int = Field(1000, ge=1)
    """Most envelopes or settle operations sent in one pipelined round trip."""
    aof_warning: bool = True
    """Log a warning at connect when the server's append-only file is off."""
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
    accepted = ", ".join(sorted(RedisOptions.model_fields))
    try:
        return RedisOptions.model_validate(options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "options"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown option {name!r}")
            elif name.startswith("tls_key"):
                problems.append(f"option {name!r}: {error['msg']}")  # never echo a key path's content
            else:
                problems.append(f"option {name!r}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigError(f"redis backend: {'; '.join(problems)}. Accepted options: {accepted}") from None
