"""Strict acceptance of a client's JSON: what JSON-RPC framing alone lets through.

A message is refused if it is not UTF-8, repeats a key in an object (two parsers could read it
two ways: the one that routes and the one that serves), uses NaN or Infinity, or exceeds the
nesting, string, array or object limits. Runs once per inbound message, before routing: a fast
pass accepts the bodies it can prove acceptable, and an exact one decides the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import msgspec

PARSE: Final = -32700
INVALID: Final = -32600


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_depth: int = 64
    max_string_bytes: int = 1024 * 1024
    max_array_items: int = 10_000
    max_object_keys: int = 10_000


class Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _constant(name: str) -> Any:
    raise Refused(PARSE, f"Parse error: {name} is not JSON")


# Objects decode to tuples of (key, value) pairs, so a repeated key survives to be seen; the
# hook is a C type, not a Python call per object.
_decoder: Final = json.JSONDecoder(object_pairs_hook=tuple, parse_constant=_constant)
# Validates a whole document (syntax, escapes, surrogate pairs) without building it.
_validator: Final = msgspec.json.Decoder(msgspec.Raw)
_any: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()
# Objects written as arrays, keys and values alternating. Braces and colons inside strings change
# too, but stay inside their strings, and keep every string's length once decoded and encoded.
_OBJECTS_AS_ARRAYS: Final = bytes.maketrans(b"{}:", b"[],")


def check(body: bytes, limits: JsonLimits) -> None:
    """Raise `Refused` with the JSON-RPC code and message for a body Switchyard won't accept.

    A fast pass (msgspec) accepts what it can prove acceptable; anything else, and every refusal
    and its message, is decided by the exact pass."""
    if not _plainly_acceptable(body, limits):
        _exact(body, limits)


def _plainly_acceptable(body: bytes, limits: JsonLimits) -> bool:
    """True only if the body is valid UTF-8 JSON without a repeated key or a breached limit;
    False when unsure.

    Byte counts bound every structural measure from above (nesting by brackets, items and keys
    by commas, a string by the body), so most bodies cannot breach a limit. A repeated key is
    what a dict decode drops: decoded as dicts, the body encodes shorter than decoded with every
    object read as an array of alternating keys and values, by at least `"k",v,` per repeat;
    without one, both encode to the same length, byte for byte but `{}:` for `[],`."""
    size = len(body)
    if size > limits.max_string_bytes:
        return False
    arrays = body.translate(_OBJECTS_AS_ARRAYS)
    widest = min(limits.max_array_items, limits.max_object_keys)
    if (size >= limits.max_depth and arrays.count(b"[") >= limits.max_depth) or (
        size >= widest and body.count(b",") >= widest
    ):
        return False
    try:
        # Decoding every string also checks its UTF-8 and its surrogate pairs.
        as_dicts = _any.decode(body)
        as_arrays = _any.decode(arrays)
        return len(_encoder.encode(as_dicts)) == len(_encoder.encode(as_arrays))
    except (ValueError, RecursionError):  # msgspec's errors, and UnicodeDecodeError, are these
        return False


def _exact(body: bytes, limits: JsonLimits) -> None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(PARSE, "Parse error: invalid UTF-8") from None
    try:
        value, end = _decoder.raw_decode(text, _skip_space(text, 0))
    except Refused:
        raise
    except RecursionError:
        raise Refused(INVALID, f"Invalid Request: nesting deeper than {limits.max_depth}") from None
    except ValueError:
        raise Refused(PARSE, "Parse error") from None
    if _skip_space(text, end) != len(text):
        raise Refused(PARSE, "Parse error")
    if type(value) is tuple or type(value) is list:
        _walk(value, limits, strings=len(body) > limits.max_string_bytes)
    if b"\\ud" in body or b"\\uD" in body:
        try:
            _validator.decode(body)
        except msgspec.DecodeError:
            raise Refused(PARSE, "Parse error: a lone surrogate in a string") from None


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\n\r":
        at += 1
    return at


def _walk(value: tuple[Any, ...] | list[Any], limits: JsonLimits, *, strings: bool) -> None:
    """One pass over every object and array. A repeated key anywhere is a parse error and wins
    over any breached limit (as if found while parsing); strings are measured only when the body
    is large enough to hold one over the limit."""
    max_depth, max_keys, max_items = (
        limits.max_depth,
        limits.max_object_keys,
        limits.max_array_items,
    )
    # The breach as (code, message): an exception kept in a local would, through its traceback,
    # keep this frame and the whole parsed body alive until the next garbage collection.
    breach: tuple[int, str] | None = None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if type(item) is tuple:
            if len(dict(item)) != len(item):
                raise Refused(PARSE, f"Parse error: duplicate key {_duplicate(item)!r}")
            if breach is None and len(item) > max_keys:
                breach = (INVALID, f"Invalid Request: an object over {max_keys} keys")
            children: Any = [child for _, child in item]
            if strings and breach is None:
                breach = _long_string([key for key, _ in item], limits)
        else:
            if breach is None and len(item) > max_items:
                breach = (INVALID, f"Invalid Request: an array over {max_items} items")
            children = item
        if breach is None and depth >= max_depth:
            breach = (INVALID, f"Invalid Request: nesting deeper than {max_depth}")
        if strings and breach is None:
            breach = _long_string(children, limits)
        stack.extend(
            (child, depth + 1) for child in children if type(child) is tuple or type(child) is list
        )
    if breach is not None:
        raise Refused(*breach)


def _duplicate(pairs: tuple[tuple[str, Any], ...]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no duplicate")


def _long_string(items: Any, limits: JsonLimits) -> tuple[int, str] | None:
    limit = limits.max_string_bytes
    for item in items:
        if (
            type(item) is str
            and len(item) > limit // 4
            and len(item.encode("utf-8", "surrogatepass")) > limit
        ):
            return (INVALID, f"Invalid Request: a string over {limit} bytes")
    return None
