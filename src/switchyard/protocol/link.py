"""The way back to a client: what a backend may do toward the client whose request it serves."""

from __future__ import annotations

from typing import Final, Protocol

from switchyard.wire import frame
from switchyard.wire.frame import Reply

# Server->client requests and the client capability each needs (2025-11-25 schema).
CAPABILITY_FOR: Final = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


class ClientLink(Protocol):
    @property
    def client(self) -> str:
        """Identifies the client (its session), so requests of one client can be told apart."""
        ...

    async def notify(self, method: str, params: bytes | None) -> None:
        """A request-scoped notification (progress, log message) to the client."""
        ...

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        """A server->client request (sampling, elicitation, roots); the client's answer."""
        ...


# Syslog severities (RFC 5424) as MCP names them, least to most severe.
LOG_LEVELS: Final = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
_SEVERITY: Final = {name: rank for rank, name in enumerate(LOG_LEVELS)}


def log_wanted(params: bytes | None, threshold: str | None) -> bool:
    """Whether a `notifications/message` meets the level a client asked for (None: all)."""
    if threshold is None:
        return True
    try:
        level = frame.decode_str(frame.decode_object(params or b"{}")["level"])
    except (KeyError, frame.DecodeError, frame.ValidationError):
        return False
    return _SEVERITY.get(level, len(LOG_LEVELS)) >= _SEVERITY.get(threshold, 0)
