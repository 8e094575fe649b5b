"""Entry point for ``python -m bench``."""

from __future__ import annotations

import sys

from bench._cli import main

sys.exit(main())
