"""One request and its response on a connection (`Exchange`): a head and its body in one
write, a streamed head never held past one pass of the loop, request bodies handed over
whole, the end of an exchange seen by an app waiting on `receive`, and what uvicorn's own
request cycle refused still refused. First against a transport that records what it is
asked to do (the socket's edge), then through uvicorn with the listener's protocol over
real sockets."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from switchyard.downstream.exchange import HIGH_WATER, Exchange
from tests.listener import serving

pytestmark = pytest.mark.anyio

DEFAULTS = [(b"server", b"switchyard-test"), (b"date", b"Sun, 06 Dec 2026 00:00:00 GMT")]
JSON = [(b"content-type", b"application/json"), (b"content-length", b"2")]
HEAD = (
    b"HTTP/1.1 200 OK\r\nserver: switchyard-test\r\ndate: Sun, 06 Dec 2026 00:00:00 GMT\r\n"
    b"content-type: application/json\r\ncontent-length: 2\r\n\r\n"
)


class Recorder:
    """What a transport was asked to do, in order."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, Any]] = []
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.ops.append(("write", bytes(data)))

    def writelines(self, data: Any) -> None:
        self.ops.append(("writelines", tuple(bytes(d) for d in data)))

    def close(self) -> None:
        self.closing = True
        self.ops.append(("close", None))

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def sent(self) -> bytes:
        out = b""
        for op, data in self.ops:
            if op == "write":
                out += data
            elif op == "writelines":
                out += b"".join(data)
        return out


def exchange(
    method: str = "POST", *, keep_alive: bool = True, expect_100: bool = False
) -> tuple[Exchange, Recorder, list[str]]:
    rec = Recorder()
    completed: list[str] = []
    ex = Exchange(
        {"type": "http", "method": method, "headers": []},
        cast(asyncio.Transport, rec),
        FlowControl(cast(asyncio.Transport, rec)),
        DEFAULTS,
        expect_100,
        keep_alive,
        lambda: completed.append("done"),
    )
    return ex, rec, completed


async def one_pass() -> None:
    """Let the loop run what was scheduled before now (a held head's flush)."""
    await asyncio.sleep(0)


# -- the response --------------------------------------------------------------------------


async def test_a_head_and_its_body_leave_in_one_write() -> None:
    ex, rec, completed = exchange()
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    assert rec.ops == []
    await ex.send({"type": "http.response.body", "body": b"{}"})
    assert rec.ops == [("writelines", (HEAD, b"{}"))]
    assert ex.response_complete and completed == ["done"]
    await one_pass()
    assert len(rec.ops) == 1  # no flush left behind


async def test_a_head_with_a_length_waits_for_its_body_however_long() -> None:
    ex, rec, _ = exchange()
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    for _ in range(3):
        await one_pass()
    assert rec.ops == []
    await ex.send({"type": "http.response.body", "body": b"{}"})
    assert rec.sent() == HEAD + b"{}"


async def test_a_streamed_head_leaves_after_one_pass_when_no_event_follows() -> None:
    ex, rec, _ = exchange("GET")
    sse = [(b"content-type", b"text/event-stream")]
    await ex.send({"type": "http.response.start", "status": 200, "headers": sse})
    assert rec.ops == []
    await one_pass()
    assert len(rec.ops) == 1 and rec.ops[0][0] == "write"
    assert rec.ops[0][1].endswith(b"transfer-encoding: chunked\r\n\r\n")
    await ex.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await ex.send({"type": "http.response.body", "body": b"", "more_body": False})
    assert rec.sent().endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n")
    assert ex.response_complete


async def test_a_streamed_head_and_its_first_event_in_one_pass_leave_together() -> None:
    ex, rec, _ = exchange("GET")
    sse = [(b"content-type", b"text/event-stream")]
    await ex.send({"type": "http.response.start", "status": 200, "headers": sse})
    await ex.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await one_pass()
    assert [op for op, _ in rec.ops] == ["writelines"]
    assert rec.ops[0][1][1:] == (b"9\r\n", b"data: 1\n\n", b"\r\n")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-ok", b"one\r\nset-cookie: forged=1"),
        (b"x-ok", b"nul\x00"),
        (b"x-ok", b"lf\nonly"),
        (b"bad name", b"v"),
        (b"bad:name", b"v"),
        (b"x\r\ny", b"v"),
    ],
)
async def test_a_header_that_would_split_the_head_is_refused_and_nothing_leaves(
    name: bytes, value: bytes
) -> None:
    ex, rec, _ = exchange()
    with pytest.raises(RuntimeError, match="Invalid HTTP header"):
        await ex.send({"type": "http.response.start", "status": 200, "headers": [(name, value)]})
    await one_pass()
    assert rec.ops == []


async def test_a_name_checked_once_is_still_checked_with_every_value() -> None:
    for value, ok in ((b"fine", True), (b"bad\r\nx: y", False)):
        ex, _, _ = exchange()
        message = {"type": "http.response.start", "status": 200, "headers": [(b"x-same", value)]}
        if ok:
            await ex.send(message)
        else:
            with pytest.raises(RuntimeError, match="value"):
                await ex.send(message)


async def test_a_body_longer_or_shorter_than_declared_is_refused() -> None:
    ex, _, _ = exchange()
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    with pytest.raises(RuntimeError, match="longer"):
        await ex.send({"type": "http.response.body", "body": b"{}{}"})
    ex, _, completed = exchange()
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    with pytest.raises(RuntimeError, match="shorter"):
        await ex.send({"type": "http.response.body", "body": b"{"})
    assert completed == []


async def test_a_head_request_gets_the_head_alone() -> None:
    ex, rec, _ = exchange("HEAD")
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    await ex.send({"type": "http.response.body", "body": b"{}"})
    assert rec.sent() == HEAD


async def test_a_connection_not_kept_alive_says_so_and_closes_after_the_answer() -> None:
    ex, rec, completed = exchange(keep_alive=False)
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    await ex.send({"type": "http.response.body", "body": b"{}"})
    assert b"connection: close\r\n" in rec.sent()
    assert rec.ops[-1] == ("close", None)
    assert completed == ["done"]


async def test_an_app_that_says_close_ends_the_keep_alive() -> None:
    ex, rec, _ = exchange()
    headers = [*JSON, (b"Connection", b"keep-alive, Close")]
    await ex.send({"type": "http.response.start", "status": 200, "headers": headers})
    await ex.send({"type": "http.response.body", "body": b"{}"})
    assert not ex.keep_alive and rec.ops[-1] == ("close", None)
    assert rec.sent().count(b"connection:") == 1


async def test_messages_out_of_order_are_refused() -> None:
    ex, _, _ = exchange()
    with pytest.raises(RuntimeError, match=r"http\.response\.start"):
        await ex.send({"type": "http.response.body", "body": b""})
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    await ex.send({"type": "http.response.body", "body": b"{}"})
    with pytest.raises(RuntimeError, match="completed"):
        await ex.send({"type": "http.response.body", "body": b""})


async def test_an_app_failing_before_its_answer_gets_a_500_and_a_close() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    ex, rec, _ = exchange()
    await ex.run(app)
    sent = rec.sent()
    assert sent.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert sent.endswith(b"\r\n\r\nInternal Server Error")
    assert rec.ops[-1] == ("close", None)


async def test_an_app_failing_after_its_head_sends_the_head_then_closes() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        raise ValueError("boom")

    ex, rec, _ = exchange()
    await ex.run(app)
    assert rec.ops == [("write", HEAD), ("close", None)]


async def test_nothing_is_written_once_the_client_is_gone() -> None:
    ex, rec, _ = exchange()
    ex.lost()
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    await ex.send({"type": "http.response.body", "body": b"{}"})
    assert rec.ops == []


# -- the request ---------------------------------------------------------------------------


async def test_a_body_in_one_piece_is_handed_over_as_it_came() -> None:
    ex, _, _ = exchange()
    chunk = b'{"jsonrpc":"2.0"}'
    ex.take(chunk)
    ex.ended()
    message = await ex.receive()
    assert message == {"type": "http.request", "body": chunk, "more_body": False}
    assert message["body"] is chunk  # no copy


async def test_a_body_in_pieces_is_handed_over_joined_and_waits_for_the_rest() -> None:
    ex, _, _ = exchange()
    ex.take(b"ab")
    ex.take(b"cd")
    first = await ex.receive()
    assert first == {"type": "http.request", "body": b"abcd", "more_body": True}
    later = asyncio.ensure_future(ex.receive())
    await one_pass()
    assert not later.done()
    ex.take(b"ef")
    ex.ended()
    assert await asyncio.wait_for(later, 5) == {
        "type": "http.request",
        "body": b"ef",
        "more_body": False,
    }


async def test_a_body_past_the_high_water_mark_stops_reading_until_taken() -> None:
    ex, rec, _ = exchange()
    ex.take(b"x" * HIGH_WATER)
    assert rec.reading
    ex.take(b"y")
    assert not rec.reading
    message = await ex.receive()
    assert len(message["body"]) == HIGH_WATER + 1
    assert rec.reading


async def test_after_the_body_an_app_waits_for_the_end_of_the_exchange() -> None:
    ex, _, _ = exchange()
    ex.ended()
    assert (await ex.receive())["more_body"] is False
    ending = asyncio.ensure_future(ex.receive())
    for _ in range(3):
        await one_pass()
    assert not ending.done()  # no second, empty body
    ex.lost()
    assert await asyncio.wait_for(ending, 5) == {"type": "http.disconnect"}


async def test_a_completed_answer_ends_a_wait_on_receive() -> None:
    ex, _, _ = exchange()
    ex.ended()
    await ex.receive()
    ending = asyncio.ensure_future(ex.receive())
    await one_pass()
    await ex.send({"type": "http.response.start", "status": 200, "headers": JSON})
    await ex.send({"type": "http.response.body", "body": b"{}"})
    assert await asyncio.wait_for(ending, 5) == {"type": "http.disconnect"}


async def test_expect_100_continue_is_answered_when_the_app_asks_for_the_body() -> None:
    ex, rec, _ = exchange(expect_100=True)
    assert rec.ops == []
    ex.take(b"{}")
    ex.ended()
    await ex.receive()
    assert rec.ops == [("write", b"HTTP/1.1 100 Continue\r\n\r\n")]


async def test_expect_100_continue_is_not_sent_once_the_answer_started() -> None:
    ex, rec, _ = exchange(expect_100=True)
    await ex.send({"type": "http.response.start", "status": 413, "headers": JSON})
    await ex.send({"type": "http.response.body", "body": b"{}"})
    assert b"100 Continue" not in rec.sent()


# -- through uvicorn, with the listener's protocol -------------------------------------------


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), 5)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what it saw of the request: path, raw path, query and body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    seen = b"|".join([scope["path"].encode(), scope["raw_path"], scope["query_string"], body])
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(seen))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": seen})


async def answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await read_until(reader, b"\r\n\r\n")
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def test_answers_on_a_kept_alive_connection_arrive_whole_and_in_order() -> None:
    async with serving(echo_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Pipelined: both requests in one write, answered in order.
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        for path in (b"/first", b"/second"):
            head, body = await answer(reader)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert body == path + b"|" + path + b"||"
        writer.close()


async def test_the_path_query_and_escapes_reach_the_app_as_uvicorn_gave_them() -> None:
    async with serving(echo_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for target, seen in (
            (b"/mcp", b"/mcp|/mcp||"),
            (b"/sse?x=1&y=%20", b"/sse|/sse|x=1&y=%20|"),
            (b"/servers/a%2Fb/mcp", b"/servers/a/b/mcp|/servers/a%2Fb/mcp||"),
            (b"http://x/abs?q", b"/abs|/abs|q|"),
        ):
            writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await answer(reader))[1] == seen
        writer.close()


async def test_a_body_sent_in_pieces_and_a_chunked_body_arrive_whole() -> None:
    async with serving(echo_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        await writer.drain()
        await asyncio.sleep(0.05)  # the app is waiting for the rest; nothing to wait *for*
        writer.write(b"56789")
        assert (await answer(reader))[1] == b"/mcp|/mcp||0123456789"
        writer.write(
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        assert (await answer(reader))[1] == b"/mcp|/mcp||abcde"
        writer.close()


async def test_expect_100_continue_on_the_wire() -> None:
    async with serving(echo_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        assert await read_until(reader, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        assert (await answer(reader))[1] == b"/mcp|/mcp||{}"
        writer.close()


async def test_a_stream_head_reaches_the_client_before_its_first_event() -> None:
    first_event = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await asyncio.wait_for(first_event.wait(), 10)
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": False})

    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_until(reader, b"\r\n\r\n")  # while the app still waits
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked\r\n" in head
        first_event.set()
        assert await read_until(reader, b"\r\n0\r\n\r\n") == b"b\r\ndata: one\n\n\r\n0\r\n\r\n"
        writer.close()


async def test_a_client_leaving_a_stream_ends_the_apps_wait_on_receive() -> None:
    seen: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # the (empty) body
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        seen.set_result(await receive())

    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_until(reader, b"\r\n\r\n")
        writer.transport.abort()
        assert await asyncio.wait_for(seen, 5) == {"type": "http.disconnect"}


async def test_an_error_answer_before_a_close_is_sent_whole() -> None:
    async with serving(lambda scope, receive, send: asyncio.sleep(0)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        answer_ = await asyncio.wait_for(reader.read(), 5)  # to the close
        assert answer_.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert answer_.endswith(b"Invalid HTTP request received.")
        writer.close()


async def test_an_http_1_0_request_is_answered_and_closed() -> None:
    async with serving(echo_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /old HTTP/1.0\r\n\r\n")
        everything = await asyncio.wait_for(reader.read(), 5)  # to the close
        assert everything.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"connection: close\r\n" in everything
        assert everything.endswith(b"\r\n\r\n/old|/old||")
        writer.close()


async def test_the_head_and_body_of_a_small_answer_arrive_in_one_segment() -> None:
    """One `recv` gets both: the client is woken once per answer, not once for a head with
    nothing after it and again for the body."""
    async with serving(echo_app) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        with sock:
            sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.to_thread(sock.recv, 65536)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.endswith(b"\r\n\r\n/one|/one||")
