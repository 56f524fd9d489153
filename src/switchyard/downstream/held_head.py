"""A response head held back until its body goes out with it.

uvicorn writes a response's status line and headers the moment the app starts the response,
and the body in a second write. On a keep-alive connection that is two TCP segments per
answer and, as often as not, two wake-ups of the client: one to parse a head with nothing
after it, one for the body. Holding the head until the body's first write (both then leave in
one `writelines`, one segment when they fit) saves the client that wake-up and the listener a
system call. A head whose body does not follow in the same step of the event loop (an event
stream opened before its first event) leaves at the end of that step: held, never delayed
by more than one pass of the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

# Every response head uvicorn writes starts so; a body that happens to start so is held
# the same way, which changes when it leaves (by one pass of the loop), never what leaves.
_HEAD: Final = b"HTTP/1.1 "


class HeldHeadTransport:
    """Wraps a connection's transport for the HTTP protocol that writes through it."""

    __slots__ = ("_flush", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._release()
            self._transport.writelines((held, data))
        elif isinstance(data, bytes) and data.startswith(_HEAD):
            self._held = data
            self._flush = self._loop.call_soon(self._write_held)
        else:
            self._transport.write(data)

    def writelines(self, data: Any) -> None:
        self._write_held()
        self._transport.writelines(data)

    def write_eof(self) -> None:
        self._write_held()
        self._transport.write_eof()

    def close(self) -> None:
        # A head written just before a close (an error answer) still goes out, then the close.
        self._write_held()
        self._transport.close()

    def abort(self) -> None:
        self._release()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (len(held) if held is not None else 0)

    def __getattr__(self, name: str) -> Any:
        # Anything else a protocol may ask of its transport, as the transport answers it.
        return getattr(self._transport, name)

    def _write_held(self) -> None:
        held = self._held
        if held is not None:
            self._release()
            if not self._transport.is_closing():
                self._transport.write(held)

    def _release(self) -> None:
        self._held = None
        flush = self._flush
        if flush is not None:
            self._flush = None
            flush.cancel()
