"""Server-Sent Events: an incremental parser and an event writer, shared by both directions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

KEEPALIVE: Final = b": keep-alive\n\n"


class TooLarge(ValueError):
    """A message over the configured size limit: refused before it is buffered whole."""


@dataclass(slots=True)
class Event:
    event: str = "message"
    data: bytes = b""
    id: str | None = None


def format_event(data: bytes, event: str | None = None, event_id: str | None = None) -> bytes:
    parts: list[bytes] = []
    if event_id is not None:
        parts.append(b"id: " + event_id.encode() + b"\n")
    if event is not None:
        parts.append(b"event: " + event.encode() + b"\n")
    if b"\n" in data or b"\r" in data:
        # One data line per line of the payload: a reader joins them back with LF.
        for line in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
            parts.append(b"data: " + line + b"\n")
        parts.append(b"\n")
    else:
        parts.append(b"data: " + data + b"\n\n")
    return b"".join(parts)


@dataclass(slots=True)
class Parser:
    """Feed bytes in any chunking; complete events come out in order."""

    max_event_bytes: int = 16 * 1024 * 1024
    _buffer: bytearray = field(default_factory=bytearray)
    _data: list[bytes] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _size: int = 0
    retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        while True:
            nl = self._buffer.find(b"\n")
            if nl < 0:
                if len(self._buffer) > self.max_event_bytes:
                    raise TooLarge("SSE line exceeds the size limit")
                return events
            line = bytes(self._buffer[:nl])
            del self._buffer[: nl + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data or self._event:
                    events.append(Event(self._event or "message", b"\n".join(self._data), self._id))
                self._data, self._event, self._size = [], "", 0
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._size += len(value)
                if self._size > self.max_event_bytes:
                    raise TooLarge("SSE event exceeds the size limit")
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id":
                self._id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self.retry_ms = int(value)  # the reconnection time the server asks for
