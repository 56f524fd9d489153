"""Gateway-owned tables that outlive a request: bounded, expiring, and shared fairly."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.bridge import MAX_PARKED_PER_CALLER, ParkedCalls
from switchyard.delivery import Recipient
from switchyard.protocol import codes
from switchyard.protocol.link import ClientLink
from switchyard.tasks import MemoryTaskStore, TaskRoutes
from switchyard.wire import frame
from switchyard.wire.frame import Reply

pytestmark = pytest.mark.anyio


def _recorder() -> tuple[list[tuple[str, bytes | None]], object]:
    got: list[tuple[str, bytes | None]] = []
    return got, lambda method, params: got.append((method, params))


def test_task_status_reaches_only_the_task_of_that_backend() -> None:
    routes = TaskRoutes()
    alice, push_a = _recorder()
    bob, push_b = _recorder()
    # Two backends both chose the id "task-1".
    routes.remember(Recipient("alice"), "task-1", "one", None, push_a)  # type: ignore[arg-type]
    routes.remember(Recipient("bob"), "task-1", "two", None, push_b)  # type: ignore[arg-type]
    assert routes.on_status("two", "task-1", None, "notifications/tasks/status", b"{}")
    assert bob == [("notifications/tasks/status", b"{}")] and alice == []


def test_an_ambiguous_task_status_is_dropped_not_broadcast() -> None:
    routes = TaskRoutes()
    alice, push_a = _recorder()
    bob, push_b = _recorder()
    # Two isolated sessions of one backend reused "task-1".
    routes.remember(Recipient("alice"), "task-1", "b", "session-a", push_a)  # type: ignore[arg-type]
    routes.remember(Recipient("bob"), "task-1", "b", "session-b", push_b)  # type: ignore[arg-type]
    assert not routes.on_status("b", "task-1", None, "m", b"{}")
    assert alice == [] and bob == [] and routes.delivery.dropped["unattributed"] == 1
    # The isolated session it came from says whose it is.
    assert routes.on_status("b", "task-1", "session-a", "m", b"{}")
    assert alice == [("m", b"{}")] and bob == []


def test_task_routes_are_per_caller_and_bounded_per_caller() -> None:
    store = MemoryTaskStore(per_caller=3, total=100)
    routes = TaskRoutes(store)
    for n in range(10):
        routes.remember(Recipient("carol"), f"t{n}", "b", None, None)
    routes.remember(Recipient("alice"), "mine", "b", None, None)
    assert routes.mine("carol") == {"t7", "t8", "t9"}  # carol forgot only her own oldest
    assert routes.backend_of("alice", "mine") == "b"
    assert routes.backend_of("carol", "mine") is None  # another caller's id is unknown


async def test_parked_calls_have_a_per_caller_share() -> None:
    parked = ParkedCalls()

    async def asks(link: ClientLink) -> Reply:
        return await link.ask("roots/list", None, 60.0)

    caps = frame.Raw(b'{"roots":{}}')
    for _ in range(MAX_PARKED_PER_CALLER):
        reply = await parked.start("carol", caps, None, asks)
        assert reply.result is not None and b"input_required" in reply.result
    refused = await parked.start("carol", caps, None, asks)
    err = frame.decode_error(refused.error or b"")
    assert err.code == codes.QUOTA_EXCEEDED
    # Another caller still parks.
    alice = await parked.start("alice", caps, None, asks)
    assert alice.result is not None and b"input_required" in alice.result
    assert len(parked) == MAX_PARKED_PER_CALLER + 1
    for task in parked.tasks():
        task.cancel()
    await asyncio.sleep(0)
