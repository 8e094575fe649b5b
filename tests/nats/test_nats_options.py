"""Pure logic of the NATS backend: options, server lists from URLs, names (no server needed)."""

from __future__ import annotations

import pytest
from pycomms_nats._connection import parse_servers
from pycomms_nats._names import Names, namespace_token, subject_token
from pycomms_nats._options import parse_options
from pycomms_nats._receiver import delivery_count
from pycomms_nats.plugin import pycomms_transport

import pycomms
from pycomms.spi import BackendConfig


def config(url: str, **options: object) -> BackendConfig:
    return BackendConfig(url=url, scheme=url.partition("://")[0], namespace="t", options=dict(options))


def test_defaults_and_a_bad_option_named() -> None:
    options = parse_options({})
    assert (options.connect_timeout, options.operation_timeout, options.visibility_timeout) == (5.0, 10.0, 30.0)
    with pytest.raises(pycomms.ConfigError, match=r"nats: option 'replicas': .*\(got '7'\)"):
        parse_options({"replicas": "7"})
    with pytest.raises(pycomms.ConfigError, match=r"unknown option 'bogus'.*Accepted options: .*visibility_timeout"):
        parse_options({"bogus": 1})
    with pytest.raises(pycomms.ConfigError, match=r"fetch_wait \(5.0\) must be below visibility_timeout \(3.0\)"):
        parse_options({"fetch_wait": 5, "visibility_timeout": 3})


def test_a_secret_option_is_never_shown() -> None:
    with pytest.raises(pycomms.ConfigError) as caught:
        parse_options({"token": ["s3cret-token"]})
    assert "s3cret" not in str(caught.value)
    assert "'token'" in str(caught.value)


def test_the_plugin_serves_nats_and_tls_only() -> None:
    assert pycomms_transport(config("redis://x")) is None
    assert pycomms_transport(config("nats://127.0.0.1:4222")) is not None
    assert pycomms_transport(config("tls://127.0.0.1:4222")) is not None
    memory = pycomms_transport(config("nats://127.0.0.1:4222", storage="memory"))
    assert memory is not None
    assert memory.capabilities.persistent is False


def test_servers_of_a_cluster_url_credentials_kept_for_the_driver_hidden_in_the_label() -> None:
    servers, shown = parse_servers(config("nats://alice:pw@10.0.0.1:4222,10.0.0.2:4223,host3"))
    assert servers == ["nats://alice:pw@10.0.0.1:4222", "nats://alice:pw@10.0.0.2:4223", "nats://alice:pw@host3:4222"]
    assert shown == "10.0.0.1:4222,10.0.0.2:4223,host3:4222"
    assert parse_servers(config("tls://h:1"))[0] == ["tls://h:1"]
    assert parse_servers(config("nats://"))[1] == "127.0.0.1:4222"
    with pytest.raises(pycomms.ConfigError, match="path '/db' is not used by NATS"):
        parse_servers(config("nats://h:1/db"))
    with pytest.raises(pycomms.ConfigError, match="server 'h:x'"):
        parse_servers(config("nats://h:x"))


def test_names_are_valid_and_namespaces_never_share_one() -> None:
    assert namespace_token("shop") == "shop"
    assert len({namespace_token(n) for n in ("a.b", "a_b", "a_db", "a__b", "a-b")}) == 5
    names = Names.for_namespace("shop.eu")
    assert names.events_stream == "PYCOMMS_shop_deu_EVENTS"
    assert names.event("shop.order_placed") == "pycomms.shop_deu.e.shop.order_placed"
    assert names.command("Job") == "pycomms.shop_deu.c.Job"
    assert names.replies("abc") == "pycomms.shop_deu.r.abc"
    assert names.presence_bucket == "PYCOMMS_shop_deu_NODES"


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("shop.order", "shop.order"),
        ("a b", "a%20b"),
        ("x*>", "x%2A%3E"),
        ("é", "%C3%A9"),
        (".lead", "%2Elead"),
        ("a..b", "a%2E%2Eb"),
        ("", "%"),
    ],
)
def test_subject_tokens(name: str, token: str) -> None:
    assert subject_token(name) == token


def test_consumer_names_are_valid_and_distinct() -> None:
    names = Names.for_namespace("n")
    a = names.consumer("billing svc", names.event("A"))
    b = names.consumer("billing svc", names.event("B"))
    assert a != b
    assert a.startswith("billing_svc-")
    assert all(c.isalnum() or c in "_-" for c in a)


def test_delivery_count_from_ack_subjects() -> None:
    assert delivery_count("$JS.ACK.S.C.3.10.9.1700000000.0") == 3
    assert delivery_count("$JS.ACK.domain.hash.S.C.4.10.9.1700000000.0.tok") == 4
    assert delivery_count("garbage") == 1
