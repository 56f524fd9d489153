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
"""The gateway failed in a way nobody expected; the request was not (fully) handled."""
CLIENT_BUSY: Final = -31007
"""The client already has `max_in_flight_per_client` requests open."""
OVERLOADED: Final = -31008
"""The gateway is past its memory shedding threshold and takes no new requests for now."""
CLIENT_UNREACHABLE: Final = -31009
"""A backend's server->client request cannot be delivered to the client it names."""
SESSION_LIMIT: Final = -31010
"""A caller (or the gateway) holds as many legacy sessions as it may."""
CLIENT_BACKLOGGED: Final = -31011
"""The client is not reading: a backend's request to it could not even be queued."""
QUOTA_EXCEEDED: Final = -31012
"""The caller's share of a shared table (parked calls, tasks, subscriptions) is used up."""
AUDIT_UNAVAILABLE: Final = -31013
"""The audit trail cannot record (its store is down or too slow) and `audit.on_failure` is
`fail_closed`: no call runs unrecorded."""
REDACTION_BLOCKED: Final = -31030
"""A redaction rule with action `block` found what it blocks in a backend's result."""
RATE_LIMITED: Final = -31020
"""A rate limit, concurrency cap or budget refused the call (`data.retryAfterMs`, `data.rule`,
`data.limit`); over HTTP, a 429 with `Retry-After`. Limits take -31020..-31029."""
LIMITS_UNAVAILABLE: Final = -31021
SESSION_VIEW_REFUSED: Final = -31060
"""Tool pinning: a backend's session for this client lists a tool, prompt or template unlike
the one every client was shown (a per-session rug pull); the session is not used."""
"""The rate-limit counters cannot be reached and the rule fails closed; over HTTP, a 503."""
APPROVAL_DENIED: Final = -31040
"""An approver (or the caller's own user, for a confirmation) denied the call's ticket.
Approvals take -31040..-31049; every one carries `data.ticket` when a ticket is known."""
APPROVAL_EXPIRED: Final = -31041
"""The call's ticket expired before it was approved and used; the next call asks anew."""
APPROVAL_STATE_INVALID: Final = -31042
"""A `requestState` the gateway did not sign for this caller and these arguments (forged,
tampered, another caller's, other arguments, or expired)."""
APPROVAL_POLICY_CHANGED: Final = -31043
"""The `approvals:` rules changed since the ticket was made: it is void; ask again."""
APPROVAL_UNAVAILABLE: Final = -31044
"""The ticket store cannot be reached: a gated call does not run."""
APPROVAL_USED: Final = -31045
"""The approval was already used: one approval runs exactly one call."""
