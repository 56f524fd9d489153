"""W3C Trace Context (`traceparent`): the trace id a request carries, for correlating the
gateway's records with the caller's traces."""

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
