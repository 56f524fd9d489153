"""Rate-limit counters: what a call takes at admission and gives back when it ends.

One small interface, two stores: `MemoryLimitCounters` (this process alone) and `RedisCounters`
(storage/redis_counters.py, shared by every gateway process). A check is all or nothing: every
limit of every enforced check is judged first, and only if all of them admit the call does
anything get taken. Shadow checks are judged and taken on their own, and never refuse.

Limits, per check key (a rule and the subject it counts for):
- window: a sliding-window log. At most `max` cost units in any interval of `period_ms`; each
  admitted call is an entry (its time, its cost) that stops counting `period_ms` later. Exact
  at any instant, so a burst of concurrent calls gets exactly what is left, and the retry time
  is when enough entries expire. Memory: one entry per admitted call still in its window.
- concurrency: at most `max` calls at once; a slot is a lease, given back when the call ends
  (and, in Redis, expiring `lease_ms` after its holder stopped renewing it).
- calls: a daily budget of cost units, reset at 00:00 UTC.
- result_bytes: a daily budget of answer bytes, reset at 00:00 UTC. Admission reserves
  `reserve` bytes (refused if they are not left); the answer's real size is settled when it is
  known, all or nothing against the budget: an answer that does not fit is withheld.
"""

from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

WINDOW: Final = "window"
CONCURRENCY: Final = "concurrency"
CALLS: Final = "calls"
RESULT_BYTES: Final = "result_bytes"
KINDS: Final = (WINDOW, CONCURRENCY, CALLS, RESULT_BYTES)

DAY_MS: Final = 86_400_000
BUSY_RETRY_MS: Final = 1000
"""The retry hint when only calls in flight stand in the way: nobody knows when they end."""
SWEEP_EVERY: Final = 4096
"""Memory store: every this many admissions, forget counters that no longer count anything."""


class StoreUnavailable(Exception):
    """The counter store could not be asked (Redis down or too slow)."""


@dataclass(frozen=True, slots=True)
class Limit:
    kind: str
    max: int
    period_ms: int = 0
    """The window's length (window only)."""
    reserve: int = 0
    """Bytes reserved at admission (result_bytes only)."""
    label: str = ""
    """How the limit is named to clients: `1m`, `concurrency`, `daily-calls`, `daily-bytes`."""

    @property
    def slug(self) -> str:
        """The limit's part of a counter key: stable across restarts and rule reordering."""
        return f"w{self.period_ms}" if self.kind == WINDOW else self.kind


@dataclass(frozen=True, slots=True)
class Check:
    key: str
    """`<rule>:<subject>`: a rule name never holds `:`, so the first one splits it."""
    limits: tuple[Limit, ...]
    cost: int = 1
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    check: int
    """Index into the checks asked about."""
    limit: int
    """Index into that check's limits."""
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class Standing:
    """Where one limit stands after the decision: what is left and when more comes."""

    remaining: int
    reset_ms: int


@dataclass(slots=True)
class Ticket:
    """What an admitted call holds until it is settled."""

    id: str
    checks: tuple[Check, ...]
    taken: tuple[int, ...] = ()
    """The checks whose limits the call took (a shadow check that refused took nothing)."""
    settled: bool = False


@dataclass(slots=True)
class Verdict:
    admitted: bool
    refusals: list[Refusal] = field(default_factory=list)
    """Enforced limits that refused (all of them, not only the first)."""
    shadow_refusals: list[Refusal] = field(default_factory=list)
    standings: list[list[Standing]] = field(default_factory=list)
    """Per check, per limit."""
    ticket: Ticket | None = None

    @property
    def retry_after_ms(self) -> int:
        """When the call could be admitted at the earliest: every refusing limit must allow it."""
        return max((r.retry_after_ms for r in self.refusals), default=0)


@dataclass(slots=True)
class Settlement:
    withheld: bool
    """An enforced result-bytes budget has no room for the answer: it must not be delivered."""
    refusals: list[Refusal] = field(default_factory=list)
    shadow_refusals: list[Refusal] = field(default_factory=list)


class CounterStore(Protocol):
    name: str
    """`memory` or `redis`."""
    shared: bool
    """Whether other gateway processes count in the same counters."""

    async def acquire(self, checks: Sequence[Check]) -> Verdict:
        """Judge and (all or nothing) take the call's share of every limit."""
        ...

    async def settle(self, ticket: Ticket, result_bytes: int) -> Settlement:
        """Give back the call's concurrency slots and settle its result-bytes reservations."""
        ...

    async def close(self) -> None: ...


def new_ticket_id() -> str:
    return secrets.token_hex(8)


def demand(limit: Limit, cost: int) -> int:
    if limit.kind == CONCURRENCY:
        return 1
    if limit.kind == RESULT_BYTES:
        return limit.reserve
    return cost


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Window:
    __slots__ = ("entries", "period", "used")

    def __init__(self, period: int) -> None:
        self.entries: collections.deque[tuple[int, int]] = collections.deque()
        self.period = period
        self.used = 0

    def prune(self, now: int) -> None:
        entries = self.entries
        cutoff = now - self.period
        while entries and entries[0][0] <= cutoff:
            self.used -= entries.popleft()[1]

    def retry_after(self, now: int, need: int) -> int:
        """When `need` units will have left the window."""
        freed = 0
        for at, cost in self.entries:
            freed += cost
            if freed >= need:
                return max(1, at + self.period - now)
        return self.period

    def reset(self, now: int) -> int:
        return self.entries[0][0] + self.period - now if self.entries else 0


class _Budget:
    __slots__ = ("day", "reserved", "used")

    def __init__(self, day: int) -> None:
        self.day = day
        self.used = 0
        self.reserved = 0

    def roll(self, day: int) -> None:
        if self.day != day:
            self.day = day
            self.used = 0  # reservations outlive midnight: their calls are still running


class MemoryLimitCounters:
    """Counters of this process alone. Exact within the process (the event loop runs one
    decision at a time); several processes each count their own share."""

    name = "memory"
    shared = False

    def __init__(self, clock: Callable[[], int] = wall_ms) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self._slots: dict[tuple[str, str], int] = {}
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._reservations: dict[str, list[tuple[tuple[str, str], int]]] = {}
        self._admissions = 0

    def _budget(self, key: tuple[str, str], day: int) -> _Budget:
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = _Budget(day)
        budget.roll(day)
        return budget

    def _used(self, check: Check, limit: Limit, now: int, day: int) -> int:
        key = (check.key, limit.slug)
        if limit.kind == WINDOW:
            window = self._windows.get(key)
            if window is None:
                return 0
            window.prune(now)
            return window.used
        if limit.kind == CONCURRENCY:
            return self._slots.get(key, 0)
        budget = self._budgets.get(key)
        if budget is None:
            return 0
        budget.roll(day)
        return budget.used + budget.reserved

    def _retry(self, check: Check, limit: Limit, now: int, day: int, used: int) -> int:
        key = (check.key, limit.slug)
        if limit.kind == WINDOW:
            return self._windows[key].retry_after(now, used + check.cost - limit.max)
        if limit.kind == CONCURRENCY:
            return BUSY_RETRY_MS
        budget = self._budgets[key]
        if limit.kind == RESULT_BYTES and budget.used + limit.reserve <= limit.max:
            return BUSY_RETRY_MS  # only reservations of calls in flight are in the way
        return (day + 1) * DAY_MS - now

    def _refusals(self, index: int, check: Check, now: int, day: int) -> list[Refusal]:
        out = []
        for j, limit in enumerate(check.limits):
            used = self._used(check, limit, now, day)
            if used + demand(limit, check.cost) > limit.max:
                out.append(Refusal(index, j, self._retry(check, limit, now, day, used)))
        return out

    def _take(self, ticket: str, check: Check, now: int, day: int) -> None:
        for limit in check.limits:
            key = (check.key, limit.slug)
            if limit.kind == WINDOW:
                window = self._windows.get(key)
                if window is None:
                    window = self._windows[key] = _Window(limit.period_ms)
                window.entries.append((now, check.cost))
                window.used += check.cost
            elif limit.kind == CONCURRENCY:
                self._slots[key] = self._slots.get(key, 0) + 1
            elif limit.kind == CALLS:
                self._budget(key, day).used += check.cost
            else:
                self._budget(key, day).reserved += limit.reserve
                self._reservations.setdefault(ticket, []).append((key, limit.reserve))

    def _standing(self, check: Check, limit: Limit, now: int, day: int) -> Standing:
        left = max(0, limit.max - self._used(check, limit, now, day))
        if limit.kind == WINDOW:
            window = self._windows.get((check.key, limit.slug))
            return Standing(left, window.reset(now) if window is not None else 0)
        if limit.kind == CONCURRENCY:
            return Standing(left, 0)
        return Standing(left, (day + 1) * DAY_MS - now)

    async def acquire(self, checks: Sequence[Check]) -> Verdict:
        now = self._clock()
        day = now // DAY_MS
        verdict = Verdict(admitted=True)
        for i, check in enumerate(checks):
            if not check.shadow:
                verdict.refusals.extend(self._refusals(i, check, now, day))
        verdict.admitted = not verdict.refusals
        if verdict.admitted:
            ticket = Ticket(new_ticket_id(), tuple(checks))
            taken = []
            for i, check in enumerate(checks):
                if not check.shadow:
                    self._take(ticket.id, check, now, day)
                    taken.append(i)
            for i, check in enumerate(checks):
                if check.shadow:
                    refused = self._refusals(i, check, now, day)
                    verdict.shadow_refusals.extend(refused)
                    if not refused:
                        self._take(ticket.id, check, now, day)
                        taken.append(i)
            ticket.taken = tuple(taken)
            verdict.ticket = ticket
        verdict.standings = [
            [self._standing(check, limit, now, day) for limit in check.limits] for check in checks
        ]
        self._admissions += 1
        if self._admissions % SWEEP_EVERY == 0:
            self._sweep(now, day)
        return verdict

    async def settle(self, ticket: Ticket, result_bytes: int) -> Settlement:
        outcome = Settlement(withheld=False)
        if ticket.settled:
            return outcome
        ticket.settled = True
        now = self._clock()
        day = now // DAY_MS
        for key, amount in self._reservations.pop(ticket.id, []):
            self._budget(key, day).reserved -= amount
        charges: dict[bool, list[tuple[_Budget, int]]] = {False: [], True: []}
        for i in ticket.taken:
            check = ticket.checks[i]
            refused = False
            fits = []
            for j, limit in enumerate(check.limits):
                key = (check.key, limit.slug)
                if limit.kind == CONCURRENCY:
                    left = self._slots.get(key, 0) - 1
                    if left > 0:
                        self._slots[key] = left
                    else:
                        self._slots.pop(key, None)
                elif limit.kind == RESULT_BYTES:
                    budget = self._budget(key, day)
                    if budget.used + budget.reserved + result_bytes > limit.max:
                        refusal = Refusal(i, j, (day + 1) * DAY_MS - now)
                        (outcome.shadow_refusals if check.shadow else outcome.refusals).append(
                            refusal
                        )
                        refused = True
                    else:
                        fits.append((budget, result_bytes))
            if not (check.shadow and refused):
                charges[check.shadow].extend(fits)
        # Enforced budgets are charged all together or not at all: a withheld answer is
        # delivered to nobody, so no budget pays for it.
        outcome.withheld = bool(outcome.refusals)
        if not outcome.withheld:
            for budget, amount in charges[False] + charges[True]:
                budget.used += amount
        return outcome

    def _sweep(self, now: int, day: int) -> None:
        """Forget what counts nothing any more: windows whose entries all expired, budgets of
        past days with nothing reserved. Keeps memory bounded by the callers active lately."""
        for key, window in list(self._windows.items()):
            window.prune(now)
            if not window.entries:
                del self._windows[key]
        for key in [k for k, b in self._budgets.items() if b.day != day and not b.reserved]:
            del self._budgets[key]

    async def close(self) -> None:
        return None
