"""JSON-RPC and MCP error codes, and Switchyard's own block.

Switchyard's own failures use -31000..-31099: outside JSON-RPC's reserved -32768..-32000, so a
client can never mistake them for a spec-defined error, and every one carries `data.source`.
"""

from typing import Final

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
RESOURCE_NOT_FOUND_LEGACY: Final = -32002
HEADER_MISMATCH: Final = -32020
MISSING_CLIENT_CAPABILITY: Final = -32021
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022

BACKEND_UNAVAILABLE: Final = -31000
BACKEND_TIMEOUT: Final = -31001
BACKEND_PROTOCOL_ERROR: Final = -31002
RESULT_TOO_LARGE: Final = -31003
CLIENT_TIMEOUT: Final = -31004
BACKEND_BUSY: Final = -31005
GATEWAY_ERROR: Final = -31006
"""An unexpected failure inside Switchyard while serving a request (a bug, never the client's)."""
CLIENT_BUSY: Final = -31007
"""The client already has `max_in_flight_per_client` requests open."""
OVERLOADED: Final = -31008
"""The gateway is past its memory shedding threshold and takes no new requests for now."""
CLIENT_UNREACHABLE: Final = -31009
"""A backend's server->client request cannot be delivered to the client it names."""
