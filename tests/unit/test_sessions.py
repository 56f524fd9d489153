"""The legacy session table: caps per caller and gateway-wide, fair shares, lifetime."""

from __future__ import annotations

import asyncio
import json

import pytest

from switchyard.protocol import codes
from switchyard.sessions import (
    OutboxClosed,
    Session,
    SessionLimits,
    SessionRefusal,
    SessionRegistry,
)

pytestmark = pytest.mark.anyio


def registry(
    max_sessions: int = 100, per_principal: int = 10, lifetime: float = 86400.0
) -> SessionRegistry:
    limits = SessionLimits(max_per_principal=per_principal, max_lifetime_s=lifetime)
    return SessionRegistry(3600.0, max_sessions, limits=limits)


def opened(reg: SessionRegistry, principal: str | None, peer: str | None = None) -> Session:
    session = reg.open("streamable-http", principal, peer=peer)
    assert isinstance(session, Session), session
    return session


def test_a_caller_past_its_cap_is_refused_with_429_and_others_are_not() -> None:
    reg = registry(per_principal=3)
    for _ in range(3):
        opened(reg, "carol")
    refused = reg.open("streamable-http", "carol")
    assert isinstance(refused, SessionRefusal)
    assert (refused.status, refused.code) == (429, codes.SESSION_LIMIT)
    assert reg.create("streamable-http", "carol") is None
    opened(reg, "alice")
    assert reg.count_for("carol") == 3 and reg.count_for("alice") == 1


def test_closing_a_session_frees_its_place_under_the_cap() -> None:
    reg = registry(per_principal=2)
    first = opened(reg, "carol")
    opened(reg, "carol")
    reg.remove(first.id)
    opened(reg, "carol")
    assert reg.count_for("carol") == 2


def test_without_authentication_the_cap_applies_per_peer_address() -> None:
    reg = registry(per_principal=2)
    opened(reg, None, "10.0.0.1")
    opened(reg, None, "10.0.0.1")
    assert isinstance(reg.open("sse", None, peer="10.0.0.1"), SessionRefusal)
    opened(reg, None, "10.0.0.2")


def test_near_the_global_cap_one_callers_load_never_refuses_another() -> None:
    # Carol's own cap is the whole table: only the fair-share rule stands between her and it.
    reg = registry(max_sessions=20, per_principal=20)
    carol = [reg.open("streamable-http", "carol") for _ in range(25)]
    held = [s for s in carol if isinstance(s, Session)]
    refusals = [s for s in carol if isinstance(s, SessionRefusal)]
    assert refusals and all(r.status == 503 and r.code == codes.SESSION_LIMIT for r in refusals)
    assert len(held) < 20
    for name in ("alice", "bob", "dave"):
        opened(reg, name)
    assert len(reg) <= 20


def test_at_the_global_cap_a_newcomer_displaces_the_largest_holders_oldest_idle_session() -> None:
    reg = registry(max_sessions=4, per_principal=4)
    carol = [opened(reg, "carol") for _ in range(3)]
    carol[1].stream_open = True
    opened(reg, "alice")  # still below the high-water mark (0.9 * 4)
    assert len(reg) == 4
    bob = opened(reg, "bob")  # full: carol holds 3 of a fair share of 1; her oldest idle goes
    assert reg.peek(carol[0].id) is None and carol[0].closed
    assert reg.peek(carol[1].id) is carol[1]  # a streamed one is taken last
    assert reg.peek(bob.id) is bob and len(reg) == 4


def test_a_full_table_of_fair_holders_refuses_a_newcomer_with_503() -> None:
    reg = registry(max_sessions=2, per_principal=1)
    opened(reg, "alice")
    opened(reg, "bob")
    refused = reg.open("streamable-http", "carol")
    assert isinstance(refused, SessionRefusal) and refused.status == 503


async def test_a_session_past_its_lifetime_is_closed_even_with_a_stream_open() -> None:
    reg = registry(lifetime=0.05)
    session = opened(reg, "alice")
    session.stream_open = True
    reader = asyncio.create_task(session.outbox.get())
    await asyncio.sleep(0.1)
    assert reg.reap() == 1
    assert reg.peek(session.id) is None
    assert reg.get(session.id, "alice") is None
    with pytest.raises(OutboxClosed):
        await asyncio.wait_for(reader, 1.0)  # the stream reading it ends


async def test_get_refuses_an_expired_session_before_the_reaper_runs() -> None:
    reg = registry(lifetime=0.05)
    session = opened(reg, "alice")
    session.stream_open = True
    assert reg.get(session.id, "alice") is session
    await asyncio.sleep(0.1)
    assert reg.get(session.id, "alice") is None
    assert reg.count_for("alice") == 0


def test_idle_sessions_are_reaped_but_streamed_ones_only_at_their_lifetime() -> None:
    reg = SessionRegistry(0.0, 100)
    idle = opened(reg, "alice")
    streamed = opened(reg, "alice")
    streamed.stream_open = True
    assert reg.reap() == 1
    assert reg.peek(idle.id) is None and reg.peek(streamed.id) is streamed


def _session(reg: SessionRegistry, principal: str, attached: bool = True) -> Session:
    session = opened(reg, principal)
    session.stream_open = attached
    session.initialized = True
    return session


def bounded(per_session: int, budget: int = 1 << 30, detached: int = 1024) -> SessionRegistry:
    limits = SessionLimits(
        outbox_bytes=per_session, detached_outbox_bytes=detached, outbox_budget_bytes=budget
    )
    return SessionRegistry(3600.0, 100, limits=limits)


def test_an_outbox_is_bounded_in_bytes_and_a_slow_reader_loses_the_oldest() -> None:
    reg = bounded(per_session=10_000)
    alice = _session(reg, "alice")
    for i in range(10):
        assert alice.push(bytes([65 + i]) * 3000)
    assert alice.outbox.size <= 10_000
    kept = [alice.outbox.get_nowait() for _ in range(alice.outbox.qsize())]
    assert [m[:1] for m in kept] == [b"H", b"I", b"J"]  # the newest, in order
    assert alice.outbox.dropped == 7 and reg.budget.dropped == 7
    assert reg.budget.used == 0  # what was read gave its bytes back


def test_one_message_larger_than_the_bound_is_still_queued_alone() -> None:
    reg = bounded(per_session=1000)
    alice = _session(reg, "alice")
    alice.push(b"x" * 10)
    assert alice.push(b"y" * 5000)
    assert alice.outbox.qsize() == 1 and alice.outbox.size == 5000


def test_the_gateway_wide_budget_bounds_every_outbox_together() -> None:
    reg = bounded(per_session=10_000, budget=12_000)
    alice, bob, carol = (_session(reg, name) for name in ("alice", "bob", "carol"))
    assert alice.push(b"a" * 5000) and bob.push(b"b" * 5000)
    assert not carol.push(b"c" * 5000)  # nothing of carol's own to drop: refused, counted
    assert carol.outbox.dropped == 1 and reg.budget.used == 10_000
    assert alice.push(b"A" * 5000)  # alice makes room from her own backlog, not bob's
    assert bob.outbox.qsize() == 1 and alice.outbox.qsize() == 1
    reg.remove(bob.id)
    assert reg.budget.used == 5000  # a closed session gives its bytes back
    assert carol.push(b"c" * 5000)


def test_a_session_without_a_stream_drops_pushes_beyond_a_small_bound() -> None:
    reg = bounded(per_session=1 << 20, detached=1000)
    idle = _session(reg, "alice", attached=False)
    accepted = sum(idle.push(b"z" * 300) for _ in range(100))
    assert accepted == 3 and idle.outbox.size == 900
    assert idle.outbox.dropped == 97
    idle.stream_open = True
    assert idle.push(b"z" * 300)  # once a stream reads it, the full bound applies


def test_a_broadcast_is_stored_once_for_every_session() -> None:
    reg = bounded(per_session=1 << 20)
    sessions = [_session(reg, f"p{i}") for i in range(5)]
    reg.broadcast(b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}')
    queued = [s.outbox.get_nowait() for s in sessions]
    assert all(q is queued[0] for q in queued)
    params = b'{"level":"info","data":"' + b"x" * 4096 + b'"}'
    for s in sessions:
        s.notify("notifications/message", params)
    lines = [s.outbox.get_nowait() for s in sessions]
    assert all(line is lines[0] for line in lines)
    assert lines[0].endswith(params + b"}")


async def test_a_request_to_a_client_whose_queue_is_full_is_answered_at_once() -> None:
    reg = bounded(per_session=1 << 20, detached=1000)
    idle = _session(reg, "alice", attached=False)
    idle.client_capabilities = None
    while idle.push(b"n" * 100):
        pass
    link = idle.link()
    await link.notify("notifications/progress", b'{"progress":1}')  # dropped, never waits
    async with asyncio.timeout(1.0):
        reply = await link.ask("ping", None, timeout=60.0)
    assert reply.error is not None
    error = json.loads(reply.error)
    assert error["code"] == codes.CLIENT_BACKLOGGED and error["data"] == {"source": "gateway"}
