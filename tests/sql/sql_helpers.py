"""Helpers of the SQL backend's tests: server URLs and URL building."""

from __future__ import annotations

import asyncio
import os

import pycomms

POSTGRES_URL = os.environ.get("PYCOMMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("PYCOMMS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
ENGINES = ["postgresql", "mariadb", "sqlite"]


def with_options(base: str, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{base}{'&' if '?' in base else '?'}{query}" if query else base


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy async URL of a PyComms SQL URL (for the tests' own connections)."""
    base = url.split("?", 1)[0]
    scheme, _, rest = base.partition("://")
    driver = {"postgresql": "postgresql+asyncpg", "mysql": "mysql+asyncmy", "sqlite": "sqlite+aiosqlite"}[scheme]
    return f"{driver}://{rest}"


def via(url: str, port: int) -> str:
    """``url`` pointed at ``127.0.0.1:port`` (a proxy or a fake server), user, database
    and query kept."""
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    user, at, _ = netloc.rpartition("@")
    return f"{scheme}://{user}{at}127.0.0.1:{port}{slash}{path}"


def drop_namespace(url: str) -> int:
    """Drop the namespace of ``url`` (its nodes, if any are left, notwithstanding)."""

    async def drop() -> int:
        bus = await pycomms.connect(url)
        return await bus.drop_namespace(force=True)

    return asyncio.run(drop())
