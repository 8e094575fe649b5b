"""The pluggy hooks that make ``postgresql://``, ``sqlite://`` and ``mysql://`` URLs
build an `SqlTransport` (entry point ``pycomms`` / ``sql``). Loading it imports no
SQLAlchemy: that happens when a SQL URL is used."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pycomms
from pycomms.spi import BackendConfig, SchemeInfo

from ._schemes import CAPABILITIES, SCHEMES

if TYPE_CHECKING:
    from ._transport import SqlTransport

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
    from ._transport import SqlTransport  # SQLAlchemy is imported only when a SQL URL is used

    return SqlTransport(config)
