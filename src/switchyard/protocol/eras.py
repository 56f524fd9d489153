"""Per-era envelope rules: what a request's params and a result must carry for each peer.

Modern (2026-07-28) requests carry the protocol version and client capabilities in
`params._meta`; modern results carry `resultType` (and cache hints when cacheable). Legacy
peers get neither. These functions splice bytes and decode only one level of an object.
"""

from __future__ import annotations

from typing import Final

from switchyard.protocol import methods
from switchyard.protocol.versions import (
    META_CLIENT_CAPABILITIES,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    META_SUBSCRIPTION_ID,
    MODERN_META_KEYS,
)
from switchyard.wire import frame
from switchyard.wire.frame import Raw

EMPTY_CAPS: Final = Raw(b"{}")
_MODERN_RESULT_KEYS: Final = frozenset({"resultType", "ttlMs", "cacheScope"})
_COMPLETE: Final = Raw(b'"complete"')


def params_for_modern(
    params: dict[str, Raw],
    version: str,
    client_capabilities: Raw | None,
    log_level: str | None = None,
) -> dict[str, Raw]:
    """Ensure a modern backend gets the per-request envelope it requires: `params` with its
    `_meta` completed, as a new dict (the caller's stays what the client sent, which is what
    the access record reads its trace context from)."""
    meta = frame.decode_object(params["_meta"]) if "_meta" in params else {}
    meta[META_PROTOCOL_VERSION] = Raw(frame.encode(version))
    if log_level is not None:
        meta[META_LOG_LEVEL] = Raw(frame.encode(log_level))
    if client_capabilities is not None:
        meta[META_CLIENT_CAPABILITIES] = client_capabilities
    elif META_CLIENT_CAPABILITIES not in meta:
        meta[META_CLIENT_CAPABILITIES] = EMPTY_CAPS
    return {**params, "_meta": Raw(frame.encode_object(meta))}


def params_for_legacy(params: dict[str, Raw]) -> dict[str, Raw]:
    """Drop the modern envelope keys a legacy backend would not understand (from a new dict,
    as `params_for_modern` adds them)."""
    raw_meta = params.get("_meta")
    if raw_meta is None:
        return params
    meta = frame.decode_object(raw_meta)
    if MODERN_META_KEYS.isdisjoint(meta):
        return params
    for key in MODERN_META_KEYS:
        meta.pop(key, None)
    params = dict(params)
    if meta:
        params["_meta"] = Raw(frame.encode_object(meta))
    else:
        del params["_meta"]
    return params


def result_for_modern(result: bytes, obj: dict[str, Raw], method: str) -> bytes:
    """Add what a 2026-07-28 client requires to a result from a legacy backend (`result`,
    already decoded as `obj`, which may be changed)."""
    needs_cache = method in methods.CACHEABLE
    if "resultType" in obj and (not needs_cache or "ttlMs" in obj):
        return result
    obj.setdefault("resultType", _COMPLETE)
    if needs_cache:
        obj.setdefault("ttlMs", Raw(b"0"))
        obj.setdefault("cacheScope", Raw(b'"private"'))
    return frame.encode_object(obj)


def result_for_legacy(result: bytes) -> bytes:
    """Strip modern-only fields so a legacy client sees a result of its own era."""
    return strip_modern(result, frame.decode_object(result))


def strip_modern(result: bytes, obj: dict[str, Raw]) -> bytes:
    """`result` (already decoded as `obj`, which may be changed) without modern-only fields."""
    if not _MODERN_RESULT_KEYS.intersection(obj):
        return result
    for key in _MODERN_RESULT_KEYS:
        obj.pop(key, None)
    return frame.encode_object(obj)


def untagged(params: bytes | None) -> bytes | None:
    """A notification's params without the upstream hop's listen-stream tag."""
    if params is None:
        return params
    fields = frame.decode_object(params)
    meta = frame.decode_object(fields["_meta"]) if "_meta" in fields else {}
    if META_SUBSCRIPTION_ID not in meta:
        return params
    meta.pop(META_SUBSCRIPTION_ID, None)
    if meta:
        fields["_meta"] = Raw(frame.encode_object(meta))
    else:
        fields.pop("_meta", None)
    return frame.encode_object(fields)
