"""Era detection and the opening exchange with a backend, over any request function.

stdio: send `server/discover` first; a DiscoverResult means modern, any error or silence means
legacy, so fall back to `initialize` (never key on one error code, per the spec).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import switchyard
from switchyard.protocol import methods
from switchyard.protocol.versions import (
    LATEST_HANDSHAKE,
    LATEST_MODERN,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    MODERN_VERSIONS,
    Era,
)
from switchyard.upstream.connection import ServerFacts
from switchyard.wire import frame
from switchyard.wire.frame import Reply

CLIENT_INFO: Final = {"name": "switchyard", "version": switchyard.__version__}

Requester = Callable[[str, bytes | None], Awaitable[Reply]]


class HandshakeFailed(Exception):
    pass


def modern_meta(version: str = LATEST_MODERN) -> dict[str, Any]:
    return {
        META_PROTOCOL_VERSION: version,
        META_CLIENT_CAPABILITIES: {},
        META_CLIENT_INFO: CLIENT_INFO,
    }


def discover_params() -> bytes:
    return frame.encode({"_meta": modern_meta()})


# What a shared upstream session declares: what Switchyard can route to the client whose
# request a server->client request belongs to (answered with an error for a client without it).
ROUTABLE_CLIENT_CAPABILITIES: Final = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}


def initialize_params(version: str = LATEST_HANDSHAKE, capabilities: Any = None) -> bytes:
    return frame.encode(
        {
            "protocolVersion": version,
            "capabilities": ROUTABLE_CLIENT_CAPABILITIES if capabilities is None else capabilities,
            "clientInfo": CLIENT_INFO,
        }
    )


def facts_from_discover(reply: Reply) -> ServerFacts | None:
    """Modern facts if `reply` is a usable DiscoverResult, else None."""
    if reply.result is None:
        return None
    try:
        result = frame.decode_any(reply.result)
    except frame.DecodeError:
        return None
    if not isinstance(result, dict):
        return None
    versions = result.get("supportedVersions")
    if not isinstance(versions, list):
        return None
    common = [v for v in MODERN_VERSIONS if v in versions]
    if not common:
        return None
    meta = result.get("_meta") or {}
    return ServerFacts(
        era=Era.MODERN,
        version=common[-1],
        capabilities=result.get("capabilities") or {},
        server_info=meta.get("io.modelcontextprotocol/serverInfo")
        if isinstance(meta, dict)
        else None,
        instructions=result.get("instructions"),
    )


def facts_from_initialize(reply: Reply) -> ServerFacts:
    if reply.result is None:
        err = frame.decode_error(reply.error or b'{"code":0,"message":"no result"}')
        raise HandshakeFailed(f"initialize failed: {err.message} ({err.code})")
    result = frame.decode_any(reply.result)
    if not isinstance(result, dict) or not isinstance(result.get("protocolVersion"), str):
        raise HandshakeFailed("initialize returned no protocolVersion")
    return ServerFacts(
        era=Era.LEGACY,
        version=result["protocolVersion"],
        capabilities=result.get("capabilities") or {},
        server_info=result.get("serverInfo"),
        instructions=result.get("instructions"),
    )


async def legacy_handshake(
    request: Requester,
    notify: Callable[[str, bytes | None], Awaitable[None]],
    capabilities: Any = None,
) -> ServerFacts:
    params = initialize_params(capabilities=capabilities)
    facts = facts_from_initialize(await request(methods.INITIALIZE, params))
    await notify(methods.INITIALIZED, None)
    return facts
