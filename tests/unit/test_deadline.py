"""The request deadline: a timer that cancels its task, pushed back by progress up to a hard
limit, and a cancellation from elsewhere left a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.deadline import Deadline

pytestmark = pytest.mark.anyio


async def test_a_request_past_its_deadline_raises_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with Deadline(0.05, 0.05):
            await asyncio.Event().wait()
    assert 0.04 <= loop.time() - started < 2.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # its own cancel was counted out


async def test_a_request_within_its_deadline_is_untouched_and_leaves_no_timer() -> None:
    async with Deadline(0.05, 0.05) as deadline:
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past the deadline: nothing fires into the finished block
    assert deadline._handle is None
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_progress_pushes_the_deadline_back_up_to_the_hard_limit() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with Deadline(0.1, 0.3) as deadline:
            for _ in range(100):  # progress every 50 ms, more often than the 0.1 s timeout
                await asyncio.sleep(0.05)
                deadline.extend()
    elapsed = loop.time() - started
    assert 0.28 <= elapsed < 2.0  # kept alive past 0.1 s, stopped at the 0.3 s hard limit


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    ready = asyncio.Event()

    async def request() -> None:
        async with Deadline(30, 30):
            ready.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(request())
    await asyncio.wait_for(ready.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()


async def test_a_cancellation_from_elsewhere_after_the_deadline_fired_stays_one() -> None:
    # The outer cancel is still owed to the task: the block ends CancelledError, not timeout.
    fired = asyncio.Event()

    async def request() -> None:
        async with Deadline(0.01, 0.01) as deadline:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                fired.set()
                assert deadline._fired
                await asyncio.sleep(30)  # cancelled again from outside, here

    task = asyncio.create_task(request())
    await asyncio.wait_for(fired.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
