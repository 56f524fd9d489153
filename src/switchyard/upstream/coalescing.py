"""Identical requests in flight at the same moment share one upstream call.

One `SingleFlight` belongs to one backend; the key a caller passes decides who may share, so it
must hold everything that changes the answer: the method and its exact parameters, and, when
the answer depends on who asks (a caller's own credential, a private scope), the principal.
Only requests on a backend's shared connection are coalesced: an isolated session's answer is
its owner's alone, so such requests never come here.

A waiter that is cancelled leaves the shared call running for the others; the call is
cancelled only when nobody waits for it any more.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}
        self.shared = 0
        """Requests answered by another's upstream call (for metrics)."""

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        flight = self._flights.get(key)
        if flight is None:
            task: asyncio.Task[V] = asyncio.ensure_future(call())
            flight = _Flight(task)
            self._flights[key] = flight
            task.add_done_callback(functools.partial(self._land, key, flight))
        else:
            self.shared += 1
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.task.done() and not flight.task.cancelled():
                raise
            if flight.waiters == 1:
                flight.task.cancel()
            raise
        finally:
            flight.waiters -= 1

    def _land(self, key: K, flight: _Flight[V], _task: asyncio.Task[V]) -> None:
        # Only the flight that finished leaves: a later one under the same key stays.
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved: each waiter re-raises it itself
