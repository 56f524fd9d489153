"""Who may start another request: the per-client in-flight quota and memory shedding, applied the
same way on every HTTP face.

A slot is held until the request's answer is written or queued, not merely while its HTTP call
runs: on the 2024-11-05 transport the POST is answered 202 at once and the work continues in a
detached task, which takes the slot over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from switchyard.protocol import codes
from switchyard.storage.counters import Counters, MemoryCounters
from switchyard.wire import frame
from switchyard.wire.frame import Reply

ADMISSION_KEY: Final = "switchyard.admission"
"""Where the listener leaves a request's Admission in the ASGI scope."""

RETRY_AFTER_S: Final = 1


def busy_reply() -> Reply:
    return frame.error_reply(
        codes.CLIENT_BUSY,
        "Too many requests in flight; retry shortly",
        {"source": "gateway", "retryAfter": RETRY_AFTER_S},
    )


def overloaded_reply() -> Reply:
    return frame.error_reply(
        codes.OVERLOADED,
        "Overloaded; retry shortly",
        {"source": "gateway", "retryAfter": RETRY_AFTER_S},
    )


class Lease:
    """One slot of a client's quota; released once, by whoever holds it last."""

    __slots__ = ("_key", "_quota", "detached", "released")

    def __init__(self, quota: ClientQuota, key: str) -> None:
        self._quota = quota
        self._key = key
        self.detached = False
        self.released = False

    def detach(self) -> Callable[[], None]:
        """Hand the slot to work that outlives the HTTP call; it must call what is returned."""
        self.detached = True
        return self.release

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._quota.release(self._key)


class ClientQuota:
    """At most `limit` requests of one client (principal, else session) at a time."""

    def __init__(self, limit: int, counts: Counters | None = None) -> None:
        self.limit = limit
        self.counts: Counters = counts if counts is not None else MemoryCounters()

    def take(self, key: str) -> Lease | None:
        return Lease(self, key) if self.counts.take(key, self.limit) else None

    def release(self, key: str) -> None:
        self.counts.release(key)


@dataclass(slots=True)
class Admission:
    """What the listener decided for one request: a slot to hold, or why there is none.

    A face that answers requests out of band (the `/messages` POST is answered 202, its result
    on the session's stream) reads this instead of being refused at the HTTP level, so the
    refusal reaches the client as a JSON-RPC error carrying the request's id."""

    lease: Lease | None = None
    refusal: Reply | None = None
