"""What is recorded about an answered request once its answer is out.

An access record (with the request's metrics and span) was made in line, and so stood between
the backend's answer and the client's: the reply waited for its own bookkeeping (about 13 µs
of a 64 KiB call at c=1, and more under load, where making records one after another in one
callback also costs less than interleaved with the work of requests: bench/README.md).
Queued here, they are made in the event loop's next pass, after the face wrote the reply,
everything queued in one pass by one loop callback. A histogram's count alone is made in
line: a loop callback per call would cost more than the count.

What is queued must not depend on when it runs: values are taken when the reply comes back
(its latency, its outcome) and passed along, not read later.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any


class Settling:
    __slots__ = ("_loop", "_pending")

    def __init__(self) -> None:
        self._pending: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop a `settle` is scheduled on; None: none is."""

    def add(self, fn: Callable[..., None], *args: Any) -> None:
        """`fn(*args)` in the loop's next pass (with everything else queued by then)."""
        self._pending.append((fn, args))
        loop = self._loop
        if loop is None or loop.is_closed():  # closed: its callback will never run
            loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.settle)

    def settle(self) -> None:
        """Run everything queued, now: the loop's callback, and for whoever cannot wait a pass
        (a test reading a record, a process about to exit)."""
        self._loop = None
        pending = self._pending
        while pending:
            fn, args = pending.popleft()
            fn(*args)


settling = Settling()
