"""A response head held until its body: one write for both, never a head held past one pass
of the loop, and nothing lost or reordered on a close. First against a transport that records
what it is asked to send (the socket's edge), then through uvicorn with the listener's own
protocol over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from switchyard.downstream.held_head import HeldHeadTransport
from tests.listener import serving

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"
BODY = b"{}"


class Recorder:
    """What a transport was asked to do, in order."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, Any]] = []
        self.closing = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.ops.append(("write", bytes(data)))

    def writelines(self, data: Any) -> None:
        self.ops.append(("writelines", tuple(bytes(d) for d in data)))

    def write_eof(self) -> None:
        self.ops.append(("write_eof", None))

    def close(self) -> None:
        self.closing = True
        self.ops.append(("close", None))

    def abort(self) -> None:
        self.closing = True
        self.ops.append(("abort", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.ops.append(("limits", (high, low)))


def held() -> tuple[HeldHeadTransport, Recorder]:
    rec = Recorder()
    return HeldHeadTransport(cast(asyncio.Transport, rec), asyncio.get_running_loop()), rec


async def one_pass() -> None:
    """Let the loop run what was scheduled before now (a held head's flush)."""
    await asyncio.sleep(0)


async def test_a_head_and_its_body_leave_in_one_write() -> None:
    t, rec = held()
    t.write(HEAD)
    assert rec.ops == []
    t.write(BODY)
    await one_pass()
    assert rec.ops == [("writelines", (HEAD, BODY))]


async def test_a_head_whose_body_comes_later_leaves_after_one_pass_of_the_loop() -> None:
    t, rec = held()
    t.write(HEAD)
    await one_pass()
    assert rec.ops == [("write", HEAD)]
    t.write(b"event: message\r\ndata: {}\r\n\r\n")  # a stream's first event, later
    assert rec.ops[1] == ("write", b"event: message\r\ndata: {}\r\n\r\n")


async def test_writes_that_are_no_head_are_not_held() -> None:
    t, rec = held()
    t.write(b"5\r\nhello\r\n")
    t.write(memoryview(b"HTTP/1.1 as a body passed as a view"))
    assert [op for op, _ in rec.ops] == ["write", "write"]


async def test_a_close_sends_the_held_head_first_and_nothing_after() -> None:
    t, rec = held()
    t.write(HEAD)
    t.close()
    await one_pass()
    assert rec.ops == [("write", HEAD), ("close", None)]


async def test_writelines_and_write_eof_keep_the_order() -> None:
    t, rec = held()
    t.write(HEAD)
    t.writelines([b"a", b"b"])
    t.write(HEAD)
    t.write_eof()
    assert rec.ops == [
        ("write", HEAD),
        ("writelines", (b"a", b"b")),
        ("write", HEAD),
        ("write_eof", None),
    ]


async def test_an_abort_drops_the_held_head() -> None:
    t, rec = held()
    t.write(HEAD)
    t.abort()
    await one_pass()
    assert rec.ops == [("abort", None)]


async def test_a_head_held_when_the_connection_went_away_is_not_written() -> None:
    t, rec = held()
    t.write(HEAD)
    rec.closing = True  # the peer left; the transport closed itself
    await one_pass()
    assert rec.ops == []


async def test_the_held_head_counts_as_buffered_and_the_rest_is_the_transports() -> None:
    t, rec = held()
    rec.buffered = 10
    t.write(HEAD)
    assert t.get_write_buffer_size() == 10 + len(HEAD)
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)
    t.set_write_buffer_limits(high=4)  # not wrapped: answered by the transport itself
    assert rec.ops == [("limits", (4, None))]


# -- through uvicorn, with the listener's protocol -------------------------------------------


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), 5)


async def test_answers_on_a_kept_alive_connection_arrive_whole_and_in_order() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = scope["path"].encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        writer.write(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        for path in (b"/first", b"/second"):
            head = await read_until(reader, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"content-length: %d\r\n" % len(path) in head
            assert await asyncio.wait_for(reader.readexactly(len(path)), 5) == path
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


async def test_an_error_answer_before_a_close_is_sent_whole() -> None:
    async with serving(lambda scope, receive, send: asyncio.sleep(0)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)  # to the close
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert answer.endswith(b"Invalid HTTP request received.")
        writer.close()
