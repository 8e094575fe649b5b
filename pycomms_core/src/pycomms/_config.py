"""Configuration: which URL to use, and how it becomes a backend's `BackendConfig`."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ._errors import BackendNotFound, ConfigError
from ._plugins import BROKEN, KNOWN_DISTRIBUTIONS, plugin_manager
from .spi import DEFAULT_MAX_MESSAGE_SIZE, BackendConfig, Transport, redact_url

DEFAULT_URL = "tcp://"
ENV_VAR = "PYCOMMS_URL"
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CORE_OPTIONS = frozenset({"namespace", "max_message_size"})


def resolve_url(url: str | None, *, cwd: Path | None = None) -> str:
    """The URL to use: argument, then ``$PYCOMMS_URL``, then ``pycomms.toml`` or
    ``[tool.pycomms]`` in ``pyproject.toml`` (current directory), then the default."""
    if url:
        return url
    if env := os.environ.get(ENV_VAR):
        return env
    base = cwd or Path.cwd()
    for path, table in ((base / "pycomms.toml", ()), (base / "pyproject.toml", ("tool", "pycomms"))):
        if not path.is_file():
            continue
        try:
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        for key in table:
            data = data.get(key, {}) if isinstance(data, dict) else {}
        found = data.get("url") if isinstance(data, dict) else None
        if found is not None:
            if not isinstance(found, str) or not found:
                raise ConfigError(f"{path}: 'url' must be a non-empty string, got {found!r}")
            return found
    return DEFAULT_URL


def backend_config(url: str, options: dict[str, Any]) -> BackendConfig:
    """Split ``url`` and keyword ``options`` into the core's options and the backend's."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"invalid URL {redact_url(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigError(f"URL {redact_url(url)!r} has no scheme; expected e.g. 'memory://', 'redis://host'")
    query: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in query:
            raise ConfigError(f"URL option {key!r} is given twice")
        query[key] = value
    merged = {**query, **options}
    namespace = str(merged.pop("namespace", "default"))
    if not _NAMESPACE.match(namespace):
        raise ConfigError(
            f"namespace {namespace!r} is invalid: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    raw_size = merged.pop("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    try:
        max_size = int(raw_size)
    except (TypeError, ValueError):
        max_size = -1
    if max_size < 1024:
        raise ConfigError(f"max_message_size must be an integer >= 1024 (bytes), got {raw_size!r}")
    # rebuilt by hand: urlunsplit would turn "sqlite:////abs.db" into "sqlite://abs.db"
    base = url.partition("?")[0].partition("#")[0]
    backend_query = urlencode([(k, v) for k, v in query.items() if k not in CORE_OPTIONS])
    clean = f"{base}?{backend_query}" if backend_query else base
    backend_options = {k: v for k, v in merged.items()}
    return BackendConfig(
        url=clean,
        scheme=scheme.split("+", 1)[0],
        namespace=namespace,
        max_message_size=max_size,
        options=backend_options,
    )


def make_transport(config: BackendConfig) -> Transport:
    """Ask the installed plugins for a transport serving ``config``."""
    pm = plugin_manager()
    transport = pm.hook.pycomms_transport(config=config)
    if transport is not None:
        return transport  # type: ignore[no-any-return]
    served = sorted({info.scheme for infos in pm.hook.pycomms_schemes() for info in infos})
    dist = KNOWN_DISTRIBUTIONS.get(config.scheme)
    hint = f"; install it with: pip install {dist}" if dist else ""
    if dist in BROKEN:
        hint = f"; {dist} is installed but failed to import: {BROKEN[dist]}"
    raise BackendNotFound(
        f"no installed backend serves the scheme {config.scheme!r} (URL {config.redacted_url!r}){hint}. "
        f"Installed schemes: {', '.join(served) or 'none'}"
    )
