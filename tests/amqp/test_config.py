"""Options, plugin registration and the public surface (no broker needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pycomms
import pycomms_amqp
from pycomms_amqp import AmqpTransport
from pycomms_amqp._names import delay_bucket_ms


def test_connect_finds_the_amqp_and_amqps_schemes() -> None:
    for url in ("amqp://guest:guest@localhost/?namespace=x", "amqps://guest:guest@localhost/?namespace=x"):
        bus = pycomms.connect(url)._bus
        assert isinstance(bus._transport, AmqpTransport)
        assert bus.namespace == "x"


def test_capabilities_are_declared() -> None:
    caps = AmqpTransport.capabilities
    assert (caps.retention, caps.persistent, caps.delayed_delivery, caps.presence, caps.cross_process) == (
        True,
        True,
        True,
        True,
        True,
    )


def test_unknown_option_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(pycomms.ConfigError, match=r"unknown option 'prefetch'.*queue_type"):
        pycomms.connect("amqp://localhost/?prefetch=10")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("queue_type", "stream", "queue_type"),
        ("publish_timeout", "-1", "publish_timeout"),
        ("delivery_limit", "zero", "delivery_limit"),
        ("presence_interval", "0", "presence_interval"),
    ],
)
def test_bad_option_values_are_config_errors(option: str, value: str, message: str) -> None:
    with pytest.raises(pycomms.ConfigError, match=message):
        pycomms.connect(f"amqp://localhost/?{option}={value}")


def test_keyword_options_are_validated_too() -> None:
    with pytest.raises(pycomms.ConfigError, match="queue_type"):
        pycomms.connect("amqp://localhost/", queue_type="lazy")
    pycomms.connect("amqp://localhost/", queue_type="quorum", publish_timeout=2.5)


def test_exports_are_sorted_and_exist() -> None:
    def isort_style(name: str) -> tuple[int, str]:  # ruff's RUF022 order, as in tests/core
        return (0 if name.isupper() else 1 if name[0].isupper() else 2), name

    assert pycomms_amqp.__all__ == sorted(pycomms_amqp.__all__, key=isort_style)
    for name in pycomms_amqp.__all__:
        assert hasattr(pycomms_amqp, name)


@given(st.floats(min_value=0.0, max_value=3600.0, allow_nan=False))
def test_delay_buckets_are_within_five_percent(delay: float) -> None:
    bucket = delay_bucket_ms(delay)
    assert bucket >= 1
    exact = delay * 1000
    assert abs(bucket - exact) <= max(0.5, exact * 0.05) or exact < 1


def test_jittered_delays_share_few_delay_queues() -> None:
    buckets = {delay_bucket_ms(10 * (0.9 + 0.2 * i / 1000)) for i in range(1000)}
    assert len(buckets) <= 21  # 9.0 s .. 11.0 s in steps of 0.1 s


def test_tls_files_are_checked_when_the_bus_is_built() -> None:
    with pytest.raises(pycomms.ConfigError, match="cafile"):
        pycomms.connect("amqps://guest:guest@localhost/?cafile=/does/not/exist.pem")
    with pytest.raises(pycomms.ConfigError, match="certfile"):
        pycomms.connect("amqps://guest:guest@localhost/?keyfile=/some/key.pem")
