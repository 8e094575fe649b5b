"""A module that opens a blocking bus while it is being imported (as a Django app's
module may) and asks its own service a question before its import has finished."""

from __future__ import annotations

import os

from sync_messages import WhoAmI, echo_service

import pycomms.sync

bus = pycomms.sync.connect(os.environ["SYNC_TEST_URL"], services=[echo_service()])
ANSWER = bus.request(WhoAmI(n=42), timeout=30)
