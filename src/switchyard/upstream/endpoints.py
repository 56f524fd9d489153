"""The endpoints of one backend: each URL (or stdio replica) with its own connection, health,
breaker and count of requests in flight, and how a request picks one.

Picking is "power of two choices" on requests in flight: two endpoints drawn at random among
those that admit calls, the less busy one wins. A slow endpoint accumulates requests in flight
and so is picked less, without the herd behaviour of always choosing the global minimum.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from switchyard.upstream.breaker import CLOSED, OPEN, Breaker, BreakerSettings
from switchyard.upstream.connection import Connection
from switchyard.upstream.http import HttpSettings
from switchyard.upstream.stdio import StdioSettings

Transport = StdioSettings | HttpSettings


@dataclass(eq=False)
class Endpoint:
    index: int
    transport: Transport
    breaker: Breaker
    connection: Connection | None = None
    state: str = "starting"
    """starting, up, unhealthy (connected, probes fail), down, stopped."""
    last_error: str | None = None
    since: float = field(default_factory=time.time)
    restarts: int = 0
    in_flight: int = 0
    isolated: int = 0
    """Isolated sessions opened on this endpoint and still open."""
    failures: int = 0
    """Transport failures seen on real traffic (timeouts, connections lost)."""

    @property
    def label(self) -> str:
        t = self.transport
        return t.url if isinstance(t, HttpSettings) else f"replica {self.index}"

    @property
    def connected(self) -> bool:
        return self.connection is not None and self.state in ("up", "unhealthy")

    def admits(self) -> bool:
        """Would a request be sent here now? (Consumes a half-open breaker's one trial.)"""
        return self.connected and self.breaker.allows()

    def set_state(self, state: str, error: str | None) -> None:
        if state != self.state or error != self.last_error:
            self.since = time.time()
        self.state = state
        self.last_error = error

    def status(self) -> dict[str, Any]:
        b = self.breaker
        out: dict[str, Any] = {
            "endpoint": self.label,
            "state": self.state,
            "breaker": b.state,
            "inFlight": self.in_flight,
            "error": self.last_error,
            "restarts": self.restarts,
            "failures": self.failures,
        }
        if b.state == OPEN:
            out["retryInMs"] = int(b.retry_in() * 1000)
        return out


def build(transports: tuple[Transport, ...], breaker: BreakerSettings) -> list[Endpoint]:
    return [Endpoint(i, t, Breaker(breaker)) for i, t in enumerate(transports)]


def choose(
    endpoints: list[Endpoint],
    exclude: set[int],
    rng: random.Random,
    load: str = "in_flight",
) -> Endpoint | None:
    """Two random candidates among the connected, not excluded endpoints whose breaker is
    closed; the less loaded wins. When none is closed, an open breaker due for its trial
    may take the request (that is how it learns the endpoint is back)."""
    ready = [
        ep
        for ep in endpoints
        if ep.index not in exclude and ep.connected and ep.breaker.state == CLOSED
    ]
    if ready:
        if len(ready) == 1:
            return ready[0]
        a, b = rng.sample(ready, 2)
        return a if _load(a, load) <= _load(b, load) else b
    for ep in endpoints:
        if ep.index not in exclude and ep.admits():
            return ep
    return None


def _load(ep: Endpoint, load: str) -> int:
    return ep.in_flight + (ep.isolated if load == "sessions" else 0)
