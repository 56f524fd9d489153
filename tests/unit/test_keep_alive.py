"""The listener's keep-alive timeout, kept with one timer per connection: an idle connection is
closed once it has been idle for the timeout, never while a request is in hand or sooner after
its last answer, and one client's connection is judged on its own use, not another's. Through
uvicorn with the listener's own protocol over real sockets; the timeout is short, and every
wait is bounded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.listener import serving

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5
"""The keep-alive timeout the listener runs with here, in seconds."""


async def answer_path(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/slow":
        await asyncio.sleep(TIMEOUT * 2)  # the work itself outlasts the timeout
    body = scope["path"].encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: bytes) -> None:
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert await asyncio.wait_for(reader.readexactly(len(path)), 5) == path


async def closed_after(reader: asyncio.StreamReader, since: float) -> float:
    """Seconds from `since` until the server closed the connection (bounded)."""
    assert await asyncio.wait_for(reader.read(), TIMEOUT * 10) == b""
    return time.monotonic() - since


async def test_an_idle_connection_is_closed_once_the_timeout_has_passed() -> None:
    async with serving(answer_path, timeout_keep_alive=TIMEOUT) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await ask(reader, writer, b"/one")
        idle = await closed_after(reader, time.monotonic())
        assert TIMEOUT * 0.9 <= idle < TIMEOUT * 4
        writer.close()


async def test_a_connection_in_use_past_the_timeout_stays_open_until_idle_that_long() -> None:
    async with serving(answer_path, timeout_keep_alive=TIMEOUT) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        n = 0
        # Requests a fraction of the timeout apart, for three timeouts in all: the one timer
        # set after the first answer fires while the connection is in use, and waits on.
        while time.monotonic() - started < TIMEOUT * 3 and n < 50:
            await ask(reader, writer, b"/%d" % n)
            n += 1
            await asyncio.sleep(TIMEOUT / 4)
        last = time.monotonic() - TIMEOUT / 4
        assert n >= 8
        idle = await closed_after(reader, last)
        assert TIMEOUT * 0.9 <= idle < TIMEOUT * 4
        writer.close()


async def test_a_request_served_longer_than_the_timeout_is_answered_on_its_connection() -> None:
    async with serving(answer_path, timeout_keep_alive=TIMEOUT) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await ask(reader, writer, b"/first")
        # The timer set after the first answer falls due while /slow is being served.
        await ask(reader, writer, b"/slow")
        await ask(reader, writer, b"/after")
        writer.close()


async def test_one_clients_use_keeps_no_other_connection_open() -> None:
    async with serving(answer_path, timeout_keep_alive=TIMEOUT) as port:
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        await ask(idle_r, idle_w, b"/idle")
        idle_since = time.monotonic()
        closing = asyncio.create_task(closed_after(idle_r, idle_since))
        n = 0
        while not closing.done() and n < 50:
            await ask(busy_r, busy_w, b"/busy")
            n += 1
            await asyncio.sleep(TIMEOUT / 5)
        idle = await closing
        assert TIMEOUT * 0.9 <= idle < TIMEOUT * 4
        # The busy one was answered throughout and is still open.
        await ask(busy_r, busy_w, b"/still")
        busy_w.close()
        idle_w.close()
