"""URL and option handling of pycomms-sql: validated at connect(), errors name the problem."""

from __future__ import annotations

import asyncio

import pytest

import pycomms
import pycomms_sql
from pycomms.spi import BackendConfig
from pycomms_sql.plugin import pycomms_schemes, pycomms_transport


def test_exports_are_sorted_and_present() -> None:
    assert pycomms_sql.__all__ == sorted(pycomms_sql.__all__)
    for name in pycomms_sql.__all__:
        assert hasattr(pycomms_sql, name)


def test_every_scheme_is_served() -> None:
    assert {info.scheme for info in pycomms_schemes()} == {"postgresql", "postgres", "sqlite", "mysql", "mariadb"}
    for url in (
        "postgresql://u@h/db",
        "postgres://u@h/db",
        "sqlite:///x.db",
        "mysql://u@h/db",
        "mariadb://u@h/db",
        "postgresql+asyncpg://u@h/db",
        "sqlite+aiosqlite:////tmp/x.db",
        "mysql+asyncmy://u@h/db",
    ):
        pycomms.connect(url)  # builds the transport (no I/O) or raises
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        transport = pycomms_transport(config=BackendConfig(url=url, scheme=scheme, namespace="n"))
        assert isinstance(transport, pycomms_sql.SqlTransport), url


def test_unknown_option_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(pycomms.ConfigError) as info:
        pycomms.connect("sqlite:///x.db?visibilty_timeout=3")
    assert "visibilty_timeout" in str(info.value)
    assert "visibility_timeout" in str(info.value)


def test_bad_option_value_names_it() -> None:
    with pytest.raises(pycomms.ConfigError, match="heartbeat"):
        pycomms.connect("sqlite:///x.db", heartbeat="soon")
    with pytest.raises(pycomms.ConfigError, match="visibility_timeout"):
        pycomms.connect("sqlite:///x.db?visibility_timeout=-1")


def test_options_from_url_and_keywords() -> None:
    transport = pycomms_sql.SqlTransport(
        BackendConfig(
            url="postgresql://u@h/db",
            scheme="postgresql",
            namespace="n",
            options={"visibility_timeout": "2.5", "listen": "false"},
        )
    )
    assert transport.options.visibility_timeout == 2.5
    assert transport.options.listen is False


def test_in_memory_sqlite_and_sync_drivers_are_refused() -> None:
    with pytest.raises(pycomms.ConfigError, match="file"):
        pycomms.connect("sqlite://")
    with pytest.raises(pycomms.ConfigError, match="asyncio driver"):
        pycomms.connect("postgresql+psycopg2://u@h/db")


def test_unreachable_server_is_a_connect_error_without_the_password() -> None:
    async def main() -> None:
        with pytest.raises(pycomms.ConnectError) as info:
            await pycomms.connect("postgresql://app:hunter2@127.0.0.1:9/db")
        assert "hunter2" not in str(info.value)

    asyncio.run(main())
