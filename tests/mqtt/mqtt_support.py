"""A private Mosquitto for the fault tests: its own port, config, persistence directory
and log under a temporary directory; killed and restarted by the test, never the shared
broker on 1883."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from fault_proxy import free_port
from shared_services import MQTT_URL
from system_tools import sbin_tool

MOSQUITTO = sbin_tool("mosquitto") or "/usr/sbin/mosquitto"


def url_of(namespace: str) -> str:
    """The shared broker's URL with ``namespace``."""
    separator = "&" if "?" in MQTT_URL else "?"
    return f"{MQTT_URL}{separator}namespace={namespace}"


class PrivateMosquitto:
    """``persistence true`` with ``autosave_interval`` seconds between snapshots (or, with
    ``autosave_on_changes``, a snapshot after every ``autosave_interval`` changes), and no
    queue bound (``max_queued_messages 0``), as docs/backends/mqtt.md advises.
    ``listener_options``: lines for its listener (e.g. ``certfile``, for TLS)."""

    def __init__(
        self,
        directory: Path,
        *,
        autosave_interval: int = 1,
        autosave_on_changes: bool = False,
        listener_options: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + "".join(f"{line}\n" for line in listener_options)
            + "allow_anonymous true\n"
            "user root\n"  # started as root, Mosquitto would switch to its own user, who cannot write here
            "persistence true\n"
            f"persistence_location {directory}/\n"
            f"autosave_interval {autosave_interval}\n"
            f"autosave_on_changes {str(autosave_on_changes).lower()}\n"
            "max_queued_messages 0\n"
            f"log_dest file {self.log}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)  # polling a port that is not up yet: nothing to await
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no final snapshot; what changed since the last autosave is lost."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
