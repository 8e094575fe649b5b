"""Message types shared by the AMQP tests and their worker processes (which import only
this module: they run outside pytest, without the test path settings)."""

from __future__ import annotations

from pycomms import Command


class Job(Command, name="amqp_test.job"):
    """A command of the crash and broker-fault tests (shared with amqp_worker.py)."""

    n: int
