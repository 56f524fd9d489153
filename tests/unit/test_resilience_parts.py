"""The breaker's state machine, the re-send rules, endpoint picking and request coalescing."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from switchyard.protocol import codes
from switchyard.upstream import endpoints
from switchyard.upstream.breaker import Breaker, BreakerSettings
from switchyard.upstream.coalescing import SingleFlight
from switchyard.upstream.connection import timed_out, unavailable, undelivered
from switchyard.upstream.health import answered
from switchyard.upstream.http import HttpSettings
from switchyard.upstream.retries import RetrySettings, failure_of, safe_to_repeat
from switchyard.wire import frame
from switchyard.wire.frame import Reply


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b = Breaker(BreakerSettings(failures=3, open_s=1.0, jitter=0), clock)
    assert b.failure() is False and b.failure() is False
    b.success()  # a success in between resets the run
    assert [b.failure(), b.failure(), b.failure()] == [False, False, True]
    assert b.state == "open" and not b.allows()
    assert b.retry_in() == pytest.approx(1.0)


def test_half_open_admits_exactly_one_trial_and_backs_off_on_failure() -> None:
    clock = Clock()
    b = Breaker(BreakerSettings(failures=1, open_s=1.0, max_open_s=3.0, jitter=0), clock)
    b.failure()
    clock.now = 1.0
    assert b.allows() is True and b.state == "half_open"
    assert b.allows() is False  # the one trial is in flight
    assert b.failure() is True  # failed trial: open again, for twice as long
    assert b.retry_in() == pytest.approx(2.0)
    clock.now = 3.0
    assert b.allows()
    b.failure()
    assert b.retry_in() == pytest.approx(3.0)  # capped at max_open_s
    clock.now = 6.0
    assert b.allows()
    b.success()
    assert b.state == "closed" and b.openings == 0 and b.allows()


def test_breaker_jitter_spreads_open_durations() -> None:
    delays = set()
    for seed in range(20):
        b = Breaker(
            BreakerSettings(failures=1, open_s=10.0, jitter=0.5), Clock(), random.Random(seed)
        )
        b.failure()
        assert 5.0 <= b.retry_in() <= 15.0
        delays.add(round(b.retry_in(), 3))
    assert len(delays) > 10


def test_a_released_trial_lets_another_through() -> None:
    clock = Clock()
    b = Breaker(BreakerSettings(failures=1, open_s=1.0, jitter=0), clock)
    b.failure()
    clock.now = 2.0
    assert b.allows()
    b.release()  # cancelled, no verdict
    assert b.allows()


def _tool(annotations: object = None) -> bytes:
    """A tool as the catalog lists it, with these annotations (none: no annotations key)."""
    tool: dict[str, object] = {"name": "t", "inputSchema": {"type": "object"}}
    if annotations is not None:
        tool["annotations"] = annotations
    return json.dumps(tool).encode()


def test_only_reads_and_read_only_idempotent_tools_are_safe_to_repeat() -> None:
    assert safe_to_repeat("resources/read", None)
    assert safe_to_repeat("tools/list", None)
    assert safe_to_repeat("tools/call", _tool({"readOnlyHint": True, "idempotentHint": True}))
    assert not safe_to_repeat("tools/call", _tool({"readOnlyHint": True}))
    assert not safe_to_repeat("tools/call", _tool({"idempotentHint": True}))
    assert not safe_to_repeat("tools/call", _tool({"readOnlyHint": "true", "idempotentHint": True}))
    assert not safe_to_repeat("tools/call", _tool([True]))
    assert not safe_to_repeat("tools/call", _tool())
    assert not safe_to_repeat("tools/call", b"")
    assert not safe_to_repeat("tools/call", None)
    # The same annotations on another method decide nothing.
    assert not safe_to_repeat("prompts/set", _tool({"readOnlyHint": True, "idempotentHint": True}))


def test_failures_tell_never_sent_from_maybe_sent_and_from_the_backends_own_errors() -> None:
    never = failure_of(undelivered("b", "process exited"))
    maybe = failure_of(unavailable("b", "connection failed"))
    late = failure_of(timed_out("b", 1.0))
    assert never is not None and not never.delivered
    assert maybe is not None and maybe.delivered
    assert late is not None and late.delivered
    # A backend's own error (whatever its code) and a result are answers, not failures.
    assert failure_of(frame.error_reply(codes.BACKEND_UNAVAILABLE, "x")) is None
    assert failure_of(frame.error_reply(-32601, "Method not found")) is None
    assert failure_of(Reply(result=b'{"isError":true}')) is None


def test_any_json_rpc_answer_to_a_probe_means_alive() -> None:
    assert answered(Reply(result=b"{}"))
    assert answered(frame.error_reply(-32601, "Method not found: ping"))
    assert not answered(timed_out("b", 5))
    assert not answered(unavailable("b", "gone"))


def test_retry_delays_grow_with_jitter_and_a_cap() -> None:
    settings = RetrySettings(backoff_s=0.1, max_backoff_s=0.3)
    rng = random.Random(1)
    assert 0.05 <= settings.delay(0, rng) <= 0.15
    assert 0.1 <= settings.delay(1, rng) <= 0.3
    assert settings.delay(10, rng) <= 0.45


def test_two_choices_prefer_the_less_loaded_and_skip_open_breakers() -> None:
    eps = endpoints.build(
        tuple(HttpSettings(url=f"http://127.0.0.1:{p}/mcp") for p in (1, 2, 3)),
        BreakerSettings(failures=1),
    )
    for ep in eps:
        ep.state, ep.connection = "up", object()  # type: ignore[assignment]
    eps[0].in_flight = 10
    eps[0].observe(0.01)
    eps[1].observe(0.01)
    eps[2].observe(0.01)
    rng = random.Random(0)
    picks = [endpoints.choose(eps, set(), rng) for _ in range(300)]
    assert picks.count(eps[0]) == 0  # it always loses its pairing
    eps[2].breaker.failure()
    picks = [endpoints.choose(eps, set(), rng) for _ in range(50)]
    assert set(picks) == {eps[0], eps[1]} or set(picks) == {eps[1]}
    assert endpoints.choose(eps, {1}, rng) is eps[0]


@pytest.mark.anyio
async def test_single_flight_shares_one_call_and_survives_a_cancelled_waiter() -> None:
    flights = SingleFlight[str, int]()
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 7

    waiters = [asyncio.create_task(flights.run("k", work)) for _ in range(10)]
    other = asyncio.create_task(flights.run("other", work))
    await asyncio.sleep(0)
    waiters[0].cancel()
    gate.set()
    results = await asyncio.gather(*waiters[1:], other)
    assert results == [7] * 10
    assert calls == 2 and flights.shared == 9 and len(flights) == 0
