"""Options are validated at connect(); the package's public surface is explicit."""

from __future__ import annotations

import pytest

import pycomms
import pycomms_tcp
from pycomms_tcp import TcpTransport

pytestmark = pytest.mark.filterwarnings("error")


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("tcp://?colour=blue", {}, r"tcp: unknown option 'colour'\. Accepted options: advertise,"),
        (
            "tcp://",
            {"spool_max_messages": "lots"},
            r"option 'spool_max_messages': .* \(got 'lots'\); expected integer >= 1",
        ),
        ("tcp://?heartbeat=0", {}, "heartbeat"),
        ("tcp://?seeds=nohost", {}, "seeds"),
        ("tcp://?discovery=maybe", {}, "discovery"),
        ("tcp://?tls_cert=a.pem", {}, "tls_cert and tls_key"),
        ("tcp://host:99999", {}, "tcp"),
    ],
)
def test_bad_options_name_the_option(url: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(pycomms.ConfigError, match=match):
        pycomms.connect(url, **options)


def test_secret_never_appears_in_errors_or_repr() -> None:
    with pytest.raises(pycomms.ConfigError) as info:
        pycomms.connect("tcp://?secret=hunter2&spool_max_bytes=1")
    assert "hunter2" not in str(info.value)
    bus = pycomms.connect("tcp://?secret=hunter2")._bus
    assert "hunter2" not in repr(bus)
    assert "hunter2" not in bus.url
    assert "hunter2" not in repr(bus._transport)


def test_the_plugin_serves_tcp() -> None:
    bus = pycomms.connect("tcp://127.0.0.1:0?seeds=127.0.0.1:1,[::1]:2")._bus
    assert isinstance(bus._transport, TcpTransport)
    assert bus.capabilities == pycomms_tcp.CAPABILITIES


def test_exported_members_are_sorted_and_public() -> None:
    assert pycomms_tcp.__all__ == sorted(pycomms_tcp.__all__)
    for name in pycomms_tcp.__all__:
        assert hasattr(pycomms_tcp, name)
        assert getattr(pycomms_tcp, name).__doc__ or name.startswith("__") or name.isupper()
