"""`Mcp-Param-*` headers go to 2026-07-28 HTTP backends only, and only intact."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from switchyard.protocol import codes
from switchyard.protocol.versions import Era
from switchyard.upstream.connection import ServerFacts
from switchyard.upstream.http import HttpSettings, StreamableHttpConnection
from switchyard.upstream.outbound import Outbound
from switchyard.wire import frame

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        msg = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": msg["id"], "result": {}})


@pytest.fixture
async def backend() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/mcp", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}/mcp"
    try:
        yield recorder
    finally:
        await runner.cleanup()


def connection(url: str, era: Era) -> StreamableHttpConnection:
    conn = StreamableHttpConnection("web", HttpSettings(url=url), lambda m, p: None)
    version = "2026-07-28" if era is Era.MODERN else "2025-11-25"
    conn.facts = ServerFacts(era=era, version=version)
    return conn


PARAMS = (("Mcp-Param-Region", "eu-west"), ("Mcp-Param-Query", "=?base64?aMOpbGxv?="))


def call(extra: tuple[tuple[str, str], ...]) -> Outbound:
    return Outbound("tools/call", b'{"name":"t"}', name="t", extra_headers=extra, timeout_s=5)


async def test_modern_requests_carry_the_param_headers(backend: Recorder) -> None:
    conn = connection(backend.url, Era.MODERN)
    try:
        reply = await conn.request(call(PARAMS))
    finally:
        await conn.aclose()
    assert reply.result == b"{}"
    [headers] = backend.headers
    assert headers["mcp-param-region"] == "eu-west"
    assert headers["mcp-param-query"] == "=?base64?aMOpbGxv?="
    assert headers["mcp-name"] == "t"


async def test_legacy_requests_never_carry_them(backend: Recorder) -> None:
    conn = connection(backend.url, Era.LEGACY)
    try:
        reply = await conn.request(call(PARAMS))
    finally:
        await conn.aclose()
    assert reply.result == b"{}"
    [headers] = backend.headers
    assert not [k for k in headers if k.startswith("mcp-param-")]


@pytest.mark.parametrize(
    "extra",
    [
        (("Mcp-Param-Q", "a\r\nX-Injected: 1"),),
        (("Mcp-Param-Q", "a\nb"),),
        (("Mcp-Param-Q", "a\rb"),),
        (("Mcp-Param-Q", "caf\u00e9"),),
        (("Authorization", "Bearer stolen"),),
        (("Mcp-Param-Q\r\nX: 1", "a"),),
    ],
)
async def test_a_header_that_would_not_travel_intact_is_refused_not_sent(
    backend: Recorder, extra: tuple[tuple[str, str], ...]
) -> None:
    conn = connection(backend.url, Era.MODERN)
    try:
        reply = await conn.request(call(extra))
    finally:
        await conn.aclose()
    assert reply.error is not None
    error = frame.decode_error(reply.error)
    assert error.code == codes.INVALID_PARAMS
    assert backend.headers == []
