"""What is recorded about an answered request is made in the loop's next pass, once the reply
is out, and records what it was when the reply came back: its latency, its outcome, its
caller. Two callers' records never mix; nothing queued is lost to a loop that closed first."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import pytest

from switchyard.call import Call, Identity, RequestContext
from switchyard.observability import logging as access
from switchyard.observability.metrics import metrics
from switchyard.observability.settling import Settling, settling
from switchyard.policies.base import PolicySpec, build_chain
from switchyard.policies.request_log import RequestLog
from switchyard.protocol.versions import Era
from switchyard.wire import frame
from switchyard.wire.frame import Reply
from tests.access_lines import DrainedStream

SLOW_WRITE_S = 0.2
"""How long a face takes to write a reply here, after the reply came back."""


@pytest.fixture
def records() -> Iterator[DrainedStream]:
    out = DrainedStream()
    handler = access.BufferedHandler(out)
    logger = logging.getLogger(access.AccessLog.NAME)
    level = logger.level
    logger.setLevel(logging.INFO)
    saved = access.access_log._handler, access.access_log.enabled
    access.access_log.attach(handler)
    was_measured = metrics.enabled
    metrics.reset()
    metrics.enabled = True
    try:
        yield out
    finally:
        settling.settle()
        access.access_log._handler, access.access_log.enabled = saved
        logger.setLevel(level)
        metrics.enabled = was_measured
        metrics.reset()


def lines(out: DrainedStream) -> list[dict[str, object]]:
    access.access_log.drain()
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def answer(call: Call) -> Reply:
    if call.ctx.principal == "bob":
        return frame.error_reply(-32602, "bad arguments")
    return Reply(result=b'{"content":[]}')


def call_by(principal: str, request_id: bytes) -> Call:
    identity = Identity(name=principal)
    ctx = RequestContext(
        Era.LEGACY,
        "2025-06-18",
        "streamable-http",
        principal=principal,
        identity=identity,
        request_id=request_id,
    )
    return Call("tools/call", frame.encode({"name": "t"}), ctx)


def test_queued_work_runs_in_the_next_pass_in_order() -> None:
    queue = Settling()
    done: list[int] = []
    loop = asyncio.new_event_loop()
    scheduled: list[object] = []
    call_soon = loop.call_soon

    def counting(*args: object, **kwargs: object) -> asyncio.Handle:
        scheduled.append(args[0])
        return call_soon(*args, **kwargs)  # type: ignore[arg-type]

    loop.call_soon = counting  # type: ignore[method-assign]

    async def main() -> list[int]:
        for n in range(5):
            queue.add(done.append, n)
        seen = list(done)
        await asyncio.sleep(0)
        return seen

    try:
        assert loop.run_until_complete(main()) == []
    finally:
        loop.close()
    assert done == [0, 1, 2, 3, 4]
    assert scheduled.count(queue.settle) == 1  # one callback for everything of a pass


def test_work_queued_on_a_loop_that_closed_runs_on_the_next() -> None:
    queue = Settling()
    done: list[str] = []

    async def add(what: str, stop: bool = False) -> None:
        if stop:  # the loop ends with this pass: what is scheduled during it never runs
            asyncio.get_running_loop().stop()
        queue.add(done.append, what)

    first = asyncio.new_event_loop()
    first.run_until_complete(add("first", stop=True))
    first.close()
    assert done == []
    second = asyncio.new_event_loop()
    try:
        second.run_until_complete(add("second"))
        second.run_until_complete(asyncio.sleep(0))
    finally:
        second.close()
    assert done == ["first", "second"]


@pytest.mark.anyio
async def test_records_come_after_the_reply_and_say_what_it_was(records: DrainedStream) -> None:
    chain = build_chain([PolicySpec(RequestLog)], "tools/call", answer)
    alice, bob = call_by("alice", b"1"), call_by("bob", b"2")
    replies = [await chain(alice), await chain(bob)]
    # The replies are back and nothing is recorded yet: a face writes them first.
    assert [r.error is None for r in replies] == [True, False]
    assert lines(records) == []
    assert metrics.in_flight == 2
    # A slow write of both replies, in this very pass: blocking is what is being stood for.
    time.sleep(SLOW_WRITE_S)  # noqa: ASYNC251
    await asyncio.sleep(0)
    got = lines(records)
    assert [(r["principal"], r["id"], r["outcome"]) for r in got] == [
        ("alice", "1", "ok"),
        ("bob", "2", -32602),
    ]
    for record in got:  # the latency of the request, not of its reply's write
        assert isinstance(record["latency_ms"], float)
        assert record["latency_ms"] < SLOW_WRITE_S * 1000 / 2
    assert metrics.in_flight == 0
    counts = [line for line in metrics.render() if "_duration_seconds_count{" in line]
    assert len(counts) == 2
    assert any('error_type=""' in line and line.rstrip().endswith(" 1") for line in counts)
    assert any('error_type="-32602"' in line and line.rstrip().endswith(" 1") for line in counts)


@pytest.mark.anyio
async def test_with_no_record_to_write_the_counts_are_made_at_once() -> None:
    # The access log off and metrics on: a histogram's count is not worth a loop callback.
    was_measured, was_logged = metrics.enabled, access.access_log.enabled
    metrics.reset()
    metrics.enabled, access.access_log.enabled = True, False
    try:
        chain = build_chain([PolicySpec(RequestLog)], "tools/call", answer)
        await chain(call_by("alice", b"1"))
        await chain(call_by("bob", b"2"))
        counts = [line for line in metrics.render() if "_duration_seconds_count{" in line]
        assert len(counts) == 2 and metrics.in_flight == 0
    finally:
        metrics.enabled, access.access_log.enabled = was_measured, was_logged
        metrics.reset()
