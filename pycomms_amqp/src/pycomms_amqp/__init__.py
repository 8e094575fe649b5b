"""PyComms over RabbitMQ: ``pycomms.connect("amqp://guest:guest@localhost/")``.

Installing this distribution registers the ``amqp`` and ``amqps`` URL schemes with
PyComms through the ``pycomms`` entry point; applications do not import it.
"""

from __future__ import annotations

from ._options import AmqpOptions
from ._transport import CAPABILITIES, AmqpTransport

__version__ = "0.1.0"

__all__ = ["CAPABILITIES", "AmqpOptions", "AmqpTransport", "__version__"]
