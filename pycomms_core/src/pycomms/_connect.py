"""`pycomms.connect`: the URL resolved, the backend found, the bus opened."""

from __future__ import annotations

from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any

from ._bus import Bus
from ._config import backend_config, make_transport, resolve_url
from ._service import Service


class connect:  # noqa: N801 - reads as a function: `async with connect(...)` / `await connect(...)`
    """Connect to a backend: ``async with pycomms.connect(url, services=[...]) as bus``
    or ``bus = await pycomms.connect(...)`` then ``await bus.close()``.

    ``url=None`` reads ``$PYCOMMS_URL``, then ``pycomms.toml`` / ``[tool.pycomms]``,
    then uses the default. Keyword ``options`` are passed to the backend (they win
    over the URL's query options).
    """

    def __init__(
        self, url: str | None = None, *, services: Iterable[Service] = (), name: str | None = None, **options: Any
    ) -> None:
        config = backend_config(resolve_url(url), options)
        self._bus = Bus(make_transport(config), config, list(services), name)

    def __await__(self) -> Generator[Any, None, Bus]:
        return self._bus._open().__await__()

    async def __aenter__(self) -> Bus:
        return await self._bus._open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._bus.close()
