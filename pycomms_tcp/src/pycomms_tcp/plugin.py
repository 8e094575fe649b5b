"""pluggy hook implementations that make ``tcp://`` available to `pycomms.connect`."""

from __future__ import annotations

import pycomms
from pycomms.spi import BackendConfig, SchemeInfo

from ._options import parse_options
from ._transport import CAPABILITIES, TcpTransport, build


@pycomms.hookimpl
def pycomms_schemes() -> list[SchemeInfo]:
    return [
        SchemeInfo("tcp", "pycomms-tcp", "brokerless peer-to-peer TCP with same-host and LAN discovery", CAPABILITIES)
    ]


@pycomms.hookimpl
def pycomms_transport(config: BackendConfig) -> TcpTransport | None:
    if config.scheme != "tcp":
        return None
    return build(config, parse_options(config))
