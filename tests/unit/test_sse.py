from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.wire.sse import KEEPALIVE, Event, Parser, format_event


def parse_all(data: bytes, **kwargs: int) -> list[Event]:
    return Parser(**kwargs).feed(data)


def test_single_event_lf() -> None:
    assert parse_all(b"data: hello\n\n") == [Event("message", b"hello", None)]


def test_single_event_crlf() -> None:
    assert parse_all(b"event: ping\r\ndata: hi\r\nid: 9\r\n\r\n") == [Event("ping", b"hi", "9")]


def test_event_and_id_fields() -> None:
    events = parse_all(b"id: 1\nevent: endpoint\ndata: /messages?s=abc\n\n")
    assert events == [Event("endpoint", b"/messages?s=abc", "1")]


def test_comments_and_keepalive_produce_nothing() -> None:
    assert parse_all(b": just a comment\n\n") == []
    assert parse_all(KEEPALIVE) == []
    assert parse_all(b":x\ndata: a\n: mid-event comment\ndata: b\n\n") == [
        Event("message", b"a\nb", None)
    ]


def test_multi_line_data_is_joined_with_newline() -> None:
    assert parse_all(b"data: one\ndata: two\ndata: three\n\n") == [
        Event("message", b"one\ntwo\nthree", None)
    ]


def test_only_one_leading_space_is_stripped() -> None:
    assert parse_all(b"data:  x\n\ndata:y\n\n") == [
        Event("message", b" x", None),
        Event("message", b"y", None),
    ]


def test_data_may_contain_colons() -> None:
    assert parse_all(b'data: {"a":"b:c"}\n\n') == [Event("message", b'{"a":"b:c"}', None)]


def test_event_type_resets_between_events_but_id_persists() -> None:
    events = parse_all(b"event: a\nid: 5\ndata: 1\n\ndata: 2\n\n")
    assert events == [Event("a", b"1", "5"), Event("message", b"2", "5")]


def test_unknown_fields_are_ignored() -> None:
    assert parse_all(b"retry: 1000\nfoo: bar\ndata: x\n\n") == [Event("message", b"x", None)]


def test_incomplete_event_is_held_until_blank_line() -> None:
    p = Parser()
    assert p.feed(b"data: part") == []
    assert p.feed(b"ial\n") == []
    assert p.feed(b"\n") == [Event("message", b"partial", None)]


def test_several_events_in_one_chunk_come_out_in_order() -> None:
    events = parse_all(b"data: 1\n\ndata: 2\n\ndata: 3\n\n")
    assert [e.data for e in events] == [b"1", b"2", b"3"]


def test_oversized_unterminated_line_raises() -> None:
    p = Parser(max_event_bytes=64)
    with pytest.raises(ValueError, match="size limit"):
        p.feed(b"data: " + b"x" * 100)


def test_oversized_event_across_lines_raises() -> None:
    p = Parser(max_event_bytes=64)
    with pytest.raises(ValueError, match="size limit"):
        p.feed(b"".join(b"data: " + b"x" * 20 + b"\n" for _ in range(5)))


def test_event_at_the_limit_is_accepted() -> None:
    p = Parser(max_event_bytes=64)
    assert p.feed(b"data: " + b"x" * 64 + b"\n\n") == [Event("message", b"x" * 64, None)]


def test_size_counter_resets_per_event() -> None:
    p = Parser(max_event_bytes=64)
    stream = b"".join(b"data: " + b"x" * 40 + b"\n\n" for _ in range(10))
    assert len(p.feed(stream)) == 10


def test_format_event_minimal() -> None:
    assert format_event(b'{"a":1}') == b'data: {"a":1}\n\n'


def test_format_event_with_event_and_id() -> None:
    out = format_event(b"x", event="message", event_id="7")
    assert out == b"id: 7\nevent: message\ndata: x\n\n"


# -- properties ------------------------------------------------------------------------------

_line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=30,
)
_field_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n:", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda s: not s.startswith(" "))


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 5))):
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["data", "event", "id", "comment", "other"]))
            value = draw(_line_text).encode()
            if kind == "comment":
                lines.append(b":" + value)
            elif kind == "other":
                lines.append(b"x-" + draw(_field_text).encode() + b": " + value)
            else:
                lines.append(kind.encode() + b": " + value)
        lines.append(b"")
    return b"".join(line + newline for line in lines)


@settings(max_examples=200, deadline=None)
@given(stream=sse_streams(), data=st.data())
def test_any_chunking_yields_the_same_events(stream: bytes, data: st.DataObject) -> None:
    whole = Parser().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    parser = Parser()
    chunked: list[Event] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        chunked += parser.feed(stream[prev:cut])
        prev = cut
    assert chunked == whole


@settings(max_examples=100, deadline=None)
@given(stream=sse_streams())
def test_byte_at_a_time_yields_the_same_events(stream: bytes) -> None:
    parser = Parser()
    one_by_one = [e for i in range(len(stream)) for e in parser.feed(stream[i : i + 1])]
    assert one_by_one == Parser().feed(stream)


_json_like = st.binary(max_size=200).filter(lambda b: b"\n" not in b and b"\r" not in b)


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(
        st.tuples(
            _json_like,
            st.none() | _field_text,
            st.none() | st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=10),
        ),
        max_size=5,
    )
)
def test_format_event_round_trips(payloads: list[tuple[bytes, str | None, str | None]]) -> None:
    stream = b"".join(format_event(d, event=e, event_id=i) for d, e, i in payloads)
    events = Parser().feed(stream)
    assert len(events) == len(payloads)
    last_id: str | None = None
    for ev, (data, event, event_id) in zip(events, payloads, strict=True):
        last_id = event_id if event_id is not None else last_id
        assert ev == Event(event or "message", data, last_id)


def test_format_event_writes_one_data_line_per_payload_line() -> None:
    out = format_event(b'{"a":\n1,\r\n"b":\r2}', event="message")
    assert out == b'event: message\ndata: {"a":\ndata: 1,\ndata: "b":\ndata: 2}\n\n'
    [event] = Parser().feed(out)
    assert event.data == b'{"a":\n1,\n"b":\n2}'


def test_a_payload_line_cannot_forge_an_event_or_field() -> None:
    out = format_event(b'x\n\nevent: forged\ndata: {"id":99}\n\n')
    events = Parser().feed(out)
    assert len(events) == 1
    assert events[0].event == "message"
    assert events[0].data == b'x\n\nevent: forged\ndata: {"id":99}\n\n'


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_payload_round_trips_with_line_breaks_as_lf(data: bytes) -> None:
    [event] = Parser().feed(format_event(data, event="message"))
    assert event.data == data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
