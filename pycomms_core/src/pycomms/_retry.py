"""The retry policy: how often and how late a failed delivery is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry policy of a service.

    ``max_attempts`` counts the first delivery. Attempt ``n >= 2`` starts about
    ``min(delay * backoff ** (n - 2), max_delay)`` seconds after the failure, spread by
    ``± jitter`` (a fraction of that delay).
    """

    max_attempts: int = 5
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"Retry.max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for field in ("delay", "max_delay"):
            value = getattr(self, field)
            if value < 0:
                raise ValueError(f"Retry.{field} must be >= 0 seconds, got {value!r}")
        if self.backoff < 1:
            raise ValueError(f"Retry.backoff must be >= 1, got {self.backoff!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Retry.jitter must be between 0 and 1, got {self.jitter!r}")

    def base_delay(self, attempt: int) -> float:
        """Seconds before ``attempt`` (2-based) starts, without jitter."""
        if attempt < 2:
            return 0.0
        return float(min(self.delay * self.backoff ** (attempt - 2), self.max_delay))

    def delay_for(self, attempt: int) -> float:
        """Seconds before ``attempt`` starts, with jitter applied."""
        base = self.base_delay(attempt)
        if self.jitter and base:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, base)
