"""Strict acceptance of a client's JSON: what JSON-RPC framing alone lets through.

A message is refused if it is not UTF-8, repeats a key in an object (two parsers could read it
two ways: the one that routes and the one that serves), uses NaN or Infinity, or exceeds the
nesting, string, array or object limits. Runs once per inbound message, before routing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

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


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise Refused(PARSE, f"Parse error: duplicate key {duplicate!r}")
    return obj


def _constant(name: str) -> Any:
    raise Refused(PARSE, f"Parse error: {name} is not JSON")


def check(body: bytes, limits: JsonLimits) -> None:
    """Raise `Refused` with the JSON-RPC code and message for a body Switchyard won't accept."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(PARSE, "Parse error: invalid UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except Refused:
        raise
    except RecursionError:
        raise Refused(INVALID, f"Invalid Request: nesting deeper than {limits.max_depth}") from None
    except ValueError:
        raise Refused(PARSE, "Parse error") from None
    # Byte counts bound every structural measure from above: most bodies cannot reach any limit,
    # and skip the walk.
    openers = body.count(b"{") + body.count(b"[")
    commas = body.count(b",")
    if (
        openers >= limits.max_depth
        or commas >= min(limits.max_array_items, limits.max_object_keys)
        or len(body) > limits.max_string_bytes
    ):
        _walk(value, limits)
    if "\\ud" in text or "\\uD" in text:
        _reject_lone_surrogates(value)


def _reject_lone_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise Refused(PARSE, "Parse error: a lone surrogate in a string") from None
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _walk(value: Any, limits: JsonLimits) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if (
                len(item) > limits.max_string_bytes // 4
                and len(item.encode()) > limits.max_string_bytes
            ):
                raise Refused(
                    INVALID, f"Invalid Request: a string over {limits.max_string_bytes} bytes"
                )
            continue
        if isinstance(item, dict):
            if len(item) > limits.max_object_keys:
                raise Refused(
                    INVALID, f"Invalid Request: an object over {limits.max_object_keys} keys"
                )
            children: Any = item.values()
            stack.extend((k, depth) for k in item)
        elif isinstance(item, list):
            if len(item) > limits.max_array_items:
                raise Refused(
                    INVALID, f"Invalid Request: an array over {limits.max_array_items} items"
                )
            children = item
        else:
            continue
        if depth >= limits.max_depth:
            raise Refused(INVALID, f"Invalid Request: nesting deeper than {limits.max_depth}")
        stack.extend((child, depth + 1) for child in children)
