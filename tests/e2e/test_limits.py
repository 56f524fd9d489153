"""Request limits and hygiene on the HTTP face: each limit crossed, each refusal exact."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_http_sse_face import sse_client
from tests.harness import (
    FIXTURES,
    PYTHON,
    Gateway,
    sdk_http_backend,
    start_gateway,
    stdio_fixture,
)
from tests.rpc import MODERN, MODERN_META, RawClient, Response

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "gateway": {
            "max_body_bytes": 65536,
            "max_message_bytes": 16384,
            "limits": {
                "header_timeout": 1.0,
                "body_timeout": 1.0,
                "max_in_flight_per_client": 4,
                "max_in_flight_per_backend": 6,
                "max_json_string_bytes": 4096,
                "max_json_array_items": 100,
                "max_json_object_keys": 100,
            },
        },
        "servers": {
            "fx": stdio_fixture("crashy", isolation="shared"),
            "web": {"command": PYTHON, "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "web"]},
        },
    }
    gw = start_gateway(config, tmp_path_factory.mktemp("limits"))
    try:
        gw.wait_backend("fx")
        gw.wait_backend("web")
        yield gw
    finally:
        gw.stop()


async def _raw(gw: Gateway, data: bytes, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answers until it closes
    the connection (each refusal here must close it: the timeout fails the test)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(data)
    await writer.drain()
    chunks = b""
    try:
        async with asyncio.timeout(read_timeout):
            while chunk := await reader.read(65536):
                chunks += chunk
    finally:
        writer.close()
    return chunks


def _head(gw: Gateway, extra: str = "", length: int | None = None) -> str:
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\n" + extra
    )
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return head


PING = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
).encode()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"initialize","method":"ping"}', 400, -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":NaN}}', 400, -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":Infinity}}', 400, -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"p\xffing"}', 400, -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xc3"}}', 400, -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\\udc00"}}', 400, -32700),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 70 + b"]" * 70 + b"}",
            400,
            -32600,
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"y" * 5000 + b'"}}',
            400,
            -32600,
        ),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[' + b"1," * 100 + b"1]}", 400, -32600),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{'
            + b",".join(b'"k%d":1' % i for i in range(101))
            + b"}}",
            400,
            -32600,
        ),
    ],
)
async def test_non_standard_or_oversized_json_is_refused(
    gateway: Gateway, http: aiohttp.ClientSession, body: bytes, status: int, code: int
) -> None:
    client = RawClient(gateway.url, http)
    resp = await client.post(body, client.headers())
    assert resp.status == status
    assert resp.json["error"]["code"] == code and resp.json["id"] is None


async def test_headers_over_the_limit_are_431(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    client = RawClient(gateway.url, http)
    many = {f"X-Extra-{i}": "v" for i in range(101)}
    assert (await client.post(PING, {**client.headers(), **many})).status == 431
    big = {"X-Big": "v" * 33 * 1024}
    assert (await client.post(PING, {**client.headers(), **big})).status == 431
    assert (await client.post(PING, client.headers())).status == 200


async def test_a_body_over_the_limit_is_413_declared_or_streamed(gateway: Gateway) -> None:
    declared = await _raw(gateway, (_head(gateway, length=70000) + "\r\n").encode())
    assert declared.startswith(b"HTTP/1.1 413")
    chunked = _head(gateway, "Transfer-Encoding: chunked\r\n") + "\r\n"
    chunk = b"x" * 40000
    payload = chunked.encode() + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n"
    assert (await _raw(gateway, payload)).startswith(b"HTTP/1.1 413")


async def test_content_length_with_transfer_encoding_is_400_and_closed(gateway: Gateway) -> None:
    smuggle = _head(gateway, "Transfer-Encoding: chunked\r\n", length=len(PING)) + "\r\n"
    answer = await _raw(gateway, smuggle.encode() + PING)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"Switchyard" not in answer  # refused by the HTTP parser, before any MCP handling


async def test_slow_clients_are_cut_off_while_others_are_served(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    # A head that never completes: the connection is closed after header_timeout (1 s).
    slow_head = asyncio.create_task(_raw(gateway, b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
    # A body that never completes: 408 after body_timeout (1 s).
    slow_body = asyncio.create_task(
        _raw(gateway, (_head(gateway, length=100) + "\r\n").encode() + b"{")
    )
    client = RawClient(gateway.url, http)
    assert (await client.post(PING, client.headers())).status == 200  # served meanwhile
    assert await asyncio.wait_for(slow_head, 5) == b""
    assert (await asyncio.wait_for(slow_body, 5)).startswith(b"HTTP/1.1 408")


async def test_a_head_dribbled_in_pieces_is_cut_off_from_its_first_piece(
    gateway: Gateway,
) -> None:
    """The head's deadline (1 s here) runs from the chunk it began in: bytes that keep coming
    do not push it back. A head that arrives whole needs no timer at all, and one begun after
    a complete request in the same chunk (pipelined) is timed like any other."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    started = time.monotonic()
    closed_after: float | None = None
    try:
        writer.write(b"POST /mcp HTTP/1.1\r\n")
        await writer.drain()
        for n in range(12):  # 0.2 s apart: 2.4 s of a head that never ends
            await asyncio.sleep(0.2)
            if await _closed(reader):
                closed_after = time.monotonic() - started
                break
            writer.write(f"X-Piece-{n}: y\r\n".encode())
            await writer.drain()
    finally:
        writer.close()
    assert closed_after is not None and closed_after < 2.2

    whole = (_head(gateway, length=len(PING)) + "\r\n").encode() + PING
    answer = await _raw(gateway, whole + b"POST /mcp HTTP/1.1\r\nHost: x\r\n", read_timeout=4)
    assert answer.startswith(b"HTTP/1.1 200")  # the first answered, then the second timed out
    assert answer.count(b"HTTP/1.1 ") == 1


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.01) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def test_a_head_flooding_far_past_the_limit_is_cut_off_before_its_deadline(
    gateway: Gateway, tmp_path: Path
) -> None:
    """A head four times past `max_header_bytes` (default 32 KiB) is not buffered until the
    header deadline (here 60 s): the connection closes as soon as it crosses. A large body
    does not count toward it (only a head's bytes do)."""
    patient = start_gateway(
        {"gateway": {"limits": {"header_timeout": 60.0}}}, tmp_path, ready=False
    )
    try:
        flood = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 200_000
        try:
            answer = await asyncio.wait_for(_raw(patient, flood, read_timeout=30), 10)
        except ConnectionResetError:
            answer = b""  # closed while the flood was still being written
        assert answer == b""
    finally:
        patient.stop()
    pads = {f"pad{n}": "x" * 3000 for n in range(20)}  # within the module's JSON limits
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
        "_meta": pads,
    }
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
    head = _head(gateway, "Connection: close\r\n", length=len(body)) + "\r\n"
    assert (await _raw(gateway, head.encode() + body.encode())).startswith(b"HTTP/1.1 200")


async def test_too_many_requests_in_flight_for_one_session_is_429(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    client = await RawClient(gateway.url, http).open()
    calls = [
        client.request("tools/call", {"name": "fx_sleep", "arguments": {"ms": 800}}, request_id=i)
        for i in range(5)
    ]
    answers = await asyncio.gather(*calls)
    refused = [a for a in answers if a.status == 429]
    assert len(refused) == 1 and refused[0].headers["Retry-After"] == "1"
    assert sorted(a.status for a in answers) == [200, 200, 200, 200, 429]


async def test_a_backend_with_too_many_requests_in_flight_refuses_more(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    clients = [await RawClient(gateway.url, http).open() for _ in range(7)]
    answers = await asyncio.gather(
        *(c.request("tools/call", {"name": "fx_sleep", "arguments": {"ms": 800}}) for c in clients)
    )
    codes = sorted(a.json.get("error", {}).get("code", 0) for a in answers)
    assert codes == [-31005, 0, 0, 0, 0, 0, 0]


async def test_a_backend_result_over_the_limit_is_an_error(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    with sdk_http_backend("--json-response", name="big") as url:
        gw = gateway_factory(
            {"gateway": {"max_message_bytes": 65536}, "servers": {"big": {"url": url}}}
        )
        client = await RawClient(gw.url, http).open()
        big = await client.request(
            "tools/call", {"name": "big_echo", "arguments": {"text": "z" * 100_000}}
        )
        error = big.json["error"]
        assert error["code"] == -31003
        assert error["data"] == {"source": "gateway", "backend": "big"}
        small = await client.result("tools/call", {"name": "big_echo", "arguments": {"text": "ok"}})
        assert small["content"][0]["text"] == "ok"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_over_its_memory_budget_the_gateway_sheds_new_requests(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    # A budget below what the process already uses: everything new is shed, health still answers.
    gw = gateway_factory(
        {
            "gateway": {"limits": {"memory_budget": 16 * 1024 * 1024}},
            "servers": {"fx": stdio_fixture("crashy")},
        }
    )
    client = RawClient(gw.url, http)
    answer: Response | None = None
    for _ in range(40):  # the sampler runs every 0.25 s; bounded at 4 s
        answer = await client.post(PING, client.headers())
        if answer.status == 503:
            break
        await asyncio.sleep(0.1)
    assert answer is not None and answer.status == 503 and answer.headers["Retry-After"] == "1"
    async with http.get(f"{gw.base}/healthz") as resp:
        assert resp.status == 200
    # Opening an HTTP+SSE stream is shed the same way.
    async with http.get(f"{gw.base}/sse", headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"


async def test_memory_amplification_stays_under_100x_the_input(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory({"servers": {"fx": stdio_fixture("crashy", isolation="shared")}})
    client = await RawClient(gw.url, http).open()
    body_bytes = 4 * 1024 * 1024 - 4096  # just under the default body limit
    # Refused only after a full parse: a string over 1 MiB. The worst the gateway does for one.
    pad = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "fx_echo", "arguments": {"text": "z" * (body_bytes - 200)}},
    }
    payload = json.dumps(pad).encode()
    baseline = _rss(gw.process.pid)
    peak = baseline
    for _ in range(20):
        answer = await client.post(payload, client.headers())
        assert answer.status == 400 and answer.json["error"]["code"] == -32600
        peak = max(peak, _rss(gw.process.pid))
    assert peak - baseline < 100 * len(payload), (baseline, peak)
    # Far under the bar in practice: a few copies of one request, not of all twenty.
    assert peak - baseline < 20 * len(payload), (baseline, peak)


def _sleep(request_id: int, ms: int) -> dict[str, Any]:
    params = {"name": "fx_sleep", "arguments": {"ms": ms}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def _echo(request_id: int) -> dict[str, Any]:
    params = {"name": "fx_echo", "arguments": {"text": f"b{request_id}"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_messages_work_counts_against_its_client_until_answered(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with sse_client(http, gateway) as greedy, sse_client(http, gateway) as other:
        # Six slow calls against a limit of four: all accepted (202), two refused on the stream.
        accepted = await asyncio.gather(*(greedy.post(_sleep(i, 1500)) for i in range(6)))
        assert [r.status for r in accepted] == [202] * 6
        # Meanwhile, another client's calls are neither refused nor queued behind them.
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(other.post(_echo(100 + i)) for i in range(2)))
        for i in range(2):
            echoed = await other.answer(100 + i, timeout=1.0)
            assert echoed["result"]["content"][0]["text"] == f"b{100 + i}"
        assert asyncio.get_running_loop().time() - started < 1.0
        refused = [await greedy.answer(i) for i in range(6)]
        errors = [a for a in refused if "error" in a]
        assert len(errors) == 2, refused
        for error in errors:
            assert error["error"]["code"] == -31007
            assert error["error"]["data"] == {"source": "gateway", "retryAfter": 1}
        assert sum(1 for a in refused if "result" in a) == 4
        # Answered work frees its slots: the same client is served again.
        again = await greedy.post(_echo(50))
        assert again.status == 202 and "result" in await greedy.answer(50)


async def test_a_closed_sse_sessions_work_is_cancelled(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with sse_client(http, gateway) as leaving:
        for i in range(4):
            assert (await leaving.post(_sleep(i, 60_000))).status == 202
    # The backend takes six at a time: four abandoned calls still running would refuse most of
    # these. Bounded wait for the gateway to see the stream close.
    async with sse_client(http, gateway) as b, sse_client(http, gateway) as c:
        codes: list[int] = []
        for attempt in range(50):
            ids = [1000 + attempt * 10 + i for i in range(3)]
            await asyncio.gather(*(b.post(_sleep(i, 200)) for i in ids))
            await asyncio.gather(*(c.post(_sleep(i, 200)) for i in ids))
            answers = [await b.answer(i) for i in ids] + [await c.answer(i) for i in ids]
            codes = [a.get("error", {}).get("code", 0) for a in answers]
            if codes == [0] * 6:
                break
        assert codes == [0] * 6


def _post_whole_body_then_read(gw: Gateway, body: bytes | Iterator[bytes]) -> tuple[int, Any]:
    """What a client that writes its entire request before reading gets (http.client does)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        conn.request(
            "POST", "/mcp", body=body, headers=headers, encode_chunked=not isinstance(body, bytes)
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_a_client_sending_an_oversized_body_in_one_go_reads_the_413(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory({"servers": {"fx": stdio_fixture("crashy")}})
    five_mib = (
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"y" * (5 << 20) + b'"}}'
    )
    status, answer = _post_whole_body_then_read(gw, five_mib)
    assert (status, answer["error"]["code"]) == (413, -32600)
    chunks = (five_mib[i : i + 65536] for i in range(0, len(five_mib), 65536))
    status, answer = _post_whole_body_then_read(gw, chunks)
    assert (status, answer["error"]["code"]) == (413, -32600)


async def test_an_endless_oversized_body_is_cut_off(gateway: Gateway) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write((_head(gateway, "Transfer-Encoding: chunked\r\n") + "\r\n").encode())
    chunk = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    sent = 0
    cut_off = False
    started = asyncio.get_running_loop().time()
    try:
        # The drain gives up after its byte or time budget; 10 s bounds the test.
        while asyncio.get_running_loop().time() - started < 10:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(chunk)
    except ConnectionError:
        cut_off = True
    finally:
        writer.close()
    assert cut_off
    # Cut off long before the client would stop: a bounded few times the 64 KiB limit, plus
    # what the kernel buffers on both ends.
    assert sent < 64 * 1024 * 1024


async def test_a_client_that_stops_reading_its_stream_never_stalls_the_backend(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    # A 2026-07-28 call whose progress turns its answer into a stream, from a client that never
    # reads: 16 MiB of progress from the shared backend, far past any socket buffer.
    params = {
        "name": "fx_flood",
        "arguments": {"count": 2000, "size": 8192},
        "_meta": {**MODERN_META, "progressToken": "flood"},
    }
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"MCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\nMcp-Name: fx_flood\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    _reader, stalled = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        stalled.write(head.encode() + body.encode())
        await stalled.drain()
        # Another client of the same backend keeps being served promptly, again and again.
        other = await RawClient(gateway.url, http).open()
        for i in range(5):
            echoed = await asyncio.wait_for(
                other.result("tools/call", {"name": "fx_echo", "arguments": {"text": f"e{i}"}}),
                5,
            )
            assert echoed["content"][0]["text"] == f"e{i}"
    finally:
        stalled.close()
