"""Task routes (2025-11-25 tasks): which backend holds a caller's task, and who hears of it.

A backend chooses its task ids, and two backends (or two isolated sessions of one) may both say
`task-1`: a route is keyed by (caller, task id) for the caller's own requests, and a status
notification reaches a caller only when its backend and upstream owner identify exactly one
route. Routes expire, and each caller holds a bounded share of the table.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Protocol

from switchyard.call import Identity
from switchyard.delivery import Delivery, Push, Recipient

TASK_TTL_S: Final = 24 * 3600.0
"""A route outlives no task a client could still ask about; refreshed whenever it is used."""
MAX_TASKS_PER_CALLER: Final = 1000
MAX_TASKS: Final = 100_000


@dataclass(slots=True)
class TaskRoute:
    caller: str
    task_id: str
    backend: str
    owner: str | None
    """The upstream owner (isolated session key) the task was created through, if any."""
    push: Push | None
    expires: float
    identity: Identity | None = None
    """The caller's identity, so a status is judged for it on delivery."""


class TaskStore(Protocol):
    """Where task routes live: in memory today; a shared store lets any replica route them."""

    def remember(self, route: TaskRoute) -> None: ...

    def get(self, caller: str, task_id: str) -> TaskRoute | None: ...

    def of(self, caller: str) -> list[TaskRoute]: ...

    def matching(self, backend: str, task_id: str) -> list[TaskRoute]: ...

    def forget_caller(self, caller: str) -> None: ...


class MemoryTaskStore:
    def __init__(self, per_caller: int = MAX_TASKS_PER_CALLER, total: int = MAX_TASKS) -> None:
        self._per_caller = per_caller
        self._total = total
        self._routes: OrderedDict[tuple[str, str], TaskRoute] = OrderedDict()
        self._by_caller: dict[str, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def remember(self, route: TaskRoute) -> None:
        self._expire()
        mine = self._by_caller.setdefault(route.caller, OrderedDict())
        # A caller at its share forgets its own oldest task, never anyone else's.
        while len(mine) >= self._per_caller:
            self._drop((route.caller, next(iter(mine))))
        while len(self._routes) >= self._total:
            self._drop(next(iter(self._routes)))
        self._routes[(route.caller, route.task_id)] = route
        self._by_caller.setdefault(route.caller, mine)[route.task_id] = None

    def get(self, caller: str, task_id: str) -> TaskRoute | None:
        route = self._routes.get((caller, task_id))
        if route is None or route.expires < time.monotonic():
            return None
        route.expires = time.monotonic() + TASK_TTL_S
        return route

    def of(self, caller: str) -> list[TaskRoute]:
        now = time.monotonic()
        return [
            r
            for task_id in self._by_caller.get(caller, ())
            if (r := self._routes[(caller, task_id)]).expires >= now
        ]

    def matching(self, backend: str, task_id: str) -> list[TaskRoute]:
        now = time.monotonic()
        return [
            r
            for r in self._routes.values()
            if r.task_id == task_id and r.backend == backend and r.expires >= now
        ]

    def forget_caller(self, caller: str) -> None:
        for task_id in list(self._by_caller.get(caller, ())):
            self._drop((caller, task_id))

    def _drop(self, key: tuple[str, str]) -> None:
        route = self._routes.pop(key, None)
        if route is None:
            return
        mine = self._by_caller.get(route.caller)
        if mine is not None:
            mine.pop(route.task_id, None)
            if not mine:
                del self._by_caller[route.caller]

    def _expire(self) -> None:
        now = time.monotonic()
        while self._routes:
            key, oldest = next(iter(self._routes.items()))
            if oldest.expires >= now:
                return
            self._drop(key)


class TaskRoutes:
    def __init__(self, store: TaskStore | None = None, delivery: Delivery | None = None) -> None:
        self.store: TaskStore = store if store is not None else MemoryTaskStore()
        self.delivery = delivery if delivery is not None else Delivery()

    def remember(
        self,
        recipient: Recipient,
        task_id: str,
        backend: str,
        owner: str | None,
        push: Push | None,
    ) -> None:
        self.store.remember(
            TaskRoute(
                recipient.key,
                task_id,
                backend,
                owner,
                push,
                time.monotonic() + TASK_TTL_S,
                recipient.identity,
            )
        )

    def backend_of(self, caller: str, task_id: str) -> str | None:
        route = self.store.get(caller, task_id)
        return route.backend if route is not None else None

    def mine(self, caller: str) -> set[str]:
        return {r.task_id for r in self.store.of(caller)}

    def on_status(
        self, backend: str, task_id: str, owner: str | None, method: str, params: bytes | None
    ) -> bool:
        """Deliver a task status to the one caller it can be proven to belong to."""
        routes = self.store.matching(backend, task_id)
        if owner is not None:
            routes = [r for r in routes if r.owner == owner]
        if len(routes) != 1 or routes[0].push is None:
            self.delivery.unattributed(backend, method, "no single owner of that task")
            return False
        route = routes[0]
        assert route.push is not None
        recipient = Recipient(route.caller, route.identity)
        return self.delivery.push(route.push, recipient, backend, method, params)
