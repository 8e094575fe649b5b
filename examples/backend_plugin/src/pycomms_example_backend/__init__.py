"""A skeleton third-party PyComms backend: ``pycomms.connect("example://NAME")``.

Buses of one process with the same NAME and namespace share an in-process store. Read
it in this order: ``plugin.py`` (the hooks the core calls), ``_transport.py`` (the SPI
it implements), ``_store.py`` (the "broker"). docs/write-a-backend.md is the guide.
"""

from __future__ import annotations

from ._transport import CAPABILITIES, ExampleDelivery, ExampleReceiver, ExampleTransport

__all__ = ["CAPABILITIES", "ExampleDelivery", "ExampleReceiver", "ExampleTransport"]
