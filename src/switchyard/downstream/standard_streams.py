"""The process's stdin/stdout as asyncio streams, whatever they are connected to.

A pipe or socket gets the event loop's pipe transports. Anything else (a terminal, /dev/null,
a regular file) cannot be watched by epoll, and a terminal must not be switched to
non-blocking mode under the shell that owns it: those are read and written by a thread.
A closed descriptor 0, 1 or 2 would be handed to the next file opened (a backend's pipe), which
the event loop's process spawning refuses with an abort: `reserve` fills each with /dev/null
first, and remembers which were closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
from typing import Protocol

_closed: set[int] = set()
READ_CHUNK = 65536


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


def reserve() -> None:
    """Point each closed standard descriptor at /dev/null (see the module docstring)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # a lower one was free: that cannot be, they are checked in order
                os.dup2(opened, fd)
                os.close(opened)
            _closed.add(fd)


def was_closed(fd: int) -> bool:
    return fd in _closed


def is_terminal(fd: int) -> bool:
    return fd not in _closed and os.isatty(fd)


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def open_streams(limit: int) -> tuple[asyncio.StreamReader, Sink]:
    """A reader of stdin (lines up to `limit` bytes) and a writer of stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    if _pollable(0):
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", closefd=False)
        )
    else:
        threading.Thread(
            target=_pump, args=(loop, reader), name="stdin-reader", daemon=True
        ).start()
    sink: Sink
    if _pollable(1):
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", closefd=False)
        )
        sink = asyncio.StreamWriter(transport, protocol, reader, loop)
    else:
        sink = _ThreadSink(1)
    return reader, sink


def _pump(loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader) -> None:
    """Blocking reads of stdin, handed to the loop; EOF (or a read error) ends the stream."""
    while True:
        try:
            chunk = os.read(0, READ_CHUNK)
        except OSError:
            chunk = b""
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody listens
            if not chunk:
                loop.call_soon_threadsafe(reader.feed_eof)
                return
            loop.call_soon_threadsafe(reader.feed_data, chunk)


class _ThreadSink:
    """Writes stdout from a worker thread, so a slow terminal never blocks the loop."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = bytearray()
        self._lock = asyncio.Lock()

    def write(self, data: bytes) -> None:
        self._pending += data

    async def drain(self) -> None:
        async with self._lock:
            if self._pending:
                data = bytes(self._pending)
                self._pending.clear()
                await asyncio.to_thread(_write_all, self._fd, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
