"""The body of an HTTP answer from a backend, an authorization server or a JWKS endpoint,
read within a limit that counts decoded bytes.

Requests ask for `identity` and never let aiohttp decompress: it inflates each network chunk
whole, so 49 KB of gzip becomes 48 MiB in memory before any limit is looked at. A server that
compresses anyway is inflated here, at most `STEP` bytes at a time, and the limit applies to
what comes out.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Final, Protocol

from switchyard.wire.sse import TooLarge

STEP: Final = 65536
ACCEPT_ENCODING: Final = "identity"
"""The `Accept-Encoding` every upstream request sends."""
# zlib's "detect a gzip or zlib header" window.
_AUTO_HEADER: Final = 32 + zlib.MAX_WBITS


class _Content(Protocol):
    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class Answer(Protocol):
    """An HTTP answer as aiohttp's client and `http_client` both give it."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def content(self) -> _Content: ...
    async def read(self) -> bytes: ...


class Decoder:
    """Undoes one response's `Content-Encoding`, a bounded step at a time."""

    def __init__(self, content_encoding: str) -> None:
        encoding = content_encoding.strip().lower()
        self._inflate: zlib._Decompress | None
        if encoding in ("", "identity"):
            self._inflate = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = zlib.decompressobj(_AUTO_HEADER)
        else:
            raise ValueError(f"unsupported Content-Encoding {content_encoding!r}")

    @property
    def identity(self) -> bool:
        return self._inflate is None

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """Decoded bytes of `chunk`, in pieces of at most `STEP` bytes (identity: as is)."""
        if self._inflate is None:
            if chunk:
                yield chunk
            return
        data = chunk
        try:
            while data:
                out = self._inflate.decompress(data, STEP)
                if out:
                    yield out
                data = self._inflate.unconsumed_tail
        except zlib.error as exc:
            raise ValueError(f"corrupt compressed body: {exc}") from None


async def chunks(resp: Answer) -> AsyncIterator[bytes]:
    """The decoded body as it arrives. The request must have been made with
    `auto_decompress=False`, or the inflating already happened, unbounded."""
    decoder = Decoder(resp.headers.get("Content-Encoding", ""))
    async for raw in resp.content.iter_chunked(STEP):
        for piece in decoder.feed(raw):
            yield piece


async def read(resp: Answer, limit: int) -> bytes:
    """The whole decoded body, or `TooLarge` as soon as it passes `limit` bytes."""
    encoded = resp.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")
    declared = resp.content_length
    if declared is not None and declared > limit and not encoded:
        raise TooLarge(f"response of {declared} bytes exceeds the {limit}-byte limit")
    if declared is not None and not encoded:
        # The common case: uncompressed, of a known length within the limit. aiohttp reads
        # exactly that many bytes (nothing is inflated), in one buffer.
        return await resp.read()
    body = bytearray()
    async for piece in chunks(resp):
        body += piece
        if len(body) > limit:
            raise TooLarge(f"response exceeds the {limit}-byte limit")
    return bytes(body)
