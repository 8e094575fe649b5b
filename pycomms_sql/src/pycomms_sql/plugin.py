"""The pluggy hooks that make ``postgresql://``, ``sqlite://`` and ``mysql://`` URLs
build an `SqlTransport` (entry point ``pycomms`` / ``sql``)."""

from __future__ import annotations

import pycomms
from pycomms.spi import BackendConfig, SchemeInfo

from ._transport import CAPABILITIES, SqlTransport
from ._url import SCHEMES

_DESCRIPTIONS = {
    "postgresql": "PostgreSQL tables (asyncpg), LISTEN/NOTIFY wake-ups, transactional publish",
    "postgres": "alias of postgresql://",
    "sqlite": "a SQLite file (aiosqlite, WAL): the embedded single-file bus",
    "mysql": "MariaDB >= 10.6 / MySQL >= 8 tables (asyncmy)",
    "mariadb": "alias of mysql://",
}


@pycomms.hookimpl
def pycomms_schemes() -> list[SchemeInfo]:
    return [SchemeInfo(scheme, "pycomms-sql", _DESCRIPTIONS[scheme], CAPABILITIES) for scheme in SCHEMES]


@pycomms.hookimpl
def pycomms_transport(config: BackendConfig) -> SqlTransport | None:
    if config.scheme not in SCHEMES:
        return None
    return SqlTransport(config)
