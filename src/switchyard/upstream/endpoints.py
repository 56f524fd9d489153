"""The endpoints of one backend: each URL (or stdio replica) with its own connection, health,
breaker and count of requests in flight, and how a request picks one.

Picking is "power of two choices" on requests in flight: two endpoints drawn at random among
those that admit calls, the less busy one wins, without the herd behaviour of always choosing
the global minimum. When one of the two has lately been more than twice as slow as the other
(a peak-sensitive moving average that fades while an endpoint gets no traffic, so it is tried
again), requests in flight are weighted by latency: with a handful of callers a slow endpoint
never accumulates enough requests in flight to be avoided, and in-flight counts alone kept
sending a 10x slower replica 9 % of calls (p99 x7); weighted, 0.5 % (p99 unchanged).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from switchyard.upstream.breaker import CLOSED, OPEN, Breaker, BreakerSettings
from switchyard.upstream.connection import Connection
from switchyard.upstream.http import HttpSettings
from switchyard.upstream.stdio import StdioSettings

Transport = StdioSettings | HttpSettings
# How fast a remembered latency fades when an endpoint gets no traffic (it is then tried again).
LATENCY_FADE_S = 10.0
# Weight of a new latency sample below the current average (above it, it is taken at once).
LATENCY_WEIGHT = 0.2
# Two endpoints' latencies count only when one is this many times the other.
SLOWER = 2.0
# Answers an endpoint gives before its latency counts: a process's first answers are slow
# (imports, caches), and one cold answer must not starve a replica that is in fact as fast.
WARM_SAMPLES = 3
# A latency this old no longer counts: an endpoint kept from traffic because it looked slow
# gets a request again within this long, so one slow answer (a pause, a noisy neighbour) never
# starves it for longer.
STALE_S = 5.0
# ... and only when they differ by this much at least: sub-millisecond noise between equally
# fast replicas (a collection pause, a busy core) is never a reason to prefer one.
MIN_GAP_S = 0.005


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
    latency_s: float = 0.0
    latency_at: float = 0.0
    samples: int = 0

    def recent_latency(self, now: float) -> float:
        """The latency to compare endpoints by; 0.0 when unknown (not warm yet, or stale)."""
        if not self.latency_s or self.samples < WARM_SAMPLES or now - self.latency_at > STALE_S:
            return 0.0
        return self.latency_s * math.exp(-(now - self.latency_at) / LATENCY_FADE_S)

    def observe(self, seconds: float) -> None:
        """One answered request's latency: a slower one is believed at once, a faster one
        gradually (a single quick answer does not make a slow endpoint look fast)."""
        now = time.monotonic()
        self.samples += 1
        current = self.latency_s * math.exp(-(now - self.latency_at) / LATENCY_FADE_S)
        if self.samples <= WARM_SAMPLES or seconds >= current:
            self.latency_s = seconds
        else:
            self.latency_s = current + (seconds - current) * LATENCY_WEIGHT
        self.latency_at = now

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
            "latencyMs": round(self.recent_latency(time.monotonic()) * 1000, 1),
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
        la, lb = _load(a, b, load), _load(b, a, load)
        if la == lb:
            return a if rng.random() < 0.5 else b
        return a if la < lb else b
    for ep in endpoints:
        if ep.index not in exclude and ep.admits():
            return ep
    return None


def _load(ep: Endpoint, other: Endpoint, load: str) -> float:
    """`ep`'s cost when compared with `other`."""
    if load == "sessions":
        return ep.in_flight + ep.isolated
    now = time.monotonic()
    mine, theirs = ep.recent_latency(now), other.recent_latency(now)
    slow, fast = max(mine, theirs), min(mine, theirs)
    if fast <= 0 or slow < SLOWER * fast or slow - fast < MIN_GAP_S:
        # Equally fast (or not measured yet): noise in latency must not starve one of
        # traffic; requests in flight alone decide.
        return ep.in_flight
    return (ep.in_flight + 1) * mine
