from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.wire import frame
from switchyard.wire.frame import UNSET, Raw, Reply


@pytest.fixture(autouse=True, scope="module", params=["msgspec", "scanner"])
def reader(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs twice: with frames read by msgspec alone, and with the native
    scanner reading every frame from the first byte (not only those of `NATIVE_FROM` bytes
    and more), msgspec taking what the scanner does not read plainly. Module-scoped, set by
    hand: hypothesis refuses function-scoped fixtures."""
    saved = (frame._native_members, frame.NATIVE_FROM)
    if request.param == "msgspec":
        frame._native_members = None
    else:
        assert frame._native_members is not None, "the native scanner (_members.c) is not built"
        setattr(frame, "NATIVE_FROM", 0)  # noqa: B010 - a Final, changed for this module only
    yield request.param
    frame._native_members = saved[0]
    setattr(frame, "NATIVE_FROM", saved[1])  # noqa: B010


def test_peek_request() -> None:
    env = frame.peek(b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}')
    assert env.is_request
    assert not env.is_notification
    assert not env.is_response
    assert env.id == 7
    assert env.method == "tools/call"
    assert bytes(env.params) == b'{"name":"x"}'


def test_peek_notification() -> None:
    env = frame.peek(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert env.is_notification
    assert not env.is_request
    assert not env.is_response
    assert env.id is UNSET
    assert env.params is UNSET


def test_peek_result_response() -> None:
    env = frame.peek(b'{"jsonrpc":"2.0","id":"abc","result":{"tools":[]}}')
    assert env.is_response
    assert not env.is_request
    assert not env.is_notification
    assert env.id == "abc"
    assert bytes(env.result) == b'{"tools":[]}'
    assert env.error is UNSET


def test_peek_error_response() -> None:
    env = frame.peek(b'{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"nope"}}')
    assert env.is_response
    err = frame.decode_error(env.error)
    assert (err.code, err.message) == (-32601, "nope")


def test_peek_keeps_payload_bytes_verbatim() -> None:
    params = b'{ "b" : 1.50 , "a":"\\u00e9" }'
    env = frame.peek(b'{"jsonrpc":"2.0","id":1,"method":"m","params":' + params + b"}")
    assert bytes(env.params) == params


@pytest.mark.parametrize(
    ("raw_id", "expected"),
    [(b"0", 0), (b"-5", -5), (b"9007199254740993", 9007199254740993), (b'"x-1"', "x-1")],
)
def test_peek_id_kinds(raw_id: bytes, expected: int | str) -> None:
    env = frame.peek(b'{"jsonrpc":"2.0","id":' + raw_id + b',"method":"ping"}')
    assert env.id == expected
    assert type(env.id) is type(expected)


def test_peek_null_id() -> None:
    env = frame.peek(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"p"}}')
    assert env.id is None
    assert env.is_response


@pytest.mark.parametrize("raw_id", [b"1.5", b"1.0", b"true", b"false", b"[1]", b"{}"])
def test_peek_rejects_non_int_non_string_ids(raw_id: bytes) -> None:
    with pytest.raises(frame.ValidationError):
        frame.peek(b'{"jsonrpc":"2.0","id":' + raw_id + b',"method":"ping"}')


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b'{"jsonrpc":"2.0",}'])
def test_peek_rejects_invalid_json(data: bytes) -> None:
    with pytest.raises(frame.DecodeError):
        frame.peek(data)


def test_peek_rejects_non_object() -> None:
    with pytest.raises(frame.ValidationError):
        frame.peek(b"[1,2]")


def test_peek_ignores_unknown_top_level_fields() -> None:
    env = frame.peek(b'{"jsonrpc":"2.0","id":1,"method":"m","extra":{"deep":[1]}}')
    assert env.is_request


@pytest.mark.parametrize(
    ("request_id", "expected"),
    [(1, 1), (0, 0), ('a"b', 'a"b'), ("", ""), (None, None), ("\u00e9", "\u00e9")],
)
def test_response_bytes_result(request_id: int | str | None, expected: object) -> None:
    out = frame.response_bytes(frame.encode_id(request_id), Reply(result=b'{"ok":true}'))
    assert json.loads(out) == {"jsonrpc": "2.0", "id": expected, "result": {"ok": True}}


def test_response_bytes_empty_result_defaults_to_empty_object() -> None:
    out = frame.response_bytes(b"4", Reply())
    assert json.loads(out) == {"jsonrpc": "2.0", "id": 4, "result": {}}


def test_response_bytes_error() -> None:
    reply = frame.error_reply(-32602, "bad", {"why": "x"})
    out = frame.response_bytes(b'"r1"', reply)
    assert json.loads(out) == {
        "jsonrpc": "2.0",
        "id": "r1",
        "error": {"code": -32602, "message": "bad", "data": {"why": "x"}},
    }


def test_response_bytes_round_trips_through_peek() -> None:
    out = frame.response_bytes(frame.encode_id(12), Reply(result=b"[1,2]"))
    env = frame.peek(out)
    assert env.is_response
    assert env.id == 12
    assert bytes(env.result) == b"[1,2]"


def test_request_bytes_with_and_without_params() -> None:
    with_params = frame.request_bytes(b"5", "tools/call", b'{"name":"t","arguments":{}}')
    assert json.loads(with_params) == {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "tools/call",
        "params": {"name": "t", "arguments": {}},
    }
    without = frame.request_bytes(b'"s"', "ping", None)
    assert json.loads(without) == {"jsonrpc": "2.0", "id": "s", "method": "ping"}


def test_request_bytes_escapes_method() -> None:
    out = frame.request_bytes(b"1", 'we"ird\n', None)
    assert json.loads(out)["method"] == 'we"ird\n'


def test_notification_bytes() -> None:
    assert json.loads(frame.notification_bytes("notifications/initialized", None)) == {
        "jsonrpc": "2.0",
        "method": "notifications/initialized",
    }
    out = frame.notification_bytes("notifications/progress", b'{"progress":1}')
    assert json.loads(out) == {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progress": 1},
    }
    assert frame.peek(out).is_notification


def test_encode_object_keeps_raw_values_byte_for_byte() -> None:
    raw_a = b'{ "z" : 1.50000, "a" : [ 1 ,2 ] }'
    raw_b = b'"\\u00e9\\/"'
    raw_c = b"1e400"
    out = frame.encode_object({"a": Raw(raw_a), "b": Raw(raw_b), "c": Raw(raw_c), "d": 1})
    assert out == b'{"a":' + raw_a + b',"b":' + raw_b + b',"c":' + raw_c + b',"d":1}'


def test_decode_object_then_encode_object_is_identity_for_compact_json() -> None:
    original = b'{"name":"t","inputSchema":{"type":"object","x":1.0},"n":null}'
    assert frame.encode_object(frame.decode_object(original)) == original


def test_decode_object_is_one_level_deep() -> None:
    obj = frame.decode_object(b'{"a":{"b":[1, 2]},"c":"d"}')
    assert set(obj) == {"a", "c"}
    assert isinstance(obj["a"], msgspec.Raw)
    assert bytes(obj["a"]) == b'{"b":[1, 2]}'
    assert frame.decode_str(obj["c"]) == "d"


def test_encode_id() -> None:
    assert frame.encode_id(42) == b"42"
    assert frame.encode_id(-1) == b"-1"
    assert frame.encode_id("42") == b'"42"'
    assert frame.encode_id(None) == b"null"


def test_reply_helpers() -> None:
    ok = Reply(result=b"{}")
    assert not ok.is_error
    err = frame.error_reply(-31000, "down")
    assert err.is_error
    assert err.result is None
    assert json.loads(err.error) == {"code": -31000, "message": "down"}
    assert json.loads(frame.error_body(1, "m", data=[1])) == {
        "code": 1,
        "message": "m",
        "data": [1],
    }


def test_decode_error_keeps_data() -> None:
    err = frame.decode_error(b'{"code":-1,"message":"m","data":{"k":"v"}}')
    assert (err.code, err.message, err.data) == (-1, "m", {"k": "v"})


# -- line breaks never survive into spliced frames -----------------------------------------

_WS = st.text(alphabet=" \t\r\n", max_size=3)


@st.composite
def _spelled(draw: st.DrawFn, value: Any) -> str:
    """`value` as JSON with arbitrary whitespace between tokens and arbitrarily escaped string
    characters (keys included)."""
    if isinstance(value, dict):
        items = [
            draw(_WS) + draw(_spelled(k)) + draw(_WS) + ":" + draw(_WS) + draw(_spelled(v))
            for k, v in value.items()
        ]
        return "{" + ",".join(items) + draw(_WS) + "}"
    if isinstance(value, list):
        return "[" + ",".join(draw(_WS) + draw(_spelled(v)) for v in value) + draw(_WS) + "]"
    if isinstance(value, str):
        escape = draw(st.lists(st.booleans(), min_size=len(value), max_size=len(value)))
        body = "".join(
            f"\\u{ord(c):04x}" if e and ord(c) < 0x10000 else json.dumps(c)[1:-1]
            for c, e in zip(value, escape, strict=True)
        )
        return '"' + body + '"'
    return json.dumps(value)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, data=st.data())
def test_spliced_frames_never_carry_raw_line_breaks(value: Any, data: st.DataObject) -> None:
    spelled = data.draw(_spelled(value))
    ws = data.draw(_WS)
    response = f'{ws}{{"jsonrpc":"2.0",{ws}"id":{ws}7,"result":{ws}{spelled}{ws}}}{ws}'.encode()
    env = frame.peek(response)
    out = frame.response_bytes(frame.encode_id(env.id), Reply(result=bytes(env.result)))
    assert b"\n" not in out
    assert b"\r" not in out
    assert json.loads(out) == {"jsonrpc": "2.0", "id": 7, "result": value}

    error = {"code": -1, "message": "m", "data": value}
    failed = f'{{"jsonrpc":"2.0","id":7,{ws}"error":{data.draw(_spelled(error))}}}'.encode()
    env = frame.peek(failed)
    out = frame.response_bytes(b"7", Reply(error=bytes(env.error)))
    assert b"\n" not in out
    assert b"\r" not in out
    assert json.loads(out)["error"] == error

    note = f'{{"jsonrpc":"2.0",{ws}"method":"n","params":{ws}{spelled}}}\n'.encode()
    env = frame.peek(note)
    params = bytes(env.params)
    assert b"\n" not in params
    assert b"\r" not in params
    assert json.loads(frame.notification_bytes("n", params))["params"] == value
    # one level down, as forwarding code decodes params and results
    if isinstance(value, dict):
        for k, raw in frame.decode_object(env.params).items():
            assert b"\n" not in bytes(raw)
            assert frame.decode_any(raw) == value[k]


def test_pretty_printed_frame_cannot_smuggle_a_second_frame() -> None:
    forged = b'{"jsonrpc":"2.0","id":99,"result":{"content":[{"type":"text","text":"FORGED"}]}}'
    body = (
        b'{\n  "jsonrpc": "2.0",\n  "id": 2,\n  "result": {"content": [], "x": {"a":\n'
        + forged
        + b"\n}}}\n"
    )
    env = frame.peek(body)
    line = frame.response_bytes(frame.encode_id(env.id), Reply(result=bytes(env.result)))
    assert line.count(b"\n") == 0
    assert json.loads(line)["id"] == 2
    assert json.loads(line)["result"]["x"]["a"] == json.loads(forged)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"result":{"a":"x\ny"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"a":"x\ry"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"a\n":1}}',
    ],
)
def test_raw_line_breaks_inside_strings_stay_invalid(body: bytes) -> None:
    with pytest.raises(frame.DecodeError):
        frame.peek(body)


# Bytes no UTF-8 text may hold: a stray continuation byte, bytes never used, an overlong
# `/`, an encoded surrogate, a code point past U+10FFFF, a sequence cut short by the quote.
_NOT_UTF8 = [b"\x80", b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]


@pytest.mark.parametrize("bad", _NOT_UTF8)
@pytest.mark.parametrize(
    "template",
    [
        b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a@b"}]}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"k@":1}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"m","data":"@"}}',
        b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"@"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"q":"@"}}}',
    ],
)
def test_invalid_utf8_anywhere_is_refused_even_inside_raw_slices(
    template: bytes, bad: bytes
) -> None:
    # msgspec steps over a `Raw` slice without decoding its strings: their bytes are checked
    # by the frame's own decode, or a result could carry them to a client verbatim.
    body = template.replace(b"@", bad)
    with pytest.raises(frame.DecodeError, match="invalid UTF-8"):
        frame.peek(body)
    with pytest.raises(frame.DecodeError, match="invalid UTF-8"):
        frame.peek_reply(body, fields=True)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40), junk=st.binary(min_size=1, max_size=6))
def test_a_frame_is_taken_exactly_when_its_bytes_are_utf8(text: str, junk: bytes) -> None:
    inner = json.dumps(text).encode()[1:-1] + junk.replace(b'"', b"").replace(b"\\", b"")
    body = b'{"jsonrpc":"2.0","id":1,"result":{"t":"' + inner + b'"}}'
    try:
        expected = json.loads(body.decode())  # strict UTF-8, as a client reads it
    except (UnicodeDecodeError, json.JSONDecodeError):
        expected = None
    try:
        reply = frame.peek_reply(body)
    except frame.DecodeError:
        reply = None
    if expected is None:
        assert reply is None
    else:
        assert reply is not None and reply.result is not None
        assert json.loads(reply.result) == expected["result"]


@pytest.mark.parametrize("depth", [2_000, 1_000_000])
def test_nesting_past_the_recursion_limit_is_invalid_json_not_a_crash(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    body = b'{"jsonrpc":"2.0","id":1,"result":{"x":' + nested + b"}}"
    for read in (frame.peek, lambda b: frame.peek_reply(b, fields=True)):
        with pytest.raises(frame.DecodeError, match="nested too deeply"):
            read(body)
    with pytest.raises(frame.DecodeError, match="nested too deeply"):
        frame.decode_any(nested)
    shallow = b"[" * 100 + b"]" * 100  # what a reader may expect to meet, and reads
    assert frame.decode_any(frame.peek(body.replace(nested, shallow)).result) == {
        "x": json.loads(shallow)
    }


@pytest.mark.parametrize(
    "number", [b"1e400", b"-1e400", b"1" * 5000], ids=["1e400", "-1e400", "5000-digits"]
)
def test_a_number_past_what_msgspec_represents_is_a_decode_error(number: bytes) -> None:
    # Valid JSON, stepped over in a `Raw` slice: forwarded as sent, but a reader that decodes
    # it gets the one error it expects.
    body = b'{"jsonrpc":"2.0","id":1,"result":{"n":' + number + b"}}"
    result = frame.peek(body).result
    assert bytes(result) == b'{"n":' + number + b"}"
    with pytest.raises(frame.DecodeError, match="out of range"):
        frame.decode_any(result)


def test_compact_frames_are_sliced_verbatim() -> None:
    data = b'{"jsonrpc":"2.0","id":1,"result":{ "a" :\t1.50 }}\n'
    assert bytes(frame.peek(data).result) == b'{ "a" :\t1.50 }'


# -- tool_flagged: a tool result's `isError`, read from its tail when that proves it ----------


def _decoded_flag(result: bytes) -> bool:
    """The reference: the whole result decoded by the standard library (last key wins)."""
    try:
        value = json.loads(result)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("isError") is True


@pytest.mark.parametrize(
    "result",
    [
        b'{"content":[],"isError":true}',
        b'{"content":[],"isError":false}',
        b'{"content":[],"isError":true,"resultType":"complete","_meta":{"a":{"b":[1,2]}}}',
        b'{"content":[{"type":"text","text":"' + b"x" * 70_000 + b'"}],"isError":true}',
        b'{"isError":true}',
        b"{}",
        b'{"content":[]}',
        # nested, not at the top level
        b'{"content":[{"isError":true}]}',
        b'{"isError":false,"c":{"isError":true}}',
        b'{"a":{"isError":true},"b":1}',
        # a string value, or part of one
        b'{"a":"isError"}',
        b'{"a":"\\"isError\\":true"}',
        b'{"text":"say \\"isError\\": true","isError":false}',
        # a key that only ends with the name
        b'{"x\\"isError":true}',
        b'{"a":"x\\\\","isError":true}',
        # spelled with an escape, before and after the literal one
        b'{"is\\u0045rror":true}',
        b'{"isError":false,"is\\u0045rror":true}',
        b'{"is\\u0045rror":true,"isError":false}',
        # repeated: the last one counts
        b'{"isError":true,"x":1,"isError":false}',
        b'{"isError":false,"x":1,"isError":true}',
        # values that are no flag
        b'{"isError":"true"}',
        b'{"isError":1}',
        b'{"isError":null}',
        # whitespace anywhere JSON allows it
        b'{ "content" : [ ] ,\n  "isError" :\ttrue ,\r\n "_meta" : { } }',
        # not an object at all
        b'[{"isError":true}]',
        b'"isError"',
    ],
)
def test_tool_flagged_reads_what_a_full_decode_reads(result: bytes) -> None:
    assert frame.tool_flagged(result) is _decoded_flag(result)


_keys = st.sampled_from(["isError", "is\\u0045rror", 'x\\"isError', "content", "a", "_meta"])
_scalars = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-5, 5),
    st.sampled_from(['"isError"', '"\\"isError\\":true"', '"x"', '"\\\\"']),
)


def _values(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return _scalars.map(lambda v: v if isinstance(v, str) else json.dumps(v))
    inner = _values(depth - 1)
    objects = st.lists(st.tuples(_keys, inner), max_size=4).map(
        lambda members: "{" + ",".join(f'"{k}":{v}' for k, v in members) + "}"
    )
    arrays = st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
    return st.one_of(inner, objects, arrays)


@settings(max_examples=400, deadline=None)
@given(members=st.lists(st.tuples(_keys, _values(2)), max_size=6), pad=st.integers(0, 5000))
def test_tool_flagged_agrees_with_a_full_decode(members: list[tuple[str, str]], pad: int) -> None:
    padding = f'"pad":"{"y" * pad}"'
    body = "{" + ",".join([padding, *(f'"{k}":{v}' for k, v in members)]) + "}"
    result = body.encode()
    assert frame.tool_flagged(result) is _decoded_flag(result), body[-300:]


# -- one pass for a result read across eras ------------------------------------------------


def test_peek_reply_hands_over_the_decoded_result_once() -> None:
    result = b'{"content":[{"type":"text","text":"hi"}],"resultType":"complete"}'
    data = b'{"jsonrpc":"2.0","id":3,"result":' + result + b"}"
    reply = frame.peek_reply(data, fields=True)
    assert reply is not None and reply.error is None
    assert json.loads(reply.result or b"") == json.loads(data)["result"]
    members = reply.take_fields()
    assert set(members) == {"content", "resultType"}
    assert bytes(members["resultType"]) == b'"complete"'
    members.pop("resultType")  # the taker may change them ...
    again = reply.take_fields()  # ... and the next reader decodes the result afresh
    assert again is not members and "resultType" in again
    plain = frame.peek_reply(data)
    assert plain is not None and plain.result == result
    assert plain.take_fields() == frame.decode_object(plain.result or b"")


def test_a_replaced_result_is_decoded_not_taken_from_the_old_one() -> None:
    reply = frame.peek_reply(b'{"jsonrpc":"2.0","id":1,"result":{"a":1}}', fields=True)
    assert reply is not None
    reply.result = b'{"b":2}'
    assert set(reply.take_fields()) == {"b"}


@pytest.mark.parametrize(
    ("data", "result", "error"),
    [
        (b'{"jsonrpc":"2.0","id":1,"result":[1,2]}', b"[1,2]", None),  # no object: as sent
        (b'{"jsonrpc":"2.0","id":1,"result":null}', b"null", None),
        (
            b'{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}',
            None,
            b'{"code":-1,"message":"x"}',
        ),
        # Both: the error wins, as everywhere else.
        (
            b'{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":-1,"message":"x"}}',
            None,
            b'{"code":-1,"message":"x"}',
        ),
        (b'{"jsonrpc":"2.0","id":1}', b"{}", None),
    ],
)
def test_peek_reply_reads_every_response_as_peek_does(
    data: bytes, result: bytes | None, error: bytes | None
) -> None:
    for fields in (False, True):
        reply = frame.peek_reply(data, fields=fields)
        if data == b'{"jsonrpc":"2.0","id":1}':
            assert reply is None  # neither result nor error: no response
            continue
        assert reply is not None
        assert (reply.result, reply.error) == (result, error)


def test_peek_reply_is_none_for_requests_and_raises_for_garbage() -> None:
    request = b'{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}'
    assert frame.peek_reply(request, fields=True) is None
    assert frame.peek_reply(request) is None
    for bad in (b'{"jsonrpc":"2.0","id":1,"result":{"a":}}', b'{"jsonrpc":"2.0","id":1,"result":{'):
        for fields in (False, True):
            with pytest.raises(msgspec.DecodeError):
                frame.peek_reply(bad, fields=fields)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.text(max_size=6), _JSON, max_size=5), data=st.data())
def test_one_pass_reads_the_same_result_as_two(value: dict[str, Any], data: st.DataObject) -> None:
    spelled = data.draw(_spelled(value))
    body = f'{{"jsonrpc":"2.0",{data.draw(_WS)}"id":5,"result":{spelled}}}'.encode()
    one = frame.peek_reply(body, fields=True)
    two = frame.peek_reply(body)
    assert one is not None and two is not None and one.result is not None and two.result is not None
    assert b"\n" not in one.result and b"\r" not in one.result
    assert msgspec.json.decode(one.result) == msgspec.json.decode(two.result)
    assert {k: msgspec.json.decode(v) for k, v in one.take_fields().items()} == {
        k: msgspec.json.decode(v) for k, v in two.take_fields().items()
    }
