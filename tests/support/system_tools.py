"""Where the tests find the programs Debian installs in /usr/sbin or /sbin (``rabbitmqctl``,
``runuser``, ``nats-server``, ``mosquitto``): a clean environment (``env -i``, cron, some
CI runners) has neither folder on PATH, so `shutil.which` alone would not find them.

On the path of every test through ``pythonpath`` in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil

SBIN = ("/usr/sbin", "/sbin")


def sbin_tool(name: str) -> str | None:
    """The full path of the program ``name``, looked for on PATH and then in /usr/sbin and
    /sbin; None when it is in none of them. Call it by that path: a subprocess searches
    only PATH."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    return shutil.which(name, path=search)
