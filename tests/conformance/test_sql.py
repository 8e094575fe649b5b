"""The conformance suite against the SQL backend (pycomms-sql) on its three engines.

PostgreSQL and MariaDB come from ``$PYCOMMS_TEST_POSTGRES_URL`` and
``$PYCOMMS_TEST_MYSQL_URL`` (defaults: the local services); SQLite uses a file in a
temporary directory. An unreachable server: skipped locally, a failure with ``CI=true``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycomms.testing import ConformanceSuite, require_reachable

POSTGRES_URL = os.environ.get("PYCOMMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("PYCOMMS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def _with_namespace(url: str, namespace: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}namespace={namespace}"


class TestPostgres(ConformanceSuite):
    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls) -> None:
        require_reachable(POSTGRES_URL, 5432)

    def make_url(self, namespace: str) -> str:
        return _with_namespace(POSTGRES_URL, namespace)


class TestMariaDB(ConformanceSuite):
    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls) -> None:
        require_reachable(MYSQL_URL, 3306)

    def make_url(self, namespace: str) -> str:
        return _with_namespace(MYSQL_URL, namespace)


class TestSQLite(ConformanceSuite):
    database: Path

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.database = tmp_path / "bus.db"

    def make_url(self, namespace: str) -> str:
        return f"sqlite:///{self.database}?namespace={namespace}"
