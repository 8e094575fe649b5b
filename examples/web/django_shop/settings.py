"""A minimal Django project around the ``shop`` app: no database, no templates."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# the recipes' shared messages (examples/web/shop_messages.py); a real project imports
# its message types from its own package instead
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-pycomms-recipe")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["shop"]
ROOT_URLCONF = "urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# The bus's URL: None reads $PYCOMMS_URL, then pycomms.toml, as everywhere.
PYCOMMS_URL = os.environ.get("PYCOMMS_URL")
