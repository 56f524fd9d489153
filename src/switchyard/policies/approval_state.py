"""The `requestState` the gateway hands a 2026-07-28 client while a call waits for approval.

The client echoes it verbatim on its retry, and may have changed it: it is signed with
HMAC-SHA256 under the `approvals.secret` every gateway process shares, and binds the ticket,
the qualified principal, the digest of the arguments and an expiry. A state that fails any of
these is refused; the gateway never trusts what it says without the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "sy-approval.1."
"""Marks a state as the gateway's own (a backend's states never start with it)."""


class StateError(ValueError):
    """The state is not one this gateway issued for this call (the message says why)."""


@dataclass(frozen=True, slots=True)
class ApprovalState:
    ticket: str
    principal: str
    args_digest: str
    expires_ms: int
    step: int | None = None
    """Set on the state of an approved call's later round (its backend asked for input):
    which round it is, so each is taken once."""
    backend_state: str | None = None
    """The backend's own `requestState` of that round, carried inside ours."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_ours(state: str) -> bool:
    return state.startswith(PREFIX)


def sign(key: bytes, state: ApprovalState) -> str:
    fields: dict[str, object] = {
        "t": state.ticket,
        "p": state.principal,
        "d": state.args_digest,
        "e": state.expires_ms,
    }
    if state.step is not None:
        fields["s"] = state.step
        fields["b"] = state.backend_state
    body = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.digest(key, PREFIX.encode() + body, "sha256")
    return f"{PREFIX}{_b64(body)}.{_b64(mac)}"


def verify(key: bytes, text: str, principal: str, args_digest: str) -> ApprovalState:
    """The state, if it is intact, this caller's, for these arguments, and unexpired."""
    if not is_ours(text):
        raise StateError("not an approval state")
    try:
        body_b64, mac_b64 = text[len(PREFIX) :].split(".")
        body, mac = _unb64(body_b64), _unb64(mac_b64)
    except (ValueError, TypeError):
        raise StateError("the approval state is malformed") from None
    expected = hmac.digest(key, PREFIX.encode() + body, "sha256")
    if not hmac.compare_digest(mac, expected):
        raise StateError("the approval state's signature is not valid")
    try:
        fields = json.loads(body)
        step = fields.get("s")
        backend = fields.get("b")
        state = ApprovalState(
            str(fields["t"]),
            str(fields["p"]),
            str(fields["d"]),
            int(fields["e"]),
            int(step) if step is not None else None,
            str(backend) if backend is not None else None,
        )
    except (ValueError, KeyError, TypeError):
        raise StateError("the approval state is malformed") from None
    if state.principal != principal:
        raise StateError("the approval state belongs to another caller")
    if state.args_digest != args_digest:
        raise StateError("the arguments differ from the call awaiting approval")
    if time.time() * 1000 >= state.expires_ms:
        raise StateError("the approval state has expired")
    return state


def signature(key: bytes, body: bytes, at: int) -> str:
    """The webhook's `X-Switchyard-Signature`: `t=<unix seconds>,v1=<hex HMAC of t.body>`."""
    mac = hmac.new(key, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def signature_valid(
    key: bytes, header: str | None, body: bytes, now: float | None = None, tolerance_s: int = 300
) -> bool:
    """What a webhook receiver checks: the header is present, well formed, signed with `key`
    over exactly this body, and no older (or newer) than `tolerance_s` (a replayed delivery)."""
    if not header:
        return False
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        at = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - at) > tolerance_s:
        return False
    expected = signature(key, body, at).split(",v1=", 1)[1]
    return hmac.compare_digest(given, expected)
