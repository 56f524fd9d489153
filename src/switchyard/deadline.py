"""A deadline for one request, that may be pushed back: a single timer that cancels the
request's task, turned into `TimeoutError` on the way out."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any


class Deadline:
    """A request's timeout that each progress notification pushes back, up to a hard limit.

    One timer handle that cancels the request's task, counted out again on the way out as
    `asyncio.timeout` does (a cancellation of the task from elsewhere stays a cancellation).
    `asyncio.timeout` is the same idea behind a state machine and two objects per request,
    a visible share of a small call's CPU; this is the part a request uses.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_hard", "_loop", "_task", "timeout")

    def __init__(self, timeout: float, hard_max: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.timeout = timeout
        self._hard = self._loop.time() + max(hard_max, timeout)
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False
        self._cancelling = 0

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task(self._loop)  # with the loop: no second `getpid`
        if task is None:
            raise RuntimeError("Deadline should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = self._loop.call_at(self._loop.time() + self.timeout, self._fire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
            self._handle = None
        if self._fired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def _fire(self) -> None:
        self._handle = None
        self._fired = True
        assert self._task is not None
        self._task.cancel()

    def extend(self) -> None:
        """Push the deadline back by `timeout` from now, never past the hard limit. Nothing
        once it fired or the request is over."""
        handle = self._handle
        if handle is None:
            return
        handle.cancel()
        when = min(self._loop.time() + self.timeout, self._hard)
        self._handle = self._loop.call_at(when, self._fire)
