"""`Accept` on the Streamable HTTP face: what admits JSON and an event stream, the same on
the first request and every later one, whatever number of distinct values clients send."""

from __future__ import annotations

import pytest

from switchyard.downstream import asgi
from switchyard.downstream.asgi import accepted_types

CASES = [
    ([b"application/json, text/event-stream"], (True, True)),
    ([b"application/json;q=0.9, text/event-stream;q=0.1"], (True, True)),
    ([b"application/json", b"text/event-stream"], (True, True)),  # one list over two lines
    ([b"*/*"], (True, True)),
    ([b"application/*, text/*"], (True, True)),
    ([b"APPLICATION/JSON"], (True, False)),
    ([b"text/event-stream"], (False, True)),
    ([b"text/html"], (False, False)),
    ([], (False, False)),
]


@pytest.mark.parametrize(("lines", "expected"), CASES)
def test_accept_values_and_their_repeats_read_the_same(
    lines: list[bytes], expected: tuple[bool, bool]
) -> None:
    headers = [(b"host", b"x"), *((b"accept", v) for v in lines)]
    assert accepted_types(headers) == expected
    assert accepted_types(headers) == expected  # from the memo now
    assert accepted_types(list(headers)) == expected
    assert accepted_types(headers, asgi.head_index({"headers": headers})) == expected


def test_many_distinct_values_keep_the_memo_bounded_and_answers_right() -> None:
    for i in range(asgi._ACCEPT_MEMO_MAX * 3):
        value = f"application/json, text/event-stream, x/{i}".encode()
        assert accepted_types([(b"accept", value)]) == (True, True)
        assert accepted_types([(b"accept", f"x/{i}".encode())]) == (False, False)
        assert len(asgi._ACCEPT_MEMO) <= asgi._ACCEPT_MEMO_MAX


def test_the_head_index_keeps_each_names_first_value_and_shows_repeats() -> None:
    headers = [
        (b"host", b"a"),
        (b"mcp-session-id", b"first"),
        (b"accept", b"text/html"),
        (b"mcp-session-id", b"second"),
    ]
    scope: dict[str, object] = {"headers": headers}
    index = asgi.head_index(scope)
    assert asgi.first(index, b"mcp-session-id") == asgi.header(headers, b"mcp-session-id")
    assert asgi.first(index, b"mcp-session-id") == "first"
    assert asgi.first(index, b"origin") is None
    assert len(index) < len(headers)  # a repeated name shows
    # A repeat sends every reader of all lines back to the list.
    assert asgi.header_lines(headers, b"mcp-session-id", index) == (b"first", b"second")
    assert asgi.header_list(headers, b"mcp-session-id", index) == "first,second"
    lone = [(b"host", b"a"), (b"tracestate", b"k=v")]
    lone_index = asgi.head_index({"headers": lone})
    assert asgi.header_lines(lone, b"tracestate", lone_index) == (b"k=v",)
    assert asgi.header_lines(lone, b"origin", lone_index) == ()
    assert asgi.header_list(lone, b"tracestate", lone_index) == asgi.header_list(
        lone, b"tracestate"
    )
    assert asgi.head_index(scope) is index  # made once per request
