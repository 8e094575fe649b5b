"""PyComms benchmark harness: ``python -m bench --url URL``.

Runs the same workloads through PyComms' public API and through named baselines (a
hand-written client for the same broker, FastStream where it supports it) in one
invocation, so that ratios are measured under the same machine load. Not part of
the test suite; CI runs ``python -m bench --url memory:// --smoke``.
"""

from __future__ import annotations
