"""Loading user code named on the command line (``module:attr`` or ``file.py:attr``).

Only the CLI uses this, with names the user typed; nothing is ever imported because
of data received over the wire.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ._errors import PyCommsError


def load_module(name: str) -> ModuleType:
    """Import ``name`` (the current directory first on the path) or load a ``.py`` file."""
    if name.endswith(".py") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise PyCommsError(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise PyCommsError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise PyCommsError(f"cannot import {name!r}: {exc}") from None


def load_attribute(target: str) -> Any:
    """The object named by ``MODULE:ATTR`` or ``path/file.py:ATTR``."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise PyCommsError(f"target {target!r} must look like MODULE:ATTR or path/to/file.py:ATTR")
    module = load_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PyCommsError(f"{module_name!r} has no attribute {attr!r}") from None
