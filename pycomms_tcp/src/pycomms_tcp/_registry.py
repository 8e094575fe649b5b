"""Same-host discovery: a per-namespace registry directory.

Layout (``DIR`` is ``$XDG_RUNTIME_DIR/pycomms/NAMESPACE`` or
``/tmp/pycomms-UID/NAMESPACE``, or ``registry=DIR/NAMESPACE``)::

    DIR/nodes/NODE_ID.json      {"id", "host", "port", "pid"}  one per live node
    DIR/catalog/SERVICE.json    {"service", "events", "commands"}  every service ever subscribed

Files are written to a temporary name and renamed, so a reader never sees half a
file. A node removes its file on close; a file whose pid is not running is stale and
removed by whoever reads it. The catalog stays: it lets a node started later know a
service whose instances are all down, so that messages for it are spooled.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from pydantic_core import from_json, to_json

log = logging.getLogger("pycomms.tcp")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Registry:
    """The registry directory of one namespace."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._nodes = directory / "nodes"
        self._catalog = directory / "catalog"

    def announce(self, node_id: str, host: str, port: int) -> None:
        """Publish this node's address. Raises `OSError`."""
        self._nodes.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._catalog.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = {"id": node_id, "host": host, "port": port, "pid": os.getpid()}
        _write_atomic(self._nodes / f"{node_id}.json", to_json(body))

    def withdraw(self, node_id: str) -> None:
        with contextlib.suppress(OSError):
            (self._nodes / f"{node_id}.json").unlink()

    def peers(self, self_id: str) -> list[tuple[str, str, int]]:
        """``(id, host, port)`` of the other live nodes."""
        out: list[tuple[str, str, int]] = []
        try:
            entries = list(self._nodes.iterdir())
        except OSError:
            return out
        for path in entries:
            if path.name.startswith(".") or path.suffix != ".json" or path.stem == self_id:
                continue
            raw = self._read(path)
            if raw is None:
                continue
            try:
                node_id, host, port, pid = str(raw["id"]), str(raw["host"]), int(raw["port"]), int(raw["pid"])
            except (KeyError, TypeError, ValueError):
                continue
            if not _alive(pid):
                log.debug("registry: removing stale entry of node %s (pid %d is gone)", node_id, pid)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            out.append((node_id, host, port))
        return out

    def drop(self) -> int:
        """Remove the namespace's directory: every node entry (this node's included)
        and the catalog; how many entries were removed. Raises `OSError`."""
        removed = 0
        for sub in (self._nodes, self._catalog):
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                with contextlib.suppress(FileNotFoundError):  # a concurrent reader removed a stale entry
                    path.unlink()
                    removed += path.suffix == ".json" and not path.name.startswith(".")
            with contextlib.suppress(FileNotFoundError):
                sub.rmdir()
        with contextlib.suppress(FileNotFoundError):
            self.directory.rmdir()
        return removed

    def save_service(self, service: str, events: frozenset[str], commands: frozenset[str]) -> None:
        try:
            self._catalog.mkdir(parents=True, exist_ok=True, mode=0o700)
            body = {"service": service, "events": sorted(events), "commands": sorted(commands)}
            _write_atomic(self._catalog / f"{service}.json", to_json(body))
        except OSError as exc:
            log.warning("registry: could not record service %s in %s: %s", service, self._catalog, exc)

    def catalog(self) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        out: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        try:
            entries = list(self._catalog.iterdir())
        except OSError:
            return out
        for path in entries:
            if path.name.startswith(".") or path.suffix != ".json":
                continue
            raw = self._read(path)
            if raw is None:
                continue
            try:
                out[str(raw["service"])] = (frozenset(map(str, raw["events"])), frozenset(map(str, raw["commands"])))
            except (KeyError, TypeError):
                continue
        return out

    @staticmethod
    def _read(path: Path) -> Any:
        try:
            raw = from_json(path.read_bytes())
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None
