from __future__ import annotations

import json
from typing import Any

from switchyard.protocol import eras
from switchyard.protocol.versions import (
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
)
from switchyard.wire import frame
from switchyard.wire.frame import Raw

MODERN = "2026-07-28"


def pairs(data: bytes) -> list[tuple[str, Any]]:
    """Top-level key/value pairs in order, duplicates kept (json.loads would hide them)."""
    return json.loads(data, object_pairs_hook=lambda p: p)  # type: ignore[no-any-return]


def keys(data: bytes) -> list[str]:
    return [k for k, _ in pairs(data)]


def params(raw: bytes) -> dict[str, Raw]:
    return frame.decode_object(raw)


# -- params_for_modern ---------------------------------------------------------------------


def test_modern_params_without_meta_get_version_and_empty_capabilities() -> None:
    out = frame.encode_object(eras.params_for_modern(params(b'{"name":"t"}'), MODERN, None))
    assert json.loads(out) == {
        "name": "t",
        "_meta": {META_PROTOCOL_VERSION: MODERN, META_CLIENT_CAPABILITIES: {}},
    }


def test_modern_params_use_the_given_client_capabilities_verbatim() -> None:
    caps = Raw(b'{"sampling":{ },"roots":{"listChanged":true}}')
    out = eras.params_for_modern(params(b'{"name":"t"}'), MODERN, caps)
    meta = frame.decode_object(out["_meta"])
    assert bytes(meta[META_CLIENT_CAPABILITIES]) == bytes(caps)
    assert frame.decode_str(meta[META_PROTOCOL_VERSION]) == MODERN


def test_modern_params_keep_other_meta_keys_and_params_byte_identical() -> None:
    raw = (
        b'{"name":"t","arguments":{ "q" : "x", "n": 1.50 },'
        b'"_meta":{"progressToken":"tok-1","com.example/trace":{"id": 7}},"z":[1, 2]}'
    )
    before = params(raw)
    out = eras.params_for_modern(params(raw), MODERN, None)
    assert list(out) == list(before)
    for key in ("name", "arguments", "z"):
        assert bytes(out[key]) == bytes(before[key])
    meta = frame.decode_object(out["_meta"])
    assert bytes(meta["progressToken"]) == b'"tok-1"'
    assert bytes(meta["com.example/trace"]) == b'{"id": 7}'
    assert json.loads(bytes(meta[META_PROTOCOL_VERSION])) == MODERN
    assert json.loads(bytes(meta[META_CLIENT_CAPABILITIES])) == {}


def test_modern_params_overwrite_a_stale_version_without_duplicating_it() -> None:
    raw = (
        b'{"_meta":{"' + META_PROTOCOL_VERSION.encode() + b'":"2025-06-18",'
        b'"' + META_CLIENT_CAPABILITIES.encode() + b'":{"elicitation":{}}}}'
    )
    out = frame.encode_object(eras.params_for_modern(params(raw), MODERN, None))
    meta_pairs = dict(pairs(out))["_meta"]
    assert [k for k, _ in meta_pairs] == [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
    meta = json.loads(out)["_meta"]
    assert meta[META_PROTOCOL_VERSION] == MODERN
    # capabilities already present are kept when the caller has none to add
    assert meta[META_CLIENT_CAPABILITIES] == {"elicitation": {}}


def test_the_callers_params_stay_as_the_client_sent_them() -> None:
    # The access record reads the client's trace context from them after forwarding.
    for raw in (b'{"name":"t"}', b'{"name":"t","_meta":{"traceparent":"00-ab"}}'):
        mine = params(raw)
        out = eras.params_for_modern(mine, MODERN, None, "debug")
        assert frame.encode_object(mine) == raw and out is not mine and "_meta" in out
        legacy = params(frame.encode_object(out))
        back = eras.params_for_legacy(legacy)
        assert frame.encode_object(legacy) == frame.encode_object(out) and back is not legacy


# -- params_for_legacy ---------------------------------------------------------------------


def test_legacy_params_drop_only_the_modern_envelope_keys() -> None:
    meta = {
        META_PROTOCOL_VERSION: MODERN,
        META_CLIENT_CAPABILITIES: {"sampling": {}},
        META_CLIENT_INFO: {"name": "c", "version": "1"},
        META_LOG_LEVEL: "debug",
        "progressToken": 5,
        "com.example/x": "y",
    }
    raw = b'{"name":"t","arguments":{ "a" : 1 },"_meta":' + json.dumps(meta).encode() + b"}"
    out = eras.params_for_legacy(params(raw))
    assert list(out) == ["name", "arguments", "_meta"]
    assert bytes(out["arguments"]) == b'{ "a" : 1 }'
    assert json.loads(bytes(out["_meta"])) == {"progressToken": 5, "com.example/x": "y"}


def test_legacy_params_remove_meta_left_empty() -> None:
    meta = {META_PROTOCOL_VERSION: MODERN, META_CLIENT_CAPABILITIES: {}}
    raw = b'{"name":"t","_meta":' + json.dumps(meta).encode() + b"}"
    out = eras.params_for_legacy(params(raw))
    assert frame.encode_object(out) == b'{"name":"t"}'


def test_legacy_params_without_modern_keys_are_untouched() -> None:
    raw = b'{"name":"t","_meta":{ "progressToken" : 1 }}'
    out = eras.params_for_legacy(params(raw))
    assert frame.encode_object(out) == raw
    raw = b'{"name":"t"}'
    assert frame.encode_object(eras.params_for_legacy(params(raw))) == raw


# -- result_for_modern ---------------------------------------------------------------------


def test_modern_result_for_a_tool_call_gets_result_type_only() -> None:
    raw = b'{"content":[{"type":"text","text":"hi"}],"isError":false}'
    out = eras.result_for_modern(raw, frame.decode_object(raw), "tools/call")
    assert pairs(out) == [
        ("content", [[("type", "text"), ("text", "hi")]]),
        ("isError", False),
        ("resultType", "complete"),
    ]


def test_modern_result_for_a_cacheable_method_gets_cache_hints() -> None:
    raw = b'{"contents":[{"uri":"file:///x","text":"t"}]}'
    out = eras.result_for_modern(raw, frame.decode_object(raw), "resources/read")
    assert json.loads(out) == {
        "contents": [{"uri": "file:///x", "text": "t"}],
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
    }
    assert out.startswith(b'{"contents":[{"uri":"file:///x","text":"t"}],')


def test_modern_result_already_complete_is_returned_unchanged() -> None:
    raw = b'{"content":[],"resultType":"incomplete"}'
    assert eras.result_for_modern(raw, frame.decode_object(raw), "tools/call") == raw
    raw = b'{"contents":[],"resultType":"complete","ttlMs":500,"cacheScope":"public"}'
    assert eras.result_for_modern(raw, frame.decode_object(raw), "resources/read") == raw


def test_modern_result_keeps_present_keys_and_adds_missing_ones_once() -> None:
    raw = b'{"contents":[],"resultType":"complete","cacheScope":"public"}'
    out = eras.result_for_modern(raw, frame.decode_object(raw), "resources/read")
    assert sorted(keys(out)) == ["cacheScope", "contents", "resultType", "ttlMs"]
    assert json.loads(out) == {
        "contents": [],
        "resultType": "complete",
        "cacheScope": "public",
        "ttlMs": 0,
    }


def test_modern_result_with_result_type_only_nested_still_gets_it_on_top() -> None:
    raw = (
        b'{"content":[{"type":"text","text":"{\\"resultType\\":1}"}],"structured":{"resultType":2}}'
    )
    out = eras.result_for_modern(raw, frame.decode_object(raw), "tools/call")
    assert keys(out) == ["content", "structured", "resultType"]
    assert json.loads(out)["resultType"] == "complete"
    assert json.loads(out)["structured"] == {"resultType": 2}


# -- result_for_legacy ---------------------------------------------------------------------


def test_legacy_result_strips_modern_fields() -> None:
    raw = (
        b'{"contents":[{"uri":"u","text":"t"}],'
        b'"resultType":"complete","ttlMs":0,"cacheScope":"private"}'
    )
    out = eras.result_for_legacy(raw)
    assert out == b'{"contents":[{"uri":"u","text":"t"}]}'


def test_legacy_result_strips_result_type_alone() -> None:
    out = eras.result_for_legacy(b'{"content":[],"resultType":"complete","isError":true}')
    assert out == b'{"content":[],"isError":true}'


def test_legacy_result_without_modern_fields_is_unchanged() -> None:
    raw = b'{"content":[{"type":"text","text":"x"}], "n" : 1.50}'
    assert eras.result_for_legacy(raw) is raw


def test_legacy_result_keeps_nested_fields_with_those_names() -> None:
    raw = b'{"structured":{"resultType":"x","ttlMs":3}}'
    assert eras.result_for_legacy(raw) == raw


def test_round_trip_modern_then_legacy_restores_the_original() -> None:
    raw = b'{"contents":[{"uri":"u","blob":"AAAA"}],"_meta":{"k":1}}'
    assert (
        eras.result_for_legacy(
            eras.result_for_modern(raw, frame.decode_object(raw), "resources/read")
        )
        == raw
    )
