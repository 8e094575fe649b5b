"""The app config opens one blocking bus for the process when Django starts."""

from __future__ import annotations

import sys

from django.apps import AppConfig
from django.conf import settings

import pycomms.sync


class ShopConfig(AppConfig):
    name = "shop"
    bus: pycomms.sync.Bus | None = None

    def ready(self) -> None:
        if "runservices" in sys.argv:
            return  # that command opens a bus of its own, with the services
        # Safe with threads (runserver, gunicorn --threads) and across a pre-fork: a
        # forked worker opens its own connection at its first call.
        ShopConfig.bus = pycomms.sync.connect(settings.PYCOMMS_URL, name="shop-django")


def bus() -> pycomms.sync.Bus:
    """The process's bus, for views."""
    if ShopConfig.bus is None:
        raise RuntimeError("the shop app is not ready (is 'shop' in INSTALLED_APPS?)")
    return ShopConfig.bus
