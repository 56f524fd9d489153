"""The counter stores behind rate limits, in memory and in the real Redis: the same behaviour
from both (exact admission, all or nothing, leases, budgets), asserted on the same cases."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from switchyard.storage.limit_counters import (
    BUSY_RETRY_MS,
    CALLS,
    CONCURRENCY,
    DAY_MS,
    RESULT_BYTES,
    WINDOW,
    Check,
    CounterStore,
    Limit,
    MemoryLimitCounters,
    StoreUnavailable,
)
from switchyard.storage.redis_counters import RedisCounters

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"
MINUTE = Limit(WINDOW, 5, 60_000, label="1m")


async def _drop(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    # Redis is shared with other runs: every test counts under its own prefix, removed after.
    value = f"sytest-{secrets.token_hex(6)}"
    yield value
    await _drop(value)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[CounterStore]:
    made: CounterStore = (
        MemoryLimitCounters() if request.param == "memory" else RedisCounters(REDIS_URL, prefix)
    )
    yield made
    await made.close()


async def test_a_burst_gets_exactly_what_is_left(store: CounterStore) -> None:
    check = Check("burst:alice", (MINUTE,))
    verdicts = await asyncio.gather(*(store.acquire([check]) for _ in range(40)))
    admitted = [v for v in verdicts if v.admitted]
    assert len(admitted) == 5
    for refused in (v for v in verdicts if not v.admitted):
        assert [(r.check, r.limit) for r in refused.refusals] == [(0, 0)]
        assert 0 < refused.retry_after_ms <= 60_000
        assert refused.ticket is None and refused.standings[0][0].remaining == 0


async def test_two_principals_count_apart(store: CounterStore) -> None:
    alice, bob = Check("rule:alice", (MINUTE,)), Check("rule:bob", (MINUTE,))
    results = await asyncio.gather(
        *(store.acquire([who]) for _ in range(12) for who in (alice, bob))
    )
    by_who = {"alice": 0, "bob": 0}
    for i, verdict in enumerate(results):
        by_who["alice" if i % 2 == 0 else "bob"] += verdict.admitted
    assert by_who == {"alice": 5, "bob": 5}


async def test_refused_checks_take_nothing_from_any_limit(store: CounterStore) -> None:
    """All or nothing: the day budget refuses, and the window that would have admitted the
    call keeps its units; a second check refusing keeps the first check's units too."""
    budgeted = Check("b:alice", (Limit(WINDOW, 10, 60_000, label="1m"), Limit(CALLS, 3, DAY_MS)))
    for _ in range(3):
        assert (await store.acquire([budgeted])).admitted
    refused = await store.acquire([budgeted])
    assert not refused.admitted
    assert [(r.limit, r.retry_after_ms > 0) for r in refused.refusals] == [(1, True)]
    assert [s.remaining for s in refused.standings[0]] == [7, 0]
    wide = Check("wide:alice", (Limit(WINDOW, 100, 60_000, label="1m"),))
    narrow = Check("narrow:alice", (Limit(WINDOW, 2, 60_000, label="1m"),))
    outcomes = [(await store.acquire([wide, narrow])).admitted for _ in range(5)]
    assert outcomes == [True, True, False, False, False]
    standing = (await store.acquire([wide])).standings[0][0]
    assert standing.remaining == 100 - 3  # two with narrow, this one: never the refused three


async def test_costs_fill_a_window_in_units(store: CounterStore) -> None:
    check = Check("cost:alice", (Limit(WINDOW, 10, 60_000, label="1m"),), cost=3)
    outcomes = [(await store.acquire([check])).admitted for _ in range(4)]
    assert outcomes == [True, True, True, False]
    cheap = Check("cost:alice", (Limit(WINDOW, 10, 60_000, label="1m"),), cost=1)
    assert (await store.acquire([cheap])).admitted  # 9 + 1 fits exactly
    assert not (await store.acquire([cheap])).admitted


async def test_concurrency_slots_come_back_when_settled(store: CounterStore) -> None:
    check = Check("conc:alice", (Limit(CONCURRENCY, 2, label="concurrency"),))
    first, second = await store.acquire([check]), await store.acquire([check])
    third = await store.acquire([check])
    assert first.admitted and second.admitted and not third.admitted
    assert third.retry_after_ms == BUSY_RETRY_MS
    assert first.ticket is not None
    await store.settle(first.ticket, 0)
    await store.settle(first.ticket, 0)  # a second settle gives back nothing more
    fourth = await store.acquire([check])
    assert fourth.admitted and not (await store.acquire([check])).admitted


async def test_shadow_checks_count_and_never_refuse(store: CounterStore) -> None:
    shadow = Check("shadow:alice", (Limit(WINDOW, 2, 60_000, label="1m"),), shadow=True)
    verdicts = [await store.acquire([shadow]) for _ in range(5)]
    assert all(v.admitted for v in verdicts)
    assert [len(v.shadow_refusals) for v in verdicts] == [0, 0, 1, 1, 1]
    assert verdicts[2].shadow_refusals[0].retry_after_ms > 0
    assert [v.ticket.taken for v in verdicts if v.ticket] == [(0,), (0,), (), (), ()]


async def test_result_bytes_never_overshoot(store: CounterStore) -> None:
    budget = Limit(RESULT_BYTES, 1000, DAY_MS, reserve=50, label="daily-bytes")
    check = Check("bytes:alice", (budget,))
    verdicts = await asyncio.gather(*(store.acquire([check]) for _ in range(40)))
    admitted = [v for v in verdicts if v.admitted]
    assert len(admitted) == 20  # 20 reservations of 50 fill 1000
    settlements = await asyncio.gather(
        *(store.settle(v.ticket, 130) for v in admitted if v.ticket is not None)
    )
    delivered = sum(not s.withheld for s in settlements)
    assert delivered == 7  # 7 x 130 = 910; an eighth would make 1040
    for s in settlements:
        if s.withheld:
            assert [(r.check, r.limit) for r in s.refusals] == [(0, 0)]
    after = await store.acquire([check])
    assert after.admitted and after.standings[0][0].remaining == 1000 - 910 - 50


async def test_a_withheld_answer_charges_no_budget(store: CounterStore) -> None:
    small = Limit(RESULT_BYTES, 100, DAY_MS, reserve=10, label="daily-bytes")
    large = Limit(RESULT_BYTES, 10_000, DAY_MS, reserve=10, label="daily-bytes")
    checks = [Check("small:alice", (small,)), Check("large:alice", (large,))]
    verdict = await store.acquire(checks)
    assert verdict.ticket is not None
    outcome = await store.settle(verdict.ticket, 500)
    assert outcome.withheld and [(r.check, r.limit) for r in outcome.refusals] == [(0, 0)]
    again = await store.acquire(checks)
    assert [row[0].remaining for row in again.standings] == [90, 9990]


async def test_memory_windows_roll_over_exactly() -> None:
    now = [1_000_000]
    store = MemoryLimitCounters(clock=lambda: now[0])
    check = Check("roll:alice", (Limit(WINDOW, 2, 1000, label="1s"),))
    assert (await store.acquire([check])).admitted
    now[0] += 400
    assert (await store.acquire([check])).admitted
    now[0] += 599  # 999 ms after the first
    refused = await store.acquire([check])
    assert not refused.admitted and refused.retry_after_ms == 1
    now[0] += 1  # the first left the window
    assert (await store.acquire([check])).admitted
    refused = await store.acquire([check])
    assert refused.retry_after_ms == 400  # the second leaves 1400 ms after the start


async def test_memory_budgets_reset_at_utc_midnight() -> None:
    now = [3 * DAY_MS - 10]
    store = MemoryLimitCounters(clock=lambda: now[0])
    check = Check("day:alice", (Limit(CALLS, 1, DAY_MS, label="daily-calls"),))
    assert (await store.acquire([check])).admitted
    refused = await store.acquire([check])
    assert not refused.admitted and refused.retry_after_ms == 10
    now[0] += 10
    assert (await store.acquire([check])).admitted


async def test_redis_windows_roll_over_on_redis_time(prefix: str) -> None:
    store = RedisCounters(REDIS_URL, prefix)
    try:
        check = Check("roll:alice", (Limit(WINDOW, 3, 1000, label="1s"),))
        assert all([(await store.acquire([check])).admitted for _ in range(3)])
        refused = await store.acquire([check])
        assert not refused.admitted and 0 < refused.retry_after_ms <= 1000
        # Waiting out the retry time Redis gave is what the limit asks of a client.
        await asyncio.sleep(refused.retry_after_ms / 1000 + 0.05)
        assert (await store.acquire([check])).admitted
    finally:
        await store.close()


async def test_redis_leases_of_a_dead_process_expire_and_live_ones_are_renewed(
    prefix: str,
) -> None:
    check = Check("lease:alice", (Limit(CONCURRENCY, 1, label="concurrency"),))
    # Leases long enough that a test process stalled by a loaded machine still renews in time.
    holder = RedisCounters(REDIS_URL, prefix, lease_ms=1500)
    other = RedisCounters(REDIS_URL, prefix, lease_ms=1500)
    holding = True
    try:
        held = await holder.acquire([check])
        assert held.admitted
        # Three lease lengths later the holder (renewing) still has its slot.
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            assert not (await other.acquire([check])).admitted
            await asyncio.sleep(0.1)
        holding = False
        await holder.close()  # the process stops renewing without giving the slot back
        deadline = time.monotonic() + 10.0
        admitted = False
        while not admitted and time.monotonic() < deadline:
            verdict = await other.acquire([check])
            admitted = verdict.admitted
            if not admitted:
                await asyncio.sleep(0.05)
        assert admitted
    finally:
        if holding:  # a failure above must not leave its renewer running past the test
            await holder.close()
        await other.close()


async def test_redis_down_is_a_store_failure() -> None:
    store = RedisCounters("redis://127.0.0.1:1/0", "sytest-down", timeout_s=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await store.acquire([Check("x:alice", (MINUTE,))])
    finally:
        await store.close()
