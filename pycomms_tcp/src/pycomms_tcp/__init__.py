"""pycomms-tcp: the brokerless ``tcp://`` backend of PyComms.

Install it and use ``tcp://`` (or no URL at all): nodes on one host find each other
through a registry directory, nodes elsewhere through ``seeds=`` or mDNS. See
docs/backends/tcp.md and docs/tcp-protocol.md.
"""

from __future__ import annotations

from ._frames import FrameDecoder, ProtocolError
from ._options import TcpOptions
from ._transport import CAPABILITIES, TcpTransport

__version__ = "0.1.0"

__all__ = [
    "CAPABILITIES",
    "FrameDecoder",
    "ProtocolError",
    "TcpOptions",
    "TcpTransport",
    "__version__",
]
