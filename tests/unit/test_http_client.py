"""The keep-alive client of a call's POST, against raw servers that answer the way real and
hostile backends do: kept-alive, chunked, close-delimited, interim answers, answers cut short,
floods, stalls, and bytes nobody asked for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from switchyard.upstream import http_client, unreachable
from switchyard.upstream.http_client import HttpClient

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Server:
    handler: Handler
    port: int = 0
    accepted: int = 0
    active: int = 0
    most_active: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_peer: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.writers.append(writer)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.active -= 1
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request, head and body; None at end of stream."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_peer.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return head + body


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for writer in server.writers:
            writer.close()


def client_for(server: Server, **kw: float) -> HttpClient:
    return HttpClient(
        f"http://127.0.0.1:{server.port}/mcp",
        max_connections=int(kw.get("max_connections", 8)),
        connect_timeout_s=5.0,
        idle_s=kw.get("idle_s", 4.0),
    )


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Bounded wait for a state of the client's or the server's that no event announces."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def answer_each(reply: bytes) -> Handler:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.request(r) is not None:
            w.write(reply)
            await w.drain()

    return handler


async def reading_fails(handler: Handler, match: str) -> None:
    """The head comes in; reading the body fails with `match`, and the connection is gone."""
    async with serving(handler) as server:
        client = client_for(server)
        response = await client.post(b"{}", {})
        with pytest.raises(http_client.MalformedResponse, match=match):
            await response.read()
        response.release()
        assert client.open_connections == 0
        client.close()


async def post(client: HttpClient, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await client.post(body, {"Content-Type": "application/json"})
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def test_a_kept_alive_connection_carries_the_next_request() -> None:
    async with serving(await answer_each(OK)) as server:
        client = client_for(server)
        headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": "s1"}
        for n in range(3):
            response = await client.post(b'{"n":%d}' % n, headers)
            assert (response.status, await response.read()) == (200, b"{}")
            assert response.headers.get("content-type") == "application/json"
            assert response.content_length == 2
            response.release()
        assert server.accepted == 1
        assert server.requests[0] == (
            b"POST /mcp HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{server.port}\r\n".encode()
            + b"Accept: application/json, text/event-stream\r\nMcp-Session-Id: s1\r\n"
            + b'Content-Length: 7\r\n\r\n{"n":0}'
        )
        assert (client.open_connections, client.idle_connections) == (1, 1)
        client.close()


async def test_chunked_bodies_keep_the_connection_and_close_delimited_ones_do_not() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'
    )
    async with serving(await answer_each(chunked)) as server:
        client = client_for(server)
        assert await post(client) == (200, b'{"a":1}')
        assert await post(client) == (200, b'{"a":1}')
        assert server.accepted == 1
        client.close()

    async def close_delimited(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        w.write(b'{"whole": "body"}')
        await w.drain()
        w.close()

    async with serving(close_delimited) as server:
        client = client_for(server)
        assert await post(client) == (200, b'{"whole": "body"}')
        assert await post(client) == (200, b'{"whole": "body"}')
        assert server.accepted == 2  # the body's end was the connection's
        client.close()


async def test_stream_pieces_arrive_before_the_answer_ends() -> None:
    more = asyncio.Event()

    async def stream(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        w.write(b"Transfer-Encoding: chunked\r\n\r\n")
        w.write(b"e\r\nid: 1\ndata: \n\n\r\n")
        await w.drain()
        await more.wait()  # the rest only once the client has the first event
        w.write(b'10\r\ndata: {"x": 2}\n\n\r\n0\r\n\r\n')
        await w.drain()

    async with serving(stream) as server:
        client = client_for(server)
        response = await client.post(b"{}", {})
        pieces = []
        async for piece in response.content.iter_chunked(65536):
            pieces.append(piece)
            more.set()
        response.release()
        assert pieces == [b"id: 1\ndata: \n\n", b'data: {"x": 2}\n\n']
        assert client.idle_connections == 1
        client.close()


async def test_a_close_before_the_head_is_disconnected_and_within_the_body_malformed() -> None:
    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)

    async with serving(hang_up) as server:
        client = client_for(server)
        with pytest.raises(http_client.Disconnected) as raised:
            await client.post(b"{}", {})
        assert not isinstance(raised.value, http_client.ConnectFailed)  # it was sent
        assert unreachable.reason(raised.value) == "the server closed the connection"
        assert client.open_connections == 0
        client.close()

    async def cut_short(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        w.write(b'{"partial": ')
        await w.drain()

    await reading_fails(cut_short, "closed before the answer")


async def test_a_refused_connection_is_connect_failed_naming_no_address() -> None:
    async with serving(await answer_each(OK)) as server:
        port = server.port
    client = HttpClient(
        f"http://127.0.0.1:{port}/mcp", max_connections=2, connect_timeout_s=5.0, idle_s=4.0
    )
    with pytest.raises(http_client.ConnectFailed) as raised:
        await client.post(b"{}", {})
    assert unreachable.reason(raised.value) == "connection refused"
    assert client.open_connections == 0
    client.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(OK)
        await w.drain()
        # then the server closes it, as uvicorn and Node do after 5 s idle

    async with serving(once) as server:
        client = client_for(server)
        assert await post(client) == (200, b"{}")
        await until(lambda: client.open_connections == 0)
        assert await post(client) == (200, b"{}")
        assert server.accepted == 2
        client.close()


async def test_an_idle_connection_is_closed_after_the_idle_bound() -> None:
    async with serving(await answer_each(OK)) as server:
        client = client_for(server, idle_s=0.2)
        loop = asyncio.get_running_loop()
        assert await post(client) == (200, b"{}")
        parked = loop.time()
        async with asyncio.timeout(5):
            await server.closed_by_peer.wait()
        assert loop.time() - parked >= 0.19
        assert (client.open_connections, client.idle_connections) == (0, 0)
        client.close()


async def test_connections_are_bounded_and_a_waiting_request_takes_a_freed_one() -> None:
    gate = asyncio.Event()

    async def held(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.request(r) is not None:
            if len(s.requests) >= 2:
                gate.set()
            await gate.wait()
            w.write(OK)
            await w.drain()

    async with serving(held) as server:
        client = client_for(server, max_connections=2)
        results = await asyncio.wait_for(asyncio.gather(*(post(client) for _ in range(6))), 10)
        assert results == [(200, b"{}")] * 6
        assert (server.accepted, server.most_active) == (2, 2)
        assert client.open_connections == 2
        client.close()


async def test_a_cancelled_request_closes_its_connection() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        await s.request(r)  # waits for the end of the stream: the client's close

    async with serving(silent) as server:
        client = client_for(server)
        task = asyncio.create_task(client.post(b"{}", {}))
        await until(lambda: len(server.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(5):
            await server.closed_by_peer.wait()
        assert client.open_connections == 0
        client.close()


async def test_reading_pauses_while_the_reader_falls_behind_and_nothing_is_lost() -> None:
    size = 32 * 1024 * 1024
    flood = bytes(range(256)) * (size // 256)

    async def fast(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        w.write(b"Content-Length: %d\r\n\r\n" % size)
        w.write(flood)
        await w.drain()

    async with serving(fast) as server:
        client = client_for(server)
        response = await client.post(b"{}", {})
        conn = response._conn
        assert conn.transport is not None
        await until(lambda: not conn.transport.is_reading())  # type: ignore[union-attr]
        # Held: at most the bound plus what one socket read brings past it.
        assert response._buffered <= http_client.BUFFER_HIGH + 256 * 1024
        received = bytearray()
        async for piece in response.content.iter_chunked(65536):
            received += piece
        response.release()
        assert bytes(received) == flood
        assert client.idle_connections == 1
        client.close()


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with serving(await answer_each(OK)) as server:
        client = client_for(server)
        for bad in ("a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b"):
            with pytest.raises(ValueError, match="line break or NUL"):
                await client.post(b"{}", {"Authorization": bad})
            with pytest.raises(ValueError, match="line break or NUL"):
                await client.post(b"{}", {bad: "v"})
        assert server.accepted == 0
        assert await post(client) == (200, b"{}")
        client.close()


async def test_bytes_after_the_answer_close_the_connection() -> None:
    async with serving(await answer_each(OK + b"HTTP/1.1 200 OK\r\n\r\n")) as server:
        client = client_for(server)
        assert await post(client) == (200, b"{}")
        assert await post(client) == (200, b"{}")
        assert server.accepted == 2
        client.close()


async def test_an_interim_answer_is_passed_over() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + OK
    async with serving(await answer_each(early)) as server:
        client = client_for(server)
        response = await client.post(b"{}", {})
        assert (response.status, await response.read()) == (200, b"{}")
        assert response.headers.get("Link") is None
        response.release()
        assert await post(client) == (200, b"{}")
        assert server.accepted == 1
        client.close()


async def test_a_malformed_head_is_a_malformed_response() -> None:
    async with serving(await answer_each(b"SMTP ready\r\n\r\n")) as server:
        client = client_for(server)
        with pytest.raises(http_client.MalformedResponse, match="malformed HTTP answer"):
            await client.post(b"{}", {})
        assert client.open_connections == 0
        client.close()


async def test_an_endless_answer_head_is_refused_within_its_bound() -> None:
    async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nX-Flood: ")
        for _ in range(64):  # 1 MiB of one header value, never ended
            w.write(b"a" * 16384)
            await w.drain()

    async with serving(endless) as server:
        client = client_for(server)
        with pytest.raises(http_client.MalformedResponse, match="head over 65536 bytes"):
            await client.post(b"{}", {})
        assert client.open_connections == 0
        client.close()


async def test_an_endless_trailer_is_refused_within_the_same_bound() -> None:
    async def trailer(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n")
        w.write(b"X-Trailer: ")
        for _ in range(64):
            w.write(b"a" * 16384)
            await w.drain()

    await reading_fails(trailer, "framing between body bytes")


async def test_a_long_stream_of_small_events_is_not_mistaken_for_framing() -> None:
    events = 20000  # 20,000 chunks of framing, far more than the bound in all

    async def chatty(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        w.write(b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(events):
            w.write(b"8\r\ndata: 1\n\r\n")
        w.write(b"0\r\n\r\n")
        await w.drain()

    async with serving(chatty) as server:
        client = client_for(server)
        response = await client.post(b"{}", {})
        assert await response.read() == b"data: 1\n" * events
        response.release()
        client.close()


async def test_closing_the_client_ends_a_request_in_flight() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        await s.request(r)

    async with serving(silent) as server:
        client = client_for(server)
        task = asyncio.create_task(client.post(b"{}", {}))
        await until(lambda: len(server.requests) == 1)
        client.close()
        with pytest.raises(http_client.Disconnected):
            await asyncio.wait_for(task, 5)
        assert client.open_connections == 0
        with pytest.raises(http_client.ConnectFailed):
            await client.post(b"{}", {})


def test_only_plain_http_origins_without_userinfo_are_served() -> None:
    assert http_client.supports("http://127.0.0.1:8000/mcp")
    assert http_client.supports("http://[::1]:8000/mcp")
    assert not http_client.supports("https://example.com/mcp")
    assert not http_client.supports("http://user:pw@example.com/mcp")
    assert not http_client.supports("http:///mcp")


def test_a_request_target_escapes_what_may_not_stand_bare_in_a_request_line() -> None:
    assert http_client.request_target("http://h:1/messages?sessionId=ab%2Fc") == (
        "/messages?sessionId=ab%2Fc"
    )
    assert http_client.request_target("http://h:1") == "/"
    # What an HTTP+SSE backend's `endpoint` event may hold must not split the request line
    # (line breaks and tabs are dropped by the URL parser, the rest escaped).
    assert http_client.request_target('http://h:1/m s?x="é"\r\nX: 1') == (
        "/m%20s?x=%22%C3%A9%22X:%201"
    )


async def test_a_post_to_another_target_on_the_same_origin() -> None:
    async with serving(await answer_each(OK)) as server:
        client = client_for(server)
        response = await client.post(b"{}", {}, "/messages?sessionId=1")
        response.release()
        assert server.requests[0].startswith(b"POST /messages?sessionId=1 HTTP/1.1\r\n")
        client.close()


async def test_a_large_body_arrives_whole_after_its_head() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, more than one socket buffer
    async with serving(await answer_each(OK)) as server:
        client = client_for(server)
        assert await post(client, body) == (200, b"{}")
        assert server.requests[0].endswith(b"Content-Length: 1048576\r\n\r\n" + body)
        client.close()


async def test_a_declared_length_body_read_whole_arrives_whole_however_it_is_split() -> None:
    size = 3 * 1024 * 1024  # past the pause bound: reading it whole must not stall
    body = bytes(range(256)) * (size // 256)
    pieces = [body[i : i + 700_000] for i in range(0, size, 700_000)]
    sent_head = asyncio.Event()
    go_on = asyncio.Event()

    async def split(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        w.write(b"Content-Length: %d\r\n\r\n" % size)
        await w.drain()
        sent_head.set()
        await go_on.wait()
        for piece in pieces:  # the body arrives while the reader already waits for it
            w.write(piece)
            await w.drain()
        await s.request(r)  # kept alive until the client closes

    async with serving(split) as server:
        client = client_for(server)
        response = await client.post(b"{}", {})
        reading = asyncio.create_task(response.read())
        await asyncio.wait_for(sent_head.wait(), 5)
        go_on.set()
        assert await asyncio.wait_for(reading, 10) == body
        response.release()
        assert client.idle_connections == 1
        client.close()


async def test_a_length_beside_chunked_framing_is_a_malformed_response() -> None:
    # Two framings for one body: which one a reader believes decides where the next answer
    # starts. Refused, never resolved either way.
    both = b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\n" + both)
        await w.drain()

    async with serving(handler) as server:
        client = client_for(server)
        with pytest.raises(http_client.MalformedResponse):
            response = await client.post(b"{}", {})
            await response.read()
        assert client.open_connections == 0
        client.close()
