"""From a PyComms URL to a SQLAlchemy async URL with the right driver."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from pycomms import ConfigError
from pycomms.spi import redact_url

from ._schemes import SCHEMES

Engine = Literal["postgresql", "sqlite", "mysql"]

_ENGINES: dict[str, Engine] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mysql",
}
_DEFAULT_PORTS: dict[Engine, int] = {"postgresql": 5432, "mysql": 3306}
_DEFAULT_DRIVERS: dict[Engine, str] = {"postgresql": "asyncpg", "sqlite": "aiosqlite", "mysql": "asyncmy"}
_ASYNC_DRIVERS: dict[Engine, frozenset[str]] = {
    "postgresql": frozenset({"asyncpg", "psycopg", "psycopg_async"}),
    "sqlite": frozenset({"aiosqlite"}),
    "mysql": frozenset({"asyncmy", "aiomysql"}),
}
assert set(SCHEMES) == set(_ENGINES), "_schemes.SCHEMES and the engines disagree"


@dataclass(frozen=True, slots=True)
class Target:
    """Where the bus lives: the engine kind and the SQLAlchemy URL (query removed)."""

    engine: Engine
    url: URL

    @property
    def key(self) -> str:
        """Identifies the database, for sharing wake-ups between buses of one process."""
        return self.url.render_as_string(hide_password=True)


def parse_target(url: str) -> Target:
    """Map ``postgresql://``, ``postgres://``, ``sqlite:///PATH``, ``mysql://`` and
    ``mariadb://`` (each with an optional ``+driver``) to an async SQLAlchemy URL."""
    scheme, sep, rest = url.partition(":")
    if not sep:
        raise ConfigError(f"invalid SQL URL {redact_url(url)!r}")
    base, _, driver = scheme.lower().partition("+")
    engine = _ENGINES.get(base)
    if engine is None:
        raise ConfigError(f"scheme {base!r} is not served by pycomms-sql; use one of {', '.join(SCHEMES)}")
    driver = driver or _DEFAULT_DRIVERS[engine]
    if driver not in _ASYNC_DRIVERS[engine]:
        raise ConfigError(
            f"driver {driver!r} is not an asyncio driver for {base}; use one of {sorted(_ASYNC_DRIVERS[engine])}"
        )
    dialect = "postgresql" if engine == "postgresql" else "sqlite" if engine == "sqlite" else "mysql"
    location = rest.split("?", 1)[0]
    if engine == "sqlite":
        location = _sqlite_path(location)
    elif location.startswith("//"):
        location = location[2:]
    else:
        raise ConfigError(f"invalid SQL URL {redact_url(url)!r}: expected {base}://[user@]host[:port]/database")
    try:
        parsed = make_url(f"{dialect}+{driver}://{location}")
    except ArgumentError as exc:
        raise ConfigError(f"invalid SQL URL {redact_url(url)!r}: {exc}") from None
    if engine == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            "sqlite:// needs a database file, e.g. sqlite:///app.db or sqlite:////abs/path.db "
            "(an in-memory database cannot be shared between connections)"
        )
    return Target(engine, parsed)


def _sqlite_path(rest: str) -> str:
    """The ``/PATH`` part of a SQLite URL, from what follows ``sqlite:``.

    Core's URL clean-up (``urlunsplit``) drops the empty authority of ``sqlite:///x``:
    ``sqlite:///rel.db`` arrives as ``sqlite:/rel.db`` and ``sqlite:////abs.db`` as
    ``sqlite://abs.db``. An odd number of leading slashes means a relative path, an
    even one an absolute path, in both spellings.
    """
    path = rest.lstrip("/")
    slashes = len(rest) - len(path)
    if not path:
        return ""
    return f"/{path}" if slashes % 2 else f"//{path}"


def location(target: Target) -> str:
    """Where the bus lives, for messages: ``host:port``, or the SQLite file's absolute path."""
    if target.engine == "sqlite":
        return os.path.abspath(target.url.database or "")
    return f"{target.url.host or 'localhost'}:{target.url.port or _DEFAULT_PORTS[target.engine]}"


def open_failure(target: Target, exc: BaseException) -> str | None:
    """An explanation of a SQLite file that cannot be opened, or None for other errors.

    ``sqlite:///tmp/x.db`` is the *relative* path ``tmp/x.db``: three slashes end the
    (empty) host part, a fourth starts an absolute path. Mixing them up is the common
    cause of "unable to open database file"."""
    if target.engine != "sqlite" or "unable to open database file" not in str(exc):
        return None
    path = target.url.database or ""
    resolved = os.path.abspath(path)
    folder = os.path.dirname(resolved)
    if not os.path.isdir(folder):
        why = f"its directory {folder} does not exist"
    elif not os.access(folder, os.W_OK):
        why = f"its directory {folder} is not writable"
    else:
        why = "SQLite could not open or create it"
    hint = (
        f"sqlite:///{path} (three slashes) names a path relative to the working directory "
        f"{os.getcwd()}; for the absolute path /{path} write sqlite:////{path} (four slashes)"
        if not os.path.isabs(path)
        else f"sqlite:////{path.lstrip('/')} (four slashes) is this absolute path; "
        f"sqlite:///{path.lstrip('/')} (three) would be relative to {os.getcwd()}"
    )
    return f"sqlite: cannot open the database file {resolved}: {why}. {hint}"
