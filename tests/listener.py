"""uvicorn with the listener's own protocol (`guarded_protocol`) on a loopback socket, for
tests of what the HTTP layer does on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvicorn

from switchyard.downstream.http import HttpSettings, guarded_protocol

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(app: App, **config: Any) -> AsyncIterator[int]:
    """Serve `app` until the block ends; yields the port. `config`: more `uvicorn.Config`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http=guarded_protocol(HttpSettings()),
            lifespan="off",
            log_level="warning",
            **config,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # The socket listens already: a client's connect waits in its backlog until uvicorn
        # accepts, so nothing needs to wait for the server to start.
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
