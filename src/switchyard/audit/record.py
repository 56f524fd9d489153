"""What one audit record holds, and its chain link.

A record is a flat JSON object, versioned by `v`; its hash is SHA-256 over the previous
record's hash (32 bytes) followed by the record's RFC 8785 bytes, so changing, removing or
moving any record changes every hash after it. Records hold the caller's qualified principal
and an HMAC-SHA256 digest of the call's arguments, never the credential and never the raw
arguments unless a rule asks for them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from switchyard.audit.canonical import CanonicalError, canonical
from switchyard.audit.settings import AuditSettings
from switchyard.observability.decisions import Decision

VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({VERSION})
GENESIS: Final = "0" * 64
"""The `prev` of a stream's first record and of its first checkpoint."""
FIELD_CHARS: Final = 1024
METHOD_CHARS: Final = 128

_json: Final = msgspec.json.Decoder()


_SECOND: list[tuple[int, str]] = [(-1, "")]


def timestamp(at: float) -> str:
    """ISO 8601 UTC with milliseconds; sorts as text in time order."""
    second = int(at)
    cached, stamp = _SECOND[0]
    if cached != second:
        # Formatted once per second, not per record.
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _SECOND[0] = (second, stamp)
    return f"{stamp}.{min(999, int((at - second) * 1000)):03d}Z"


def link(prev: str, body: bytes) -> str:
    """The hash of a record (or checkpoint) whose canonical bytes are `body`."""
    return hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()


def _capped(value: str | None, limit: int = FIELD_CHARS) -> str | None:
    if value is None or len(value) <= limit:
        return value
    return f"{value[:limit]}…[+{len(value) - limit} chars]"


@functools.lru_cache(maxsize=4)
def _keyed(key: bytes) -> hmac.HMAC:
    # The key schedule and the digest lookup once per key: per record they were half the
    # cost of the digest. Copies of it are independent (and safe to take from any thread).
    return hmac.new(key, digestmod=hashlib.sha256)


def arguments_digest(key: bytes, arguments: bytes | None) -> str | None:
    """HMAC-SHA256 of the arguments' canonical form (equal for equal arguments, whatever key
    order or spacing the client used); of the raw bytes when they are not canonicalisable."""
    if arguments is None:
        return None
    try:
        body = canonical(_json.decode(arguments))
    except (msgspec.DecodeError, CanonicalError, RecursionError):
        body = bytes(arguments)
    mac = _keyed(key).copy()
    mac.update(body)
    return mac.hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Something the gateway did that no request asked for at that moment: a pin event now;
    approvals and admin changes next. Recorded in the same chain as decisions."""

    event: str
    """The record's kind (`pin`, ...): never `decision`."""
    at: float
    fields: Mapping[str, Any]
    """Flat JSON values describing it (capped strings; never a secret)."""


def event_record(event: AuditEvent, writer: str, seq: int) -> dict[str, Any]:
    """The record of one event, without its chain link."""
    record: dict[str, Any] = {
        "v": VERSION,
        "event": event.event,
        "writer": writer,
        "seq": seq,
        "ts": timestamp(event.at),
    }
    for key, value in event.fields.items():
        record.setdefault(key, _capped(value) if isinstance(value, str) else value)
    return record


class _DecisionBody(msgspec.Struct, omit_defaults=False):
    """A decision's record without raw arguments, its fields declared in JCS order (names
    sorted): msgspec writes a struct's fields in declaration order, so encoding it gives the
    record's canonical bytes with no dict to build and no keys to sort
    (`tests/unit/test_audit_trail.py` holds the two to the same bytes)."""

    args_hmac: str | None
    backend: str | None
    decision: str
    era: str | None
    event: str
    face: str | None
    latency_us: int | None
    method: str | None
    name: str | None
    outcome: str | int
    principal: str | None
    public: str | None
    reason: str | None
    request_bytes: int | None
    request_id: str | None
    result_bytes: int | None
    seq: int
    status: int | None
    trace_id: str | None
    ts: str
    v: int
    via: str | None
    view: str | None
    writer: str


_body_encoder: Final = msgspec.json.Encoder()
_SAFE: Final = 2**53


def _body(decision: Decision, settings: AuditSettings, writer: str, seq: int) -> _DecisionBody:
    """What a decision's record says (capped strings; never a secret)."""
    request_id = decision.request_id
    outcome = decision.outcome
    return _DecisionBody(
        args_hmac=arguments_digest(settings.hmac_key, decision.arguments),
        backend=_capped(decision.backend),
        decision=decision.decision,
        era=decision.era,
        event="decision",
        face=decision.face,
        # Whole microseconds: an integer keeps the record a flat object of exact values.
        latency_us=round(decision.latency_ms * 1000) if decision.latency_ms is not None else None,
        method=_capped(decision.method, METHOD_CHARS),
        name=_capped(decision.name),
        outcome=outcome if isinstance(outcome, int) else _capped(outcome),  # type: ignore[arg-type]
        principal=_capped(decision.qualified_principal),
        public=_capped(decision.target),
        reason=_capped(decision.reason),
        request_bytes=decision.request_bytes,
        request_id=_capped(request_id.decode("utf-8", "replace"))
        if request_id is not None
        else None,
        result_bytes=decision.result_bytes,
        seq=seq,
        status=decision.status,
        trace_id=decision.trace_id,
        ts=timestamp(decision.at),
        v=VERSION,
        via=decision.via,
        view=_capped(decision.view),
        writer=writer,
    )


def _wants_raw(decision: Decision, settings: AuditSettings) -> bool:
    return (
        decision.arguments is not None
        and bool(settings.raw_arguments)
        and settings.wants_raw_arguments(
            decision.principal, decision.qualified_principal, decision.backend, decision.name
        )
    )


def decision_record(
    decision: Decision, settings: AuditSettings, writer: str, seq: int
) -> dict[str, Any]:
    """The record of one decision, without its chain link."""
    record = msgspec.structs.asdict(_body(decision, settings, writer, seq))
    if _wants_raw(decision, settings):
        assert decision.arguments is not None
        record["args"] = _raw_arguments(bytes(decision.arguments), settings)
    return record


def _safe(value: int | None) -> bool:
    return value is None or -_SAFE <= value <= _SAFE


def decision_body(
    decision: Decision, settings: AuditSettings, writer: str, seq: int
) -> tuple[str, bytes] | None:
    """The timestamp and canonical bytes of one decision's record, when it is the common
    kind (no raw arguments, every number exactly representable): the same bytes as
    `canonical(decision_record(...))` at a fraction of the cost. None: take that path."""
    if _wants_raw(decision, settings):
        return None
    body = _body(decision, settings, writer, seq)
    outcome = body.outcome
    if not (
        _safe(body.latency_us)
        and _safe(body.request_bytes)
        and _safe(body.result_bytes)
        and _safe(body.status)
        and (not isinstance(outcome, int) or _safe(outcome))
    ):
        return None
    try:
        return body.ts, _body_encoder.encode(body)
    except UnicodeEncodeError:  # a lone surrogate: the general path says what to do
        return None


def _raw_arguments(arguments: bytes, settings: AuditSettings) -> Any:
    if len(arguments) > settings.max_raw_arguments_bytes:
        return f"[{len(arguments)} bytes: over audit.max_raw_arguments_bytes]"
    try:
        return _json.decode(arguments)
    except msgspec.DecodeError:
        return None


class RecordHead(msgspec.Struct, forbid_unknown_fields=False):
    """The fields a verifier reads of every record (the rest is only hashed)."""

    v: int
    writer: str
    seq: int


record_head: Final = msgspec.json.Decoder(RecordHead)
