"""Isolated upstream sessions of one legacy backend: who owns each, and how many may exist.

An isolated session is a whole upstream session (for stdio, a process) serving one owner: a
client session (`per_session`) or a principal (`per_principal`). A 2026-07-28 caller of a
`per_session` backend has no session to own one; it borrows an idle session from its
principal's warm pool for one call and gives it back.

Bounds, so that no caller can make the gateway spawn without limit or take others' state:
  * live + opening + closing sessions per backend never exceed `max_total`; at the bound new
    opens are refused (the caller sees a gateway error), never queued without limit and never
    satisfied by closing somebody else's session;
  * each principal holds at most `per_principal` live or opening sessions; at its share it can
    only reuse or evict its *own* idle sessions;
  * each principal may start at most `spawn_burst` sessions at once, then `spawns_per_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from switchyard.protocol.link import ClientLink
from switchyard.upstream.connection import Connection
from switchyard.wire.frame import Raw

log = logging.getLogger("switchyard.backend")

# Longest a stopping backend waits for its sessions' processes to be gone: above the stdio
# close sequence (2 s after stdin closes, 2 s after SIGTERM, then SIGKILL and reaping).
CLOSE_ALL_S: Final = 10.0
# A warm session nobody borrowed for this long is closed (at most the owned-session idle time).
WARM_IDLE_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class OwnerKey:
    """Who an isolated session belongs to. One scheme for opening, lookup and routing:
    `session` (a client session id), `principal` (a principal key) or `anonymous` (every
    unauthenticated caller, as one principal)."""

    kind: Literal["session", "principal", "anonymous"]
    value: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


ANONYMOUS: Final = OwnerKey("anonymous")


def principal_key(principal: str | None) -> OwnerKey:
    return OwnerKey("principal", principal) if principal else ANONYMOUS


class PoolRefused(Exception):
    """No isolated session for this caller now: a bound or its spawn rate was reached."""


@dataclass(frozen=True, slots=True)
class PoolLimits:
    max_total: int = 64
    """Live, opening and closing sessions of one backend."""
    per_principal: int | None = None
    """Live or opening sessions of one principal; None: max(1, max_total // 4)."""
    idle_s: float = 300.0
    spawn_burst: int = 10
    spawns_per_s: float = 1.0

    @property
    def share(self) -> int:
        if self.per_principal is not None:
            return max(1, min(self.per_principal, self.max_total))
        return max(1, self.max_total // 4)


@dataclass(slots=True, eq=False)
class Isolated:
    connection: Connection
    owner: OwnerKey
    principal: OwnerKey
    """Whose share it counts against."""
    pooled: bool = False
    """A warm-pool session lent to one 2026-07-28 call at a time."""
    capabilities: bytes | None = None
    busy: int = 0
    last_used: float = field(default_factory=time.monotonic)


class SpawnBucket:
    """A token bucket: `burst` spawns at once, refilled at `per_s`."""

    def __init__(self, burst: int, per_s: float) -> None:
        self.burst = float(max(1, burst))
        self.per_s = per_s
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_s)
        self.stamp = now

    def take(self) -> bool:
        self._refill()
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    @property
    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.burst


Opener = Callable[[OwnerKey, Raw | None, ClientLink | None], Awaitable[Connection]]
"""Starts one isolated session for an owner (raises when it cannot)."""


class IsolatedPool:
    def __init__(self, backend: str, limits: PoolLimits, opener: Opener) -> None:
        self.backend = backend
        self.limits = limits
        self._opener = opener
        self._owned: dict[OwnerKey, Isolated] = {}
        self._warm: dict[OwnerKey, list[Isolated]] = {}
        """A principal's warm sessions (idle and lent) for its 2026-07-28 calls."""
        self._opening_owned: dict[OwnerKey, asyncio.Future[Isolated]] = {}
        self._opening: Counter[OwnerKey] = Counter()
        """Sessions being started, per principal."""
        self._closing: set[asyncio.Task[None]] = set()
        """Sessions being shut down: counted against the bound, awaited when the backend stops."""
        self._watchers: set[asyncio.Task[None]] = set()
        self._buckets: dict[OwnerKey, SpawnBucket] = {}
        self._changed = asyncio.Event()
        self._stopped = False

    # -- counts --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._owned) + sum(len(v) for v in self._warm.values())

    @property
    def total(self) -> int:
        """Live, opening and closing sessions: what the backend-wide bound counts."""
        return len(self) + sum(self._opening.values()) + len(self._closing)

    def _entries(self) -> list[Isolated]:
        out = list(self._owned.values())
        for entries in self._warm.values():
            out.extend(entries)
        return out

    def usage(self, principal: OwnerKey) -> int:
        """Live or opening sessions of one principal: what its share counts."""
        live = sum(1 for iso in self._entries() if iso.principal == principal)
        return live + self._opening[principal]

    def stopped(self) -> bool:
        return self._stopped

    # -- lookup and opening --------------------------------------------------------------------

    def peek(self, owner: OwnerKey) -> Isolated | None:
        return self._owned.get(owner)

    async def acquire(
        self,
        owner: OwnerKey,
        principal: OwnerKey,
        capabilities: Raw | None,
        session_link: ClientLink | None,
    ) -> Isolated:
        """The owner's session, opened on first use; marked busy until `give_back`."""
        found = self._owned.get(owner)
        if found is None:
            pending = self._opening_owned.get(owner)
            if pending is not None:
                found = await asyncio.shield(pending)
            else:
                found = await self._open_owned(owner, principal, capabilities, session_link)
        found.busy += 1
        return found

    async def _open_owned(
        self,
        owner: OwnerKey,
        principal: OwnerKey,
        capabilities: Raw | None,
        session_link: ClientLink | None,
    ) -> Isolated:
        future: asyncio.Future[Isolated] = asyncio.get_running_loop().create_future()
        self._opening_owned[owner] = future
        try:
            isolated = await self._open(owner, principal, capabilities, session_link, pooled=False)
            future.set_result(isolated)
            return isolated
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else PoolRefused("cancelled"))
            future.exception()  # retrieved here: waiters (if any) re-raise it themselves
            raise
        finally:
            del self._opening_owned[owner]

    async def borrow(
        self, principal: OwnerKey, capabilities: Raw | None, wait_s: float
    ) -> Isolated:
        """An idle warm session of `principal` (or a new one) for one call; when none can be
        opened now, wait up to `wait_s` for one of the principal's own to come back."""
        deadline = time.monotonic() + wait_s
        wanted = bytes(capabilities) if capabilities is not None else None
        while True:
            idle = [
                iso
                for iso in self._warm.get(principal, ())
                if iso.busy == 0 and iso.capabilities == wanted
            ]
            if idle:
                # The most recently used: the surplus ages out under WARM_IDLE_S.
                chosen = max(idle, key=lambda iso: iso.last_used)
                chosen.busy = 1
                return chosen
            try:
                return await self._open(principal, principal, capabilities, None, pooled=True)
            except PoolRefused:
                waiting_on = self._opening[principal] + sum(
                    1 for iso in self._warm.get(principal, ()) if iso.busy
                )
                remaining = deadline - time.monotonic()
                if waiting_on == 0 or remaining <= 0:
                    raise
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                raise PoolRefused(
                    f"no isolated session of backend {self.backend!r} came free in time"
                ) from None

    def give_back(self, isolated: Isolated) -> None:
        isolated.busy -= 1
        isolated.last_used = time.monotonic()
        self._signal()

    def _signal(self) -> None:
        """Wake borrowers waiting for a session to come back or a slot to free."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _admit(self, principal: OwnerKey) -> None:
        """Room for one more session of `principal`, or PoolRefused; never at another
        principal's expense."""
        limits = self.limits
        if self.total >= limits.max_total:
            raise PoolRefused(
                f"backend {self.backend!r} has {self.total} isolated sessions open or closing "
                f"(limit {limits.max_total}); retry shortly"
            )
        # At its share a principal makes room among its own sessions only. (Checked after the
        # backend-wide bound: a closing session still counts there, so evicting would lose
        # the principal's state and gain it nothing.)
        while self.usage(principal) >= limits.share:
            idle = [iso for iso in self._entries() if iso.principal == principal and not iso.busy]
            if not idle:
                raise PoolRefused(
                    f"this caller has {self.usage(principal)} isolated sessions of backend "
                    f"{self.backend!r} (its share: {limits.share}), none idle; retry shortly"
                )
            oldest = min(idle, key=lambda iso: iso.last_used)
            if self._forget(oldest):
                self._close(oldest)
        bucket = self._buckets.get(principal)
        if bucket is None:
            bucket = self._buckets[principal] = SpawnBucket(limits.spawn_burst, limits.spawns_per_s)
        if not bucket.take():
            raise PoolRefused(
                f"too many new isolated sessions of backend {self.backend!r} for this caller; "
                "retry shortly"
            )

    async def _open(
        self,
        owner: OwnerKey,
        principal: OwnerKey,
        capabilities: Raw | None,
        session_link: ClientLink | None,
        *,
        pooled: bool,
    ) -> Isolated:
        if self.stopped():
            raise PoolRefused(f"backend {self.backend!r} is stopping")
        self._admit(principal)
        self._opening[principal] += 1
        try:
            conn = await self._opener(owner, capabilities, session_link)
        finally:
            self._opening[principal] -= 1
            if not self._opening[principal]:
                del self._opening[principal]
            self._signal()
        isolated = Isolated(
            conn,
            owner,
            principal,
            pooled=pooled,
            capabilities=bytes(capabilities) if capabilities is not None else None,
            busy=1 if pooled else 0,
        )
        if self.stopped():  # the backend stopped while this one was starting
            self._close(isolated)
            raise PoolRefused(f"backend {self.backend!r} is stopping")
        if pooled:
            self._warm.setdefault(principal, []).append(isolated)
        else:
            self._owned[owner] = isolated
        task = asyncio.create_task(self._watch(isolated))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return isolated

    async def _watch(self, isolated: Isolated) -> None:
        """A crashed session leaves the pool; its owner's next request opens anew."""
        await isolated.connection.wait_closed()
        if self._forget(isolated):
            self._close(isolated)

    # -- closing -------------------------------------------------------------------------------

    def _forget(self, isolated: Isolated) -> bool:
        """Take `isolated` out of the pool; False if it was no longer in it."""
        if self._owned.get(isolated.owner) is isolated:
            del self._owned[isolated.owner]
            return True
        entries = self._warm.get(isolated.principal)
        if entries is not None and isolated in entries:
            entries.remove(isolated)
            if not entries:
                del self._warm[isolated.principal]
            return True
        return False

    def _close(self, isolated: Isolated) -> None:
        task = asyncio.create_task(_close_quietly(isolated.connection))
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        self._signal()

    def release(self, owner: OwnerKey) -> None:
        """The owner is gone: close its session."""
        isolated = self._owned.get(owner)
        if isolated is not None and self._forget(isolated):
            self._close(isolated)

    def reap(self) -> int:
        """Close sessions idle past their time; forget spawn buckets that refilled."""
        now = time.monotonic()
        warm_idle = min(WARM_IDLE_S, self.limits.idle_s)
        stale = [
            iso
            for iso in self._entries()
            if iso.busy == 0
            and now - iso.last_used >= (warm_idle if iso.pooled else self.limits.idle_s)
        ]
        for isolated in stale:
            if self._forget(isolated):
                self._close(isolated)
        for key in [k for k, b in self._buckets.items() if b.full]:
            del self._buckets[key]
        return len(stale)

    async def close_all(self) -> None:
        self._stopped = True
        for isolated in self._entries():
            if self._forget(isolated):
                self._close(isolated)
        # Sessions released earlier may still be in their exit grace: cancelling their close
        # would let the gateway exit before SIGTERM/SIGKILL, orphaning the processes. Each
        # close is bounded (stdin, then SIGTERM, then SIGKILL), so wait for them.
        if self._closing:
            await asyncio.wait(self._closing, timeout=CLOSE_ALL_S)
        for task in self._watchers:
            task.cancel()


async def _close_quietly(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        await conn.aclose()
