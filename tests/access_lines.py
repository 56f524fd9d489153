"""An in-memory log stream for tests that read access records in the same process."""

from __future__ import annotations

import io

from switchyard.observability.logging import access_log


class DrainedStream(io.StringIO):
    """A log stream whose text, when read, includes the access records still queued: what a
    reader of the log file sees once the gateway has flushed (at most `FLUSH_S` later)."""

    def getvalue(self) -> str:
        access_log.drain()
        return super().getvalue()
