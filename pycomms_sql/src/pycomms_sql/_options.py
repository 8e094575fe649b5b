"""The SQL backend's options, parsed once from the URL query and `connect()` keywords."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pycomms import spi

# The default operation_timeout of a database server, and on SQLite how much longer
# than the busy wait for the write lock an operation may take.
NETWORK_OPERATION_TIMEOUT = 10.0
SQLITE_OPERATION_MARGIN = 10.0


class SqlOptions(BaseModel):
    """Options of ``postgresql://``, ``sqlite://`` and ``mysql://`` / ``mariadb://`` URLs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    visibility_timeout: float = Field(30.0, gt=0, description="seconds a claimed message stays invisible to others")
    heartbeat: float = Field(2.0, gt=0, description="presence heartbeat in seconds; a dead node vanishes after 3")
    poll_min: float = Field(0.005, gt=0, description="shortest wait between empty polls, seconds")
    poll_max: float | None = Field(
        None, gt=0, description="longest wait between empty polls (default 5 s with LISTEN/NOTIFY, else 0.5 s)"
    )
    listen: bool = Field(True, description="PostgreSQL: wake consumers with LISTEN/NOTIFY")
    connect_timeout: float = Field(
        10.0, gt=0, description="seconds to establish a connection: TCP, TLS, the server's greeting, authentication"
    )
    operation_timeout: float | None = Field(
        None,
        gt=0,
        description="seconds each later call may take: publish, claim, settle, presence, dead letters, drop "
        f"(default {NETWORK_OPERATION_TIMEOUT:g} on PostgreSQL and MariaDB, busy_timeout + "
        f"{SQLITE_OPERATION_MARGIN:g} on SQLite)",
    )
    pool_size: int = Field(10, ge=1, le=1000, description="connections in the pool")
    busy_timeout: float = Field(30.0, gt=0, description="SQLite: seconds to wait for the write lock")
    durable_settles: bool = Field(
        False,
        description="PostgreSQL: claims, acks and lease changes wait for their commit to reach disk "
        "(by default they commit asynchronously: after a database crash a message may be delivered again)",
    )
    batch_size: int = Field(500, ge=1, le=5000, description="most messages written by one INSERT")

    def deadline(self, engine: str) -> float:
        """The operation_timeout in force on ``engine``: the option, or its default."""
        if self.operation_timeout is not None:
            return self.operation_timeout
        if engine == "sqlite":
            return self.busy_timeout + SQLITE_OPERATION_MARGIN
        return NETWORK_OPERATION_TIMEOUT

    def idle_poll(self, notified: bool) -> float:
        """The longest wait between polls: long when NOTIFY wakes consumers."""
        if self.poll_max is not None:
            return max(self.poll_max, self.poll_min)
        return 5.0 if notified else 0.5


def parse_options(options: dict[str, Any]) -> SqlOptions:
    """Validate ``options``; a bad or unknown one is a `ConfigError` naming it."""
    return spi.parse_options(SqlOptions, options, backend="sql")
