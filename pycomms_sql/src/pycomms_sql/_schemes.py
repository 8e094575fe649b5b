"""What the plugin declares without importing SQLAlchemy: the URL schemes served and
the capabilities. Every ``pycomms`` command and ``connect()`` loads the plugins, so
this module stays light; the transport is imported only when a SQL URL is used."""

from __future__ import annotations

from pycomms.spi import Capabilities

SCHEMES = ("postgresql", "postgres", "sqlite", "mysql", "mariadb")

CAPABILITIES = Capabilities(
    retention=True,
    persistent=True,
    delayed_delivery=True,
    ordering=True,
    presence=True,
    cross_process=True,
    transactional_publish=True,
)
