"""Protocol revisions Switchyard speaks, and how each era negotiates them."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: Final = ("2026-07-28",)
LATEST_HANDSHAKE: Final = HANDSHAKE_VERSIONS[-1]
LATEST_MODERN: Final = MODERN_VERSIONS[-1]
# Absent MCP-Protocol-Version on a legacy HTTP request means this revision (spec 2025-06-18).
DEFAULT_HTTP_LEGACY_VERSION: Final = "2025-03-26"

META_PROTOCOL_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO: Final = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO: Final = "io.modelcontextprotocol/serverInfo"
META_LOG_LEVEL: Final = "io.modelcontextprotocol/logLevel"
META_SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"
MODERN_META_KEYS: Final = frozenset(
    {META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL}
)


class Era(StrEnum):
    """Legacy: the `initialize` handshake and sessions (<= 2025-11-25). Modern: stateless."""

    LEGACY = "legacy"
    MODERN = "modern"


def negotiate_handshake(requested: str) -> str:
    """Answer a legacy `initialize`: the client's version if we speak it, else our latest."""
    return requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE


def is_modern(version: str) -> bool:
    return version in MODERN_VERSIONS
