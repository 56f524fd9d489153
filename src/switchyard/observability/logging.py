"""Logging setup: one line per record on stderr or a file, cheap enough for a line per request.

A write per record costs a system call; under load that was a measurable share of a request's
CPU. Records are buffered and flushed every FLUSH_S, and at once for warnings and errors so a
failure is never stuck in a buffer.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
from typing import Final, TextIO

FLUSH_S: Final = 0.5
BUFFER_BYTES: Final = 1 << 16


class LineFormatter(logging.Formatter):
    """`2026-11-21 13:24:30,658 INFO name: message`, with the date part built once a second."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        message = record.getMessage()
        line = f"{self._stamp},{int(record.msecs):03d} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class BufferedHandler(logging.StreamHandler[TextIO]):
    def flush(self) -> None:
        return  # the flusher thread and warnings flush; see module docstring

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.flush_now()

    def flush_now(self) -> None:
        with self.lock or threading.Lock(), contextlib.suppress(OSError, ValueError):
            self.stream.flush()


class AccessLog:
    """One line per request, written straight to the log stream.

    An access log line built through `logging` costs a LogRecord, a handler chain and a
    formatter per request; this writes the same line format for a fraction of that. Disabled
    (free) until `setup` runs with the `switchyard.requests` logger at INFO or below.
    """

    NAME: Final = "switchyard.requests"

    def __init__(self) -> None:
        self.enabled = False
        self._handler: BufferedHandler | None = None
        self._formatter = LineFormatter()

    def attach(self, handler: BufferedHandler) -> None:
        self._handler = handler
        self.enabled = logging.getLogger(self.NAME).isEnabledFor(logging.INFO)

    def write(self, message: str) -> None:
        handler = self._handler
        if handler is None:
            return
        now = time.time()
        second = int(now)
        fmt = self._formatter
        if second != fmt._second:
            fmt._second = second
            fmt._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        line = f"{fmt._stamp},{int((now - second) * 1000):03d} INFO {self.NAME}: {message}\n"
        with handler.lock or threading.Lock(), contextlib.suppress(OSError, ValueError):
            handler.stream.write(line)


access_log = AccessLog()


def setup(level: str, path: str | None) -> BufferedHandler:
    """Route every logger to one buffered handler at `level` (stderr unless `path`)."""
    # The stream lives as long as the process: no context manager can own it.
    target: str | int = path if path else sys.stderr.fileno()
    stream: TextIO = open(  # noqa: SIM115
        target, "a", encoding="utf-8", buffering=BUFFER_BYTES, closefd=bool(path)
    )
    handler = BufferedHandler(stream)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    def flusher() -> None:
        while True:
            time.sleep(FLUSH_S)
            handler.flush_now()

    threading.Thread(target=flusher, name="log-flusher", daemon=True).start()
    access_log.attach(handler)
    atexit.register(handler.flush_now)
    return handler
