from __future__ import annotations

import pycomms
import pycomms.spi
import pycomms.testing


def test_all_is_sorted_and_complete() -> None:
    for module in (pycomms, pycomms.spi, pycomms.testing):
        names = module.__all__
        assert names == sorted(names, key=_isort_style), module.__name__
        public = {
            n
            for n in dir(module)
            if not n.startswith("_") and getattr(getattr(module, n), "__module__", "").startswith("pycomms")
        }
        public -= {"log", "hookspec"}
        assert public <= set(names), (module.__name__, public - set(names))
        for name in names:
            assert hasattr(module, name), (module.__name__, name)


def _isort_style(name: str) -> tuple[int, str]:
    """Constants, then classes, then the rest (ruff's RUF022 order)."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name
