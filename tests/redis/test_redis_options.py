"""Options, URLs and the distribution's surface (pure logic, plus one connect error)."""

from __future__ import annotations

import asyncio

import pytest
from fault_proxy import free_port

import pycomms
import pycomms_redis
from pycomms import ConfigError, ConnectError
from pycomms_redis import Keys, RedisOptions


def test_exported_members_are_sorted_and_exist() -> None:
    assert pycomms_redis.__all__ == sorted(pycomms_redis.__all__)
    for name in pycomms_redis.__all__:
        assert hasattr(pycomms_redis, name)


def test_scheme_is_found_through_the_entry_point() -> None:
    bus = pycomms.connect("redis://127.0.0.1:1/0?namespace=x")
    assert type(bus._bus._transport).__name__ == "RedisTransport"
    assert pycomms.connect("rediss://127.0.0.1:1/0")._bus.url.startswith("rediss://")


def test_unknown_option_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'visibilty_timeout'.*visibility_timeout"):
        pycomms.connect("redis://localhost/0?visibilty_timeout=3")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"visibility_timeout": "0"}, "visibility_timeout"),
        ({"heartbeat": "soon"}, "heartbeat"),
        ({"max_batch": 0}, "max_batch"),
        ({"aof_warning": "perhaps"}, "aof_warning"),
        ({"block": 5, "socket_timeout": 3}, "block"),
    ],
)
def test_bad_option_values_are_refused_at_connect(options: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        pycomms.connect("redis://localhost/0", **options)


def test_url_query_values_are_parsed() -> None:
    bus = pycomms.connect("redis://localhost/0?visibility_timeout=2.5&aof_warning=false&max_batch=10")
    options = bus._bus._transport._options
    assert (options.visibility_timeout, options.aof_warning, options.max_batch) == (2.5, False, 10)


def test_defaults_detect_a_dead_connection_within_five_seconds() -> None:
    options = RedisOptions()
    assert (options.connect_timeout, options.operation_timeout) == (3.0, 10.0)
    assert options.socket_timeout <= 5
    assert options.connect_timeout <= 5
    assert options.block < options.socket_timeout


def test_every_key_is_under_the_namespace_hash_tag() -> None:
    keys = Keys.for_namespace("shop")
    names = [
        keys.event_stream("a.b"), keys.command_stream("c"), keys.service_stream("s"), keys.dead_letters("s"),
        keys.owners, keys.delayed, keys.nodes, keys.node("n1"), keys.replies("n1"),
    ]  # fmt: skip
    assert all(name.startswith("pycomms:{shop}:") for name in names)
    assert len(set(names)) == len(names)


def test_connect_error_is_one_line_naming_the_server_but_not_the_password() -> None:
    port = free_port()  # nothing listens there

    async def scenario() -> None:
        with pytest.raises(ConnectError) as info:
            await pycomms.connect(f"redis://user:s3cret@127.0.0.1:{port}/0", connect_timeout=1, socket_timeout=2)
        message = str(info.value)
        assert "s3cret" not in message
        assert message.startswith(f"redis: connect to 127.0.0.1:{port} failed: ConnectionError: ")
        assert "\n" not in message
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__

    asyncio.run(scenario())


def test_publish_timeout_is_the_deprecated_name_of_operation_timeout(caplog: pytest.LogCaptureFixture) -> None:
    bus = pycomms.connect("redis://localhost/0?publish_timeout=4")
    assert bus._bus._transport._options.operation_timeout == 4.0
    assert "'publish_timeout' is deprecated; use operation_timeout=4" in caplog.text
    with pytest.raises(ConfigError, match=r"'operation_timeout' \(given as 'publish_timeout'\).*greater than 0"):
        pycomms.connect("redis://localhost/0?publish_timeout=0")
    with pytest.raises(ConfigError, match="both given"):
        pycomms.connect("redis://localhost/0?publish_timeout=4&operation_timeout=5")
