"""The native scanner of a JSON object's top level (`switchyard/wire/_members.c`).

It only has to be sound where it answers: whatever it reads, the general way (msgspec, then
Python's strict UTF-8 codec) reads the same, member for member, byte for byte. Where it answers
None, the general way decides. So the property fuzzed here is one-sided, and a second one keeps
it from passing by answering None to everything: a frame as an SDK writes it is read."""

from __future__ import annotations

import itertools
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.wire import frame

members = frame._native_members


def test_the_scanner_is_built_here() -> None:
    # The build compiles it wherever a C compiler is (hatch_build.py); the tests need it, or
    # everything below would test msgspec against itself.
    assert members is not None, "switchyard.wire._members is not built: is there a C compiler?"


def _scan(data: bytes) -> dict[str, tuple[int, int]] | None:
    assert members is not None
    return members(data)


def _general(data: bytes) -> dict[str, bytes] | None:
    """What the general way reads at the top level: msgspec's members (the last of a repeated
    key), given that the whole text is strict UTF-8 and valid JSON to the standard library."""
    try:
        value = json.loads(data.decode(), parse_constant=_no_constant)
        found = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    assert isinstance(value, dict)
    return {key: bytes(raw) for key, raw in found.items()}


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _unique_top_keys(data: bytes) -> bool:
    pairs: list[list[str]] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs.append([k for k, _ in items])
        return dict(items)

    json.loads(data, object_pairs_hook=hook)
    top = pairs[-1]  # the outermost object closes last
    return len(top) == len(set(top))


def _assert_sound(data: bytes) -> dict[str, tuple[int, int]] | None:
    spans = _scan(data)
    if spans is not None:
        general = _general(data)
        assert general is not None, data[:300]
        assert {k: data[s:e] for k, (s, e) in spans.items()} == general
        assert _unique_top_keys(data)
        end = max((e for _, e in spans.values()), default=0)
        assert b"\n" not in data[:end] and b"\r" not in data[:end]
    for key in {"result", *(spans or ())}:
        _assert_sound_within(data, key, spans)
    return spans


def _assert_sound_within(data: bytes, key: str, spans: dict[str, tuple[int, int]] | None) -> None:
    """`members(data, key)`: the same top level as `members(data)`, and where it reads the
    object `key` holds, what the general way reads there, with unique keys."""
    assert members is not None
    found = members(data, key)
    if found is None:
        assert spans is None
        return
    top, inner = found
    assert top == spans
    if inner is not None:
        start, end = top[key]
        value = data[start:end]
        general = _general(value)
        assert general is not None and value.startswith(b"{"), value[:300]
        assert {k: value[s:e] for k, (s, e) in inner.items()} == general
        assert _unique_top_keys(value)


# -- what SDKs write: read, and read as the general way reads it --------------------------------

_TEXT = st.text(max_size=24) | st.integers(0, 80).map(lambda n: "x" * n + "é" + "y" * (n % 17))
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=16,
)
_PLAIN_KEY = st.text(
    st.characters(min_codepoint=0x20, exclude_characters='"\\', exclude_categories=["Cs"]),
    max_size=10,
)


@settings(max_examples=600, deadline=None)
@given(value=st.dictionaries(_PLAIN_KEY, _JSON, max_size=6))
def test_compact_json_is_read_member_for_member(value: dict[str, Any]) -> None:
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for data in (msgspec.json.encode(value), compact.encode()):
        spans = _assert_sound(data)
        assert spans is not None, data[:300]
        assert set(spans) == set(value)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_PLAIN_KEY, _JSON, max_size=6), style=st.integers(0, 3))
def test_other_spellings_are_read_soundly(value: dict[str, Any], style: int) -> None:
    data = [
        json.dumps(value).encode(),  # spaces after separators, \uXXXX (surrogate pairs too)
        json.dumps(value, indent=2).encode(),  # line breaks between tokens: not read plainly
        json.dumps(value, ensure_ascii=False, separators=(" ,\t", "\t: ")).encode(),
        b" \t" + msgspec.json.encode(value) + b"\r\n",
    ][style]
    spans = _assert_sound(data)
    # the standard library escapes every key character past "~": an escaped key is declined
    printable = all(" " <= c <= "~" for key in value for c in key)
    if style in (2, 3) or (style == 0 and printable):
        assert spans is not None, data[:300]
    if style == 1 and value:
        assert spans is None


@settings(max_examples=300, deadline=None)
@given(
    value=st.dictionaries(_PLAIN_KEY, _JSON, max_size=6),
    ws=st.sampled_from(["", " ", "\t", " \t "]),
)
def test_a_result_read_one_level_deep_as_the_general_way_reads_it(
    value: dict[str, Any], ws: str
) -> None:
    # An era translation reads the result's top level in the same pass as the frame's.
    spelled = json.dumps(value, ensure_ascii=False, separators=(f"{ws},{ws}", f"{ws}:{ws}"))
    data = f'{{"jsonrpc":"2.0",{ws}"id":7,"result":{ws}{spelled}{ws}}}'.encode()
    assert members is not None
    scanned = frame._scanned_reply(members, data, fields=True)
    general = frame._decode_frame(frame._object_response_decoder, data)
    assert scanned is not None and scanned.result is not None
    assert isinstance(general.result, dict)
    assert {k: bytes(v) for k, v in scanned.take_fields().items()} == {
        k: bytes(v) for k, v in general.result.items()
    }
    assert json.loads(scanned.result) == value


# How `_scanned_reply` answers, without and with `fields`: a reply, "none" (no response) or
# "general" (left to the general way).
@pytest.mark.parametrize(
    ("data", "plain", "with_fields"),
    [
        (b'{"jsonrpc":"2.0","id":1,"result":[1,2]}', "reply", "general"),  # no object
        (b'{"jsonrpc":"2.0","id":1,"result":"x"}', "reply", "general"),
        (b'{"jsonrpc":"2.0","id":1,"result":{"a":1,"a":2}}', "reply", "general"),  # repeated
        (b'{"jsonrpc":"2.0","id":1,"result":{"\\u0061":1}}', "reply", "general"),  # escaped
        (b'{"jsonrpc":"2.0","id":1.5,"result":{}}', "general", "general"),  # an id refused
        (b'{"jsonrpc":2,"id":1,"result":{}}', "general", "general"),
        (b'{"jsonrpc":"2.0","id":1,"result":{"a":1},"result":{}}', "general", "general"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","result":{}}', "none", "none"),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"},"result":{}}', *["reply"] * 2),
        (b'{"jsonrpc":"2.0","id":1}', "none", "none"),
        (b'{"jsonrpc":"2.0","id":1,"result":{"a":[1]}}', "reply", "reply"),
    ],
)
def test_a_reply_is_read_as_the_general_way_reads_it_or_left_to_it(
    data: bytes, plain: str, with_fields: str
) -> None:
    assert members is not None
    for fields, expected in ((False, plain), (True, with_fields)):
        scanned = frame._scanned_reply(members, data, fields=fields)
        if expected == "general":
            assert scanned is None
            continue
        general = frame.peek_reply(data, fields=fields)  # under NATIVE_FROM: the general way
        if expected == "none":
            assert scanned is frame._NOT_A_REPLY and general is None
        else:
            assert scanned is not None and scanned is not frame._NOT_A_REPLY and general
            assert (scanned.result, scanned.error) == (general.result, general.error)
            if fields and scanned.result is not None:
                assert {k: bytes(v) for k, v in scanned.take_fields().items()} == {
                    k: bytes(v) for k, v in general.take_fields().items()
                }


_FLAGS = ["true", "false", '"true"', "1", "null", '{"isError":true}', "[true]"]


@settings(max_examples=400, deadline=None)
@given(
    flags=st.lists(st.sampled_from(_FLAGS), max_size=2),
    nested=st.sampled_from([None, *_FLAGS]),
    pad=st.integers(0, 5000),
)
def test_the_flag_a_scanned_reply_notes_is_the_one_a_full_decode_reads(
    flags: list[str], nested: str | None, pad: int
) -> None:
    # The access record takes `isError` from the scan instead of a pass of its own.
    parts = [f'"content":[{{"type":"text","text":"{"x" * pad}"}}]']
    parts += [f'"isError":{flag}' for flag in flags]  # two: repeated, left to the general way
    if nested is not None:
        parts.insert(0, f'"structuredContent":{{"isError":{nested}}}')
    result = "{" + ",".join(parts) + "}"
    data = f'{{"jsonrpc":"2.0","id":3,"result":{result}}}'.encode()
    assert members is not None
    for fields in (False, True):
        reply = frame._scanned_reply(members, data, fields=fields)
        if len(flags) > 1:
            assert reply is None if fields else (reply is not None and reply.flagged is None)
            continue
        assert reply is not None and reply is not frame._NOT_A_REPLY
        assert reply.flagged is frame.tool_flagged(result.encode())
        assert reply.flagged is (flags == ["true"])


# -- anything else: the scanner may decline, never misread --------------------------------------

_BYTES = list(b'\x00\x1f \t\n\r"\\/\x7f\x80\xbf\xc0\xc2\xdf\xe0\xed\xef\xf0\xf4\xf5\xff')
_BYTES += list(b"u{}[],:0-.eE+")


# Pieces that keep a string valid, so that mutants are also read, not only declined.
_PIECES = [b"\\n", b'\\"', b"\\u00e9", b"\\ud83d\\ude00", "é漢😀".encode(), b"x" * 20]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    value = draw(st.dictionaries(_TEXT, _JSON, max_size=5))
    data = bytearray(
        draw(
            st.sampled_from(
                [
                    msgspec.json.encode(value),
                    json.dumps(value).encode(),
                    json.dumps(value, ensure_ascii=False).encode(),
                ]
            )
        )
    )
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.integers(0, 3))
        byte = draw(st.sampled_from(_BYTES))
        if edit == 0:
            data[at] = byte
        elif edit == 1:
            data[at:at] = draw(st.sampled_from([bytes([byte]), *_PIECES]))
        elif edit == 2:
            del data[at]
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=1000, deadline=None)
@given(data=_mutated())
def test_whatever_the_scanner_reads_the_general_way_reads_the_same(data: bytes) -> None:
    _assert_sound(data)


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=64).map(lambda b: b'{"a":"' + b + b'"}'))
def test_any_bytes_in_a_string(data: bytes) -> None:
    _assert_sound(data)


_NEEDS_A_LOOK = st.sampled_from(
    [b"", b'\\"', b"\\n", b"\\u00e9", b"\xc3\xa9", b"\x01", b"\xff", b'"']
)


@settings(max_examples=1000, deadline=None)
@given(pieces=st.lists(st.tuples(st.integers(0, 200), _NEEDS_A_LOOK), max_size=8))
def test_long_plain_runs_between_bytes_that_need_a_look(pieces: list[tuple[int, bytes]]) -> None:
    """Escapes every few bytes, then long plain runs, then a byte to refuse: where the long
    steps stop, resume and leave off, the scanner reads what the general way reads."""
    text = b"".join(b"a" * run + special for run, special in pieces)
    _assert_sound(b'{"a":"' + text + b'","b":1}')


# -- the edges of the 16- and 64-byte steps, byte by byte -------------------------------------


@pytest.mark.parametrize(
    ("inside", "read"),
    [
        (b"\x00", False),
        (b"\x1f", False),
        (b"\n", False),
        (b"\x7f", True),
        (b'\\"', True),
        (b"\\\\", True),
        (b"\\/\\b\\f\\n\\r\\t", True),
        (b"\\u00e9", True),
        (b"\\ud83d\\ude00", True),  # a surrogate pair
        (b"\\ud83d", False),  # a high surrogate alone
        (b"\\ude00", False),  # a low surrogate alone
        (b"\\ud83dx", False),
        (b"\\u12", False),
        (b"\\x", False),
        ("é".encode(), True),
        ("漢".encode(), True),
        ("😀".encode(), True),
        (b"\xc3", False),  # cut short
        (b"\xe6\xbc", False),
        (b"\xc0\xaf", False),  # overlong
        (b"\xe0\x80\xaf", False),
        (b"\xed\xa0\x80", False),  # an encoded surrogate
        (b"\xf4\x90\x80\x80", False),  # past U+10FFFF
        (b"\xf5\x80\x80\x80", False),
        (b"\x80", False),
        (b"\xff", False),
    ],
)
def test_every_offset_of_a_string(inside: bytes, read: bool) -> None:
    # Past 64 + 64 bytes before: a special byte lands in every lane of a second long step.
    for before, after in itertools.product(range(140), (0, 1, 15, 16, 17, 63, 64, 65, 130)):
        value = b'"' + b"a" * before + inside + b"z" * after + b'"'  # z: no hex digit
        data = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"text":' + value + b"}]}}"
        spans = _assert_sound(data)
        if read:
            assert spans is not None, (before, after)
            start, end = spans["result"]
            assert data[start:end].endswith(value + b"}]}")
        else:
            assert spans is None, (before, after)
            with pytest.raises(frame.DecodeError):
                frame.peek(data)


@pytest.mark.parametrize(
    ("text", "read"),
    [
        (b"{}", True),
        (b' { "a" : 1 } ', True),
        (b'{"a":1}\n', True),  # a line-framed reader's terminator
        (b'{"a":1}\r\n\r\n', True),
        (b'\n{"a":1}', False),  # a line break before the object: the general way
        (b'{"a":\n1}', False),
        (b'{"a":1,"a":2}', False),  # repeated: the general way keeps the last
        (b'{"\\u0061":1}', False),  # an escaped key
        (b'{"a":1} x', False),
        (b'{"a":1}{}', False),
        (b"[]", False),
        (b'"a"', False),
        (b"", False),
        (b"{", False),
        (b'{"a"}', False),
        (b'{"a":}', False),
        (b'{"a":1,}', False),
        (b'{"a":[1,]}', False),
        (b'{"a":{"b":1,}}', False),
        (b'{"a":[1 2]}', False),
        (b'{"a":{"b" 1}}', False),
        (b'{"a":{1:2}}', False),
        (b'{"a":01}', False),
        (b'{"a":1.}', False),
        (b'{"a":.5}', False),
        (b'{"a":-}', False),
        (b'{"a":1e}', False),
        (b'{"a":1e+}', False),
        (b'{"a":+1}', False),
        (b'{"a":-0.0e+5}', True),
        (b'{"a":1E-7}', True),
        (b'{"a":1e400}', True),  # valid JSON, stepped over as the general way does
        (b'{"a":tru}', False),
        (b'{"a":nul}', False),
        (b'{"a":NaN}', False),
        (b'{"a":[true,false,null,{},[],"",0]}', True),
        (b'{"a":"\x7f"}', True),
        (b'{"\xc3\xa9":1}', True),
        (b'{"\xc3":1}', False),
    ],
)
def test_grammar(text: bytes, read: bool) -> None:
    spans = _assert_sound(text)
    assert (spans is not None) is read


@pytest.mark.parametrize(("depth", "read"), [(1, True), (512, True), (513, False), (5000, False)])
def test_nesting_is_read_to_a_bound(depth: int, read: bool) -> None:
    for open_, close in ((b"[", b"]"), (b'{"k":', b"}")):
        data = b'{"a":' + open_ * depth + b"0" + close * depth + b"}"
        assert (_assert_sound(data) is not None) is read


@pytest.mark.parametrize(("depth", "read"), [(511, True), (512, False)])
def test_nesting_within_a_result_counts_the_result(depth: int, read: bool) -> None:
    data = b'{"result":{"k":' + b"[" * depth + b"0" + b"]" * depth + b"}}"
    assert members is not None
    found = members(data, "result")
    assert (found is not None) is read
    assert (found is not None and found[1] == {"k": (5, 5 + 2 * depth + 1)}) is read
    _assert_sound(data)


def test_any_bytes_like_object_and_nothing_else() -> None:
    assert members is not None
    data = b'{"a":[1],"b":"x"}'
    expected = {"a": (5, 8), "b": (13, 16)}
    assert members(data) == members(bytearray(data)) == members(memoryview(data)) == expected
    assert members(data, None) == expected
    assert members(memoryview(data), "a") == (expected, None)
    with pytest.raises(TypeError):
        members(data, b"a")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        members(data, "a", "b")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        members("{}")  # type: ignore[arg-type]
