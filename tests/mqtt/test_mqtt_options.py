"""Pure logic of pycomms-mqtt: options validated at connect, names escaped into one topic level."""

from __future__ import annotations

import pytest
from pycomms_mqtt._topics import Topics, level
from pycomms_mqtt.plugin import pycomms_transport

import pycomms
from pycomms.spi import BackendConfig


def test_a_bad_option_is_named() -> None:
    config = BackendConfig(url="mqtt://u:pw@h", scheme="mqtt", namespace="n", options={"receive_maximum": "0"})
    with pytest.raises(pycomms.ConfigError, match="mqtt: option 'receive_maximum'"):
        pycomms_transport(config)


def test_an_unknown_option_is_refused() -> None:
    config = BackendConfig(url="mqtt://h", scheme="mqtt", namespace="n", options={"qos": "2"})
    with pytest.raises(pycomms.ConfigError, match="qos"):
        pycomms_transport(config)


def test_other_schemes_are_not_ours() -> None:
    assert pycomms_transport(BackendConfig(url="redis://h", scheme="redis", namespace="n")) is None


def test_credentials_and_address() -> None:
    config = BackendConfig(url="mqtts://dev%40x:p%2Fw@broker.example:8884", scheme="mqtts", namespace="n")
    transport = pycomms_transport(config)
    assert transport is not None
    endpoint = transport.endpoint
    assert (endpoint.username, endpoint.password) == ("dev@x", "p/w")
    assert (endpoint.host, endpoint.port, endpoint.address) == ("broker.example", 8884, "broker.example:8884")
    assert endpoint.tls is not None
    assert "p/w" not in repr(transport.config.redacted_url)


def test_names_stay_in_one_topic_level() -> None:
    assert level("a/b+c#d%e") == "a%2Fb%2Bc%23d%25e"
    topics = Topics("pycomms", "shop")
    assert topics.event("shop.order/placed") == "pycomms/shop/e/shop.order%2Fplaced"
    assert topics.shared("bill+ing", topics.command("t")) == "$share/bill%2Bing/pycomms/shop/c/t"
    assert topics.dead_letters("billing") == "pycomms/shop/d/billing/+"
