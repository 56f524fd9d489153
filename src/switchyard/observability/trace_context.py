"""W3C Trace Context: the trace id a request's `traceparent` carries, for correlating the
gateway's records with the caller's traces, and the `tracestate` handed on with it."""

from __future__ import annotations

import re
from typing import Final

_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = "0" * 32
_ZERO_PARENT: Final = "0" * 16


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid `traceparent` value; None for a missing or invalid one (an
    invalid header is ignored, as the specification asks of a receiver)."""
    if traceparent is None or len(traceparent) > 512:
        return None
    value = traceparent.strip()
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace, parent, _flags = m.groups()
    if version == "ff" or trace == _ZERO_TRACE or parent == _ZERO_PARENT:
        return None
    # Version 00 is exactly 55 characters; a later version may append fields after a dash.
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":
        return None
    return trace


# W3C Trace Context §3.3 (`tracestate`): the list's grammar and bounds.
MAX_TRACESTATE_CHARS: Final = 512
MAX_TRACESTATE_MEMBERS: Final = 32
_KEY_CHARS: Final = r"[a-z0-9_\-*/]"
_KEY: Final = re.compile(
    rf"[a-z]{_KEY_CHARS}{{0,255}}|[a-z0-9]{_KEY_CHARS}{{0,240}}@[a-z]{_KEY_CHARS}{{0,13}}"
)
_VALUE: Final = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


def tracestate(value: str | None) -> str | None:
    """A `tracestate` value as it may be handed on: its list-members, comma-separated; None
    when absent, empty, or invalid in any way (over 512 characters, over 32 members, a key or
    value outside the grammar, a key twice), since an invalid list must not be propagated,
    never a partial or raw copy. Several header lines are joined with commas before."""
    if value is None or len(value) > MAX_TRACESTATE_CHARS:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for part in value.split(","):
        member = part.strip(" \t")
        if not member:
            continue  # empty list-members are allowed, and dropped
        key, eq, item = member.partition("=")
        if not eq or _KEY.fullmatch(key) is None or _VALUE.fullmatch(item) is None:
            return None
        if key in keys:
            return None
        keys.add(key)
        members.append(member)
        if len(members) > MAX_TRACESTATE_MEMBERS:
            return None
    return ",".join(members) or None
