"""Strict JSON acceptance: what is refused, and that the fast pass never accepts what the exact
reading would refuse."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.wire import strict
from switchyard.wire.strict import INVALID, PARSE, JsonLimits, Refused

LIMITS = JsonLimits(max_depth=8, max_string_bytes=64, max_array_items=6, max_object_keys=5)


def verdict(body: bytes, limits: JsonLimits = LIMITS) -> int | None:
    try:
        strict.check(body, limits)
    except Refused as refused:
        return refused.code
    return None


def reference(body: bytes, limits: JsonLimits) -> int | None:
    """The rules, read slowly and plainly with the standard library."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return PARSE

    class Duplicate(Exception):
        pass

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise Duplicate
        return {"__object__": items}

    def constant(name: str) -> Any:
        raise Duplicate

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except Duplicate:
        return PARSE
    except RecursionError:
        return INVALID
    except ValueError:
        return PARSE

    def breach(item: Any, depth: int) -> bool:
        if isinstance(item, str):
            return len(item.encode("utf-8", "surrogatepass")) > limits.max_string_bytes
        if isinstance(item, dict):
            entries = item["__object__"]
            if len(entries) > limits.max_object_keys or depth >= limits.max_depth:
                return True
            children = [c for pair in entries for c in pair]
        elif isinstance(item, list):
            if len(item) > limits.max_array_items or depth >= limits.max_depth:
                return True
            children = item
        else:
            return False
        return any(breach(child, depth + 1) for child in children)

    def lone_surrogate(item: Any) -> bool:
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
            return False
        if isinstance(item, dict):
            return any(lone_surrogate(c) for pair in item["__object__"] for c in pair)
        if isinstance(item, list):
            return any(lone_surrogate(c) for c in item)
        return False

    # Parse errors (repeated keys included) first, then limits, then lone surrogates.
    if breach(value, 1):
        return INVALID
    return PARSE if lone_surrogate(value) else None


KEYS = st.sampled_from(["a", "b", "\\u0061", "a{", "a[", "k:", "\\ud800", "\\ud83d\\ude00"])
SCALARS = st.sampled_from(
    ["1", "-0.5e3", "true", "null", '"x"', '"a"', '"{:}"', "NaN", "1e400", '"\\udc00"']
)


def _object(members: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f'"{k}" : {v}' for k, v in members) + "}"


DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=7).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(KEYS, inner), max_size=7).map(_object)
    ),
    max_leaves=40,
)


@settings(max_examples=600, deadline=None)
@given(doc=DOCUMENTS, noise=st.sampled_from([b"", b"\xff", b":", b"}", b" ", b'"']))
def test_fast_and_exact_readings_agree_with_the_plain_rules(doc: str, noise: bytes) -> None:
    body = doc.encode()
    assert verdict(body) == reference(body, LIMITS)
    spoiled = body[: len(body) // 2] + noise + body[len(body) // 2 :]
    assert verdict(spoiled) == reference(spoiled, LIMITS)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"a":1,"a":2}', PARSE),
        (b'{"a":1,"\\u0061":2}', PARSE),
        (b'{"x":{"k":1,"k":1}}', PARSE),
        (b'{"x":[{"k":1},{"k":1}]}', None),  # the same key in two objects is fine
        (b'{"x":["k",1,"k",1]}', None),  # an array that looks like a flattened object
        (b'{"x":"{\\"k\\":1,\\"k\\":1}"}', None),  # a duplicate inside a string is text
        (b'["a":1]', PARSE),
        (b'{"a",1}', PARSE),
        (b'{"x":NaN}', PARSE),
        (b'{"x":-Infinity}', PARSE),
        (b'{"x":"\xc3"}', PARSE),
        (b'{"x":"\\udc00"}', PARSE),
        (b'{"x":"\\ud83d\\ude00"}', None),
        (b'{"x":1e400}', None),
        (b"[" * 8 + b"]" * 8, INVALID),
        (b"[" * 7 + b"]" * 7, None),
        (b"[" * 5000 + b"]" * 5000, INVALID),
        (b"[1,2,3,4,5,6,7]", INVALID),
        (b'{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}', INVALID),
        (b'{"x":"' + b"y" * 65 + b'"}', INVALID),
        (b'{"' + b"y" * 65 + b'":1}', INVALID),
        (b' {"a" :\n1 } ', None),
        (b"{} x", PARSE),
        (b"", PARSE),
    ],
)
def test_verdicts(body: bytes, code: int | None) -> None:
    assert verdict(body) == code


def test_duplicate_key_is_named() -> None:
    with pytest.raises(Refused) as refused:
        strict.check(b'{"x":{"k":1,"k":2}}', JsonLimits())
    assert refused.value.message == "Parse error: duplicate key 'k'"


TYPICAL = [
    {
        "jsonrpc": "2.0",
        "id": 17,
        "method": "tools/call",
        "params": {
            "name": "backend_tool",
            "arguments": {f"key_{i:02d}": f"value {i}" for i in range(60)},
            "_meta": {"progressToken": "tok-1"},
        },
    },
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {}},
    },
    {
        "jsonrpc": "2.0",
        "id": "r-1",
        "result": {
            "content": [{"type": "text", "text": "a:{b}"}, {"type": "text", "text": "c"}],
            "isError": False,
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
]


@pytest.mark.parametrize("message", TYPICAL)
def test_typical_messages_are_decided_by_the_fast_pass_alone(
    message: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(body: bytes, limits: JsonLimits) -> None:
        raise AssertionError("the exact pass ran")

    monkeypatch.setattr(strict, "_exact", slow)
    strict.check(json.dumps(message).encode(), JsonLimits())
    strict.check(json.dumps(message, indent=2, ensure_ascii=False).encode(), JsonLimits())


def test_a_refusal_keeps_nothing_of_the_body_alive() -> None:
    big = b'{"a":[1,2,3],"text":"' + b"z" * (2 * 1024 * 1024) + b'"}'
    tracemalloc.start()
    try:
        with pytest.raises(Refused) as refused:
            strict.check(big, JsonLimits())
        assert refused.value.code == INVALID
        del refused
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 256 * 1024
