"""Helpers of the SQL backend's tests: server URLs and URL building."""

from __future__ import annotations

import os

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
