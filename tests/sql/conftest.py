"""Fixtures of the SQL backend's tests: a base URL per engine, reachability checks.

PostgreSQL and MariaDB come from ``$PYCOMMS_TEST_POSTGRES_URL`` / ``$PYCOMMS_TEST_MYSQL_URL``
(defaults: the local services); SQLite is a file in the test's temporary directory.
An unreachable server is skipped locally and fails with ``CI=true``.

The namespace of the ``url`` fixture is dropped after each test, so a run leaves no
tables behind. Garbage is collected after every test, so that a connection a failing test left open
is reported (a ResourceWarning, an error here) on that test, never on the next one.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sql_helpers import ENGINES, MYSQL_URL, POSTGRES_URL, drop_namespace, with_options

from pycomms.testing import require_reachable


@pytest.fixture(params=ENGINES)
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A base URL (no namespace) for each engine."""
    if request.param == "postgresql":
        require_reachable(POSTGRES_URL, 5432)
        return POSTGRES_URL
    if request.param == "mariadb":
        require_reachable(MYSQL_URL, 3306)
        return MYSQL_URL
    return f"sqlite:///{tmp_path / 'bus.db'}"


@pytest.fixture
def namespace() -> str:
    return f"s{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url(engine_url: str, namespace: str) -> Iterator[str]:
    """The engine's URL with a fresh namespace, whose tables are dropped after the test
    (a SQLite file goes with the test's temporary directory)."""
    yield with_options(engine_url, namespace=namespace)
    if not engine_url.startswith("sqlite"):
        drop_namespace(with_options(engine_url, namespace=namespace))


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    gc.collect()
