"""``python manage.py runservices``: serve the shop's services until SIGINT/SIGTERM
(the Django way to run what ``pycomms run`` runs)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from shop_messages import pricing

import pycomms.sync


class Command(BaseCommand):
    help = "Serve the shop's PyComms services until SIGINT or SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--grace", type=float, default=10.0, help="seconds to let handlers finish")

    def handle(self, *args: Any, **options: Any) -> None:
        with pycomms.sync.connect(settings.PYCOMMS_URL, services=[pricing], name="shop-services") as bus:
            self.stdout.write(f"serving pricing as node {bus.node.id}", ending="\n")
            self.stdout.flush()
            bus.serve(grace=options["grace"])  # returns once closed (after a signal)
        self.stdout.write("services stopped", ending="\n")
