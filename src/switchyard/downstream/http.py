"""The HTTP listener: one raw ASGI app for every HTTP face, its guards and health endpoints."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Final

from switchyard.downstream.asgi import Receive, Scope, Send, respond, respond_json
from switchyard.downstream.guard import Guard
from switchyard.downstream.legacy_sse import LegacySseEndpoint
from switchyard.downstream.streamable_http import StreamableHttpEndpoint
from switchyard.gateway import Gateway
from switchyard.wire import frame

log = logging.getLogger("switchyard.http")

MCP_PATH: Final = "/mcp"
SSE_PATH: Final = "/sse"
MESSAGES_PATH: Final = "/messages"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    extra: dict[str, str] = field(default_factory=dict)


class HttpApp:
    def __init__(self, gateway: Gateway, settings: HttpSettings) -> None:
        self.gateway = gateway
        self.guard = Guard.for_bind(
            settings.host, settings.port, settings.allowed_origins, settings.allowed_hosts
        )
        self.shutting_down = asyncio.Event()
        self.mcp = StreamableHttpEndpoint(gateway, settings.max_body_bytes, self.shutting_down)
        self.sse = LegacySseEndpoint(
            gateway, settings.max_body_bytes, self.shutting_down, MESSAGES_PATH
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        refusal = self.guard.check(scope["headers"])
        if refusal:
            reason = (
                "Forbidden: Origin not allowed"
                if refusal == 403
                else "Misdirected Request: Host not allowed"
            )
            await respond_json(
                send, refusal, frame.response_bytes(b"null", frame.error_reply(-32600, reason))
            )
            return
        if path == MCP_PATH or path == MCP_PATH + "/":
            await self.mcp(scope, receive, send)
        elif path == MESSAGES_PATH or path == MESSAGES_PATH + "/":
            await self.sse.message(scope, receive, send)
        elif path == SSE_PATH:
            await self.sse.stream(scope, receive, send)
        elif path == "/healthz":
            await respond_json(send, 200, b'{"status":"ok"}')
        elif path == "/readyz":
            ready, body = self.gateway.readiness()
            await respond_json(send, 200 if ready else 503, frame.encode(body))
        else:
            await respond(send, 404, b"Not Found", [(b"content-type", b"text/plain")])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as exc:
                    log.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutting_down.set()
                await self.gateway.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def run(app: HttpApp, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully and return (exit status 0)."""
    import signal
    from types import FrameType

    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn re-raises the stop signal after a graceful shutdown, turning a clean stop into
        # a death by signal; a supervisor should see a clean stop as success.
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=5,
            # Many small keep-alive requests are the normal MCP pattern.
            timeout_keep_alive=30,
        )
    ).run()
