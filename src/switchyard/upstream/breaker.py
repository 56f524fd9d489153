"""A circuit breaker for one backend endpoint: closed, open, half-open.

Closed: every call goes through; `failures` consecutive transport failures (connection lost,
refused, timed out; never a tool's `isError` or a JSON-RPC error the backend chose to send)
open it. Open: calls are refused at once until `retry_at`, an exponentially growing, jittered
delay (so that many gateways do not come back in step). Then half-open: exactly one trial call
is let through; its success closes the breaker, its failure opens it again for longer.

Health probes never go through the breaker: they are how an open breaker learns that the
endpoint is back (a probe's success closes it), so a breaker cannot wedge itself shut.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

State = Literal["closed", "open", "half_open"]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures: int = 5
    """Consecutive transport failures that open the breaker."""
    open_s: float = 5.0
    """First open duration; doubled on each re-opening without a success in between."""
    max_open_s: float = 300.0
    jitter: float = 0.5
    """Each open duration is scaled by a random factor in [1 - jitter, 1 + jitter]."""
    enabled: bool = True


class Breaker:
    def __init__(
        self,
        settings: BreakerSettings,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self.state: State = CLOSED
        self.consecutive = 0
        """Transport failures since the last success."""
        self.openings = 0
        """Times opened since the last close: the backoff exponent."""
        self.retry_at = 0.0
        """Monotonic time an open breaker admits its half-open trial."""
        self._trial = False
        """The half-open trial call is in flight."""

    def allows(self) -> bool:
        """May a call go through now? An open breaker past its delay turns half-open and
        admits this one call as its trial."""
        if not self.settings.enabled or self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._clock() < self.retry_at:
                return False
            self.state = HALF_OPEN
            self._trial = False
        if self._trial:
            return False
        self._trial = True
        return True

    def retry_in(self) -> float:
        """Seconds until an open breaker admits a trial (0 when it would now)."""
        return max(0.0, self.retry_at - self._clock())

    def success(self) -> None:
        self.state = CLOSED
        self.consecutive = 0
        self.openings = 0
        self._trial = False

    def failure(self) -> bool:
        """Record one transport failure; True when this opened the breaker."""
        if not self.settings.enabled:
            return False
        self.consecutive += 1
        if self.state == HALF_OPEN or (
            self.state == CLOSED and self.consecutive >= self.settings.failures
        ):
            self.trip()
            return True
        return False

    def release(self) -> None:
        """A half-open trial ended without a verdict (cancelled, or a backend's own error)."""
        if self.state == HALF_OPEN and self._trial:
            self._trial = False

    def trip(self) -> None:
        """Open now (a failed trial, a failure run, or health probes that found it dead)."""
        s = self.settings
        delay = min(s.max_open_s, s.open_s * (2.0 ** min(self.openings, 32)))
        delay *= 1.0 + self._rng.uniform(-s.jitter, s.jitter)
        self.state = OPEN
        self.openings += 1
        self.retry_at = self._clock() + max(0.0, delay)
        self._trial = False
