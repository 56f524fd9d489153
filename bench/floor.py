"""The floor: the cheapest useful Python HTTP hop in front of an MCP Streamable HTTP backend.

A raw ASGI app on uvicorn (uvloop + httptools) that forwards each POST/DELETE body, byte for
byte, to the backend through ONE pooled aiohttp ClientSession and returns the buffered body.
Forwarded upstream: content-type, accept and every ``mcp-*`` header (session id, protocol
version, method, name). Returned downstream: status, content-type and mcp-session-id.
No JSON parsing, no MCP logic. GET is answered 405, which MCP clients must tolerate.
Any gateway pays at least this per call; bench/run.py reports Switchyard relative to it.

  python bench/floor.py --backend http://127.0.0.1:9100/mcp --port 9300
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import uvicorn

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FORWARD = (b"content-type", b"accept")
RETURN = ("content-type", "mcp-session-id")


class Floor:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.http: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.forward(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.http = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256),
                    timeout=aiohttp.ClientTimeout(total=60),
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent",),
                )
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.http is not None:
                    await self.http.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def forward(self, scope: Message, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        if method not in ("POST", "DELETE") or self.http is None:
            await respond(send, 405, [(b"allow", b"POST, DELETE")], b"")
            return
        chunks: list[bytes] = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in FORWARD or k.startswith(b"mcp-")
        }
        try:
            async with self.http.request(
                method, self.backend, data=b"".join(chunks), headers=headers
            ) as r:
                body = await r.read()
                out = [(k.encode(), r.headers[k].encode()) for k in RETURN if k in r.headers]
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            await respond(send, 502, [(b"content-type", b"text/plain")], repr(e).encode())
            return
        await respond(send, status, out, body)


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", required=True, help="backend MCP URL (loopback)")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(
        Floor(args.backend),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=False,  # as Switchyard runs by default: no forwarding-header middleware
    )


if __name__ == "__main__":
    main()
