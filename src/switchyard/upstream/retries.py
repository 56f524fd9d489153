"""When a failed upstream request may be sent again, and how long to wait first.

A request is re-sent only when doing so cannot execute anything twice:
  * it provably never reached the backend (no connection could be made, the stdio process was
    gone before the write, no endpoint admitted it): any method;
  * or it is safe to repeat by its nature: reads and listings, and a `tools/call` whose tool is
    annotated `readOnlyHint: true` AND `idempotentHint: true`.
Anything else (a `tools/call` whose connection broke after it was sent, or that timed out) is
answered with the failure: the gateway cannot know whether it ran.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Final

from switchyard.protocol import codes, methods
from switchyard.wire import frame
from switchyard.wire.frame import Reply

# Requests that change nothing upstream whatever their arguments.
SAFE_METHODS: Final = frozenset(
    {
        methods.PING,
        methods.TOOLS_LIST,
        methods.PROMPTS_LIST,
        methods.RESOURCES_LIST,
        methods.TEMPLATES_LIST,
        methods.RESOURCES_READ,
        methods.PROMPTS_GET,
        methods.COMPLETE,
    }
)
TRANSPORT_CODES: Final = frozenset({codes.BACKEND_UNAVAILABLE, codes.BACKEND_TIMEOUT})


@dataclass(frozen=True, slots=True)
class RetrySettings:
    attempts: int = 3
    """Sends of one request at most, the first included."""
    backoff_s: float = 0.1
    """Wait before the n-th re-send: backoff_s * 2**n, scaled by a random factor 0.5..1.5."""
    max_backoff_s: float = 2.0

    def delay(self, retry: int, rng: random.Random) -> float:
        base = min(self.max_backoff_s, self.backoff_s * (2.0**retry))
        return base * rng.uniform(0.5, 1.5)


def safe_to_repeat(method: str, tool: bytes | None) -> bool:
    """May this request run twice without harm? `tool`: for a `tools/call`, the tool as the
    catalog lists it (its annotations decide)."""
    if method in SAFE_METHODS:
        return True
    return method == methods.TOOLS_CALL and tool is not None and _repeatable(tool)


@functools.lru_cache(maxsize=1024)
def _repeatable(tool: bytes) -> bool:
    # Cached: a catalog entry keeps the same bytes object for as long as its listing stands,
    # so a call costs a lookup, not a decode of the tool's whole listing (schemas included).
    try:
        raw = frame.decode_object(tool).get("annotations")
        annotations = frame.decode_any(raw) if raw is not None else None
    except (frame.DecodeError, frame.ValidationError):
        return False
    return (
        isinstance(annotations, dict)
        and annotations.get("readOnlyHint") is True
        and annotations.get("idempotentHint") is True
    )


@dataclass(frozen=True, slots=True)
class Failure:
    """What the gateway knows about a failed attempt."""

    transport: bool
    """The gateway's own verdict that the backend did not answer (not the backend's error)."""
    delivered: bool
    """False only when the request provably never reached the backend."""


def failure_of(reply: Reply) -> Failure | None:
    """None when the backend answered (a result, or an error of its own)."""
    if reply.error is None:
        return None
    try:
        err = frame.decode_object(reply.error)
        code = frame.decode_any(err["code"])
        data = frame.decode_object(err["data"]) if "data" in err else {}
    except (KeyError, frame.DecodeError, frame.ValidationError):
        return None
    source = frame.decode_any(data["source"]) if "source" in data else None
    if source != "gateway" or code not in TRANSPORT_CODES:
        return None
    delivered = frame.decode_any(data["delivered"]) if "delivered" in data else True
    return Failure(transport=True, delivered=delivered is not False)
