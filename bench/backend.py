"""Benchmark backend: an official-SDK MCP server (mcp 2.x) over Streamable HTTP, JSON responses.

Tools (plain ``def``, so the SDK runs them on a worker thread, as most SDK servers do):

  echo(text)    returns ``text`` unchanged
  payload(kib)  returns ``kib`` KiB of ASCII text

``structured_output=False`` keeps each result at one TextContent (no structuredContent copy).
Served at ``http://127.0.0.1:PORT/mcp`` on uvicorn with uvloop and httptools; it answers
both protocol eras (legacy sessions and 2026-07-28 single exchanges). With ``--stdio`` the same
server speaks over stdin/stdout instead, as a spawned backend (the stdio load of bench/run.py).

  python bench/backend.py --port 9100
  python bench/backend.py --stdio
"""

from __future__ import annotations

import argparse
import logging

import uvicorn
from mcp.server.mcpserver import MCPServer

_KIB = b"0123456789abcdef" * 64
MAX_KIB = 16 * 1024


def build_server() -> MCPServer:
    server = MCPServer(name="bench-backend", version="1.0.0", log_level="WARNING")

    @server.tool(description="Return the given text unchanged.", structured_output=False)
    def echo(text: str) -> str:
        return text

    @server.tool(description="Return kib KiB of ASCII text.", structured_output=False)
    def payload(kib: int) -> str:
        return (_KIB * max(0, min(kib, MAX_KIB))).decode()

    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int)
    ap.add_argument("--stdio", action="store_true", help="serve over stdin/stdout")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.stdio:
        build_server().run("stdio")
        return
    if args.port is None:
        ap.error("--port is required (or --stdio)")
    app = build_server().streamable_http_app(json_response=True, host="127.0.0.1")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
