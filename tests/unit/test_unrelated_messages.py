"""A backend message that names no request (a server request or log line outside a call, the
GET stream's traffic) reaches a client only when the connection can prove whose it is: its
owner's, or, on a connection exclusive to one owner, any of its in-flight callers'. On a
shared connection the client that happens to be calling is never assumed to be the one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from switchyard.protocol import codes
from switchyard.upstream.connection import ConnectionCore
from switchyard.upstream.http import HttpSettings, StreamableHttpConnection
from switchyard.upstream.outbound import Outbound
from switchyard.wire.frame import Reply
from tests.unit.test_message_stream import MemoryStream

pytestmark = pytest.mark.anyio

LOG = b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}'
SAMPLING = b'{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}'


class FakeLink:
    """One principal's way back; records what reached it."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.notified: list[str] = []
        self.asked: list[str] = []

    async def notify(self, method: str, params: bytes | None) -> None:
        self.notified.append(method)

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        self.asked.append(method)
        return Reply(result=b'{"answered-by":"' + self.client.encode() + b'"}')


async def answers(stream: MemoryStream) -> list[dict[str, Any]]:
    """The stream's answers to server requests, once the one expected has been sent."""
    requests = sum(1 for m in stream.sent if "method" in m)
    await stream.wait_sent(requests + 1)
    return [m for m in stream.sent if "method" not in m]


async def call_in_flight(stream: MemoryStream, link: FakeLink) -> asyncio.Task[Reply]:
    before = len(stream.sent)
    task = asyncio.create_task(
        stream.request(Outbound("tools/call", b'{"name":"t"}', link=link, timeout_s=5))
    )
    await stream.wait_sent(before + 1)
    return task


async def finish(stream: MemoryStream, task: asyncio.Task[Reply]) -> None:
    calls = [m for m in stream.sent if m.get("method") == "tools/call"]
    for call in calls:
        await stream.answer(call["id"], {})
    await task


async def test_shared_stream_never_hands_a_stray_message_to_the_only_caller() -> None:
    stream = MemoryStream()
    alice = FakeLink("alice")
    task = await call_in_flight(stream, alice)
    await stream._dispatch(LOG)
    await stream._dispatch(SAMPLING)
    [answer] = await answers(stream)
    assert answer["id"] == "s1"
    assert answer["error"]["code"] == codes.INTERNAL_ERROR
    assert alice.notified == [] and alice.asked == []
    assert stream.unattributed == 1
    assert stream.notifications == []  # nor broadcast through the backend handler
    await finish(stream, task)


async def test_shared_stream_with_two_principals_in_flight_tells_neither() -> None:
    stream = MemoryStream()
    alice, bob = FakeLink("alice"), FakeLink("bob")
    tasks = [await call_in_flight(stream, alice), await call_in_flight(stream, bob)]
    await stream._dispatch(LOG)
    await stream._dispatch(SAMPLING)
    [answer] = await answers(stream)
    assert "error" in answer
    assert alice.notified == bob.notified == [] and alice.asked == bob.asked == []
    for task in tasks:
        await finish(stream, task)


async def test_exclusive_stream_reaches_its_caller() -> None:
    stream = MemoryStream()
    stream.exclusive_owner = "session:alice-1"
    alice = FakeLink("alice")
    task = await call_in_flight(stream, alice)
    await stream._dispatch(LOG)
    await stream._dispatch(SAMPLING)
    [answer] = await answers(stream)
    assert json.loads(json.dumps(answer["result"])) == {"answered-by": "alice"}
    assert alice.notified == ["notifications/message"]
    assert alice.asked == ["sampling/createMessage"]
    assert stream.unattributed == 0
    await finish(stream, task)


async def test_owner_gets_what_arrives_between_calls() -> None:
    stream = MemoryStream()
    alice_session = FakeLink("alice")
    stream.owner = alice_session
    await stream._dispatch(LOG)
    await stream._dispatch(SAMPLING)
    [answer] = await answers(stream)
    assert answer["result"] == {"answered-by": "alice"}
    assert alice_session.asked == ["sampling/createMessage"]
    # A log line goes to the isolated session's own handler, which applies its log level.
    assert [m for m, _ in stream.notifications] == ["notifications/message"]
    assert stream.unattributed == 0


async def test_exclusive_stream_without_a_link_leaves_it_to_its_owner_handler() -> None:
    stream = MemoryStream()
    stream.exclusive_owner = "principal:alice"
    await stream._dispatch(LOG)
    assert [m for m, _ in stream.notifications] == ["notifications/message"]
    assert stream.unattributed == 0


async def test_backend_wide_notifications_still_reach_the_handler_on_a_shared_stream() -> None:
    stream = MemoryStream()
    await stream._dispatch(b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}')
    assert [m for m, _ in stream.notifications] == ["notifications/tools/list_changed"]


async def test_server_ping_without_a_client_is_answered_by_the_gateway() -> None:
    stream = MemoryStream()
    await stream._dispatch(b'{"jsonrpc":"2.0","id":9,"method":"ping"}')
    [answer] = await answers(stream)
    assert answer == {"jsonrpc": "2.0", "id": 9, "result": {}}


class GetStreamConnection(StreamableHttpConnection):
    """Streamable HTTP with the network cut out: answers to server requests are captured."""

    def __init__(self) -> None:
        self.notifications: list[str] = []
        super().__init__(
            "web",
            HttpSettings(url="http://127.0.0.1:9/mcp"),
            lambda m, p: self.notifications.append(m),
        )
        self.answers: list[dict[str, Any]] = []
        self._answered = asyncio.Event()

    async def _send_answer(self, data: bytes) -> None:
        self.answers.append(json.loads(data))
        self._answered.set()

    async def wait_answers(self) -> list[dict[str, Any]]:
        async with asyncio.timeout(2):
            await self._answered.wait()
        return self.answers


def in_flight(conn: ConnectionCore, *links: FakeLink) -> None:
    """Requests of these clients in flight, as `request()` registers them."""
    for i, link in enumerate(links, start=100):
        conn._links[i] = link


@pytest.mark.parametrize("exclusive", [False, True])
async def test_get_stream_server_requests_follow_the_rule(exclusive: bool) -> None:
    conn = GetStreamConnection()
    try:
        alice, bob = FakeLink("alice"), FakeLink("bob")
        if exclusive:
            conn.exclusive_owner = "principal:alice"
            in_flight(conn, alice)
        else:
            in_flight(conn, alice, bob)
        # The GET stream: no request of ours is related (request_id None, link None).
        await conn._on_stream_message(SAMPLING, None, None)
        await conn._on_stream_message(LOG, None, None)
        [answer] = await conn.wait_answers()
        if exclusive:
            assert answer["result"] == {"answered-by": "alice"}
            assert alice.asked == ["sampling/createMessage"]
            assert alice.notified == ["notifications/message"]
        else:
            assert answer["error"]["code"] == codes.INTERNAL_ERROR
            assert alice.asked == bob.asked == [] and alice.notified == bob.notified == []
            assert conn.unattributed == 1
        assert bob.asked == [] and bob.notified == []
        assert conn.notifications == []
    finally:
        await conn.aclose()


async def test_a_request_on_a_calls_own_stream_goes_to_that_call() -> None:
    conn = GetStreamConnection()
    try:
        alice, bob = FakeLink("alice"), FakeLink("bob")
        in_flight(conn, alice, bob)  # shared, two principals: the stream itself says whose
        await conn._on_stream_message(SAMPLING, 101, bob)
        [answer] = await conn.wait_answers()
        assert answer["result"] == {"answered-by": "bob"}
        assert alice.asked == []
    finally:
        await conn.aclose()


async def test_a_modern_log_line_reaches_the_one_request_that_opted_in() -> None:
    """A 2026-07-28 server logs only for requests that asked: with exactly one such request in
    flight on a shared stream, its log line is provably that request's; with two, nobody's."""
    from switchyard.protocol.versions import Era
    from switchyard.upstream.connection import ServerFacts

    stream = MemoryStream()
    stream.facts = ServerFacts(era=Era.MODERN, version="2026-07-28")
    alice, bob = FakeLink("alice"), FakeLink("bob")
    tasks = []
    for link, level in ((alice, "info"), (bob, None)):
        before = len(stream.sent)
        out = Outbound("tools/call", b'{"name":"t"}', link=link, timeout_s=5, log_level=level)
        tasks.append(asyncio.create_task(stream.request(out)))
        await stream.wait_sent(before + 1)
    await stream._dispatch(LOG)
    assert alice.notified == ["notifications/message"] and bob.notified == []
    carol = FakeLink("carol")
    before = len(stream.sent)
    out = Outbound("tools/call", b'{"name":"t"}', link=carol, timeout_s=5, log_level="debug")
    tasks.append(asyncio.create_task(stream.request(out)))
    await stream.wait_sent(before + 1)
    await stream._dispatch(LOG)  # alice and carol both asked: provably neither's
    assert alice.notified == ["notifications/message"] and carol.notified == []
    assert stream.unattributed == 1
    for call in [m for m in stream.sent if m.get("method") == "tools/call"]:
        await stream.answer(call["id"], {})
    await asyncio.gather(*tasks)
