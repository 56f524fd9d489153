from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from switchyard.protocol import codes
from switchyard.upstream.connection import MessageStream, UpstreamClosed
from switchyard.upstream.outbound import Outbound
from switchyard.wire import frame

pytestmark = pytest.mark.anyio


class MemoryStream(MessageStream):
    """A MessageStream whose wire is a list: sent frames are captured, replies are fed in."""

    def __init__(self, backend: str = "mem") -> None:
        self.notifications: list[tuple[str, bytes | None]] = []
        super().__init__(backend, lambda m, p: self.notifications.append((m, p)))
        self.sent: list[dict[str, Any]] = []
        self.fail_with: Exception | None = None
        self._sent_event = asyncio.Event()

    async def _send(self, data: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(json.loads(data))
        self._sent_event.set()

    async def wait_sent(self, count: int) -> None:
        async with asyncio.timeout(2):
            while len(self.sent) < count:
                self._sent_event.clear()
                await self._sent_event.wait()

    async def answer(self, upstream_id: Any, result: Any) -> None:
        msg = {"jsonrpc": "2.0", "id": upstream_id, "result": result}
        await self._dispatch(json.dumps(msg, separators=(",", ":")).encode())


async def test_stream_mints_its_own_ids() -> None:
    stream = MemoryStream()
    task = asyncio.create_task(
        stream.request(Outbound("tools/call", b'{"name":"t","_meta":{"k":1}}', timeout_s=2))
    )
    await stream.wait_sent(1)
    [sent] = stream.sent
    assert sent == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "t", "_meta": {"k": 1}},
    }
    await stream.answer(1, {"content": []})
    reply = await task
    assert reply.result == b'{"content":[]}'
    assert reply.error is None


async def test_ids_are_unique_per_stream_even_if_clients_reuse_theirs() -> None:
    stream = MemoryStream()
    # Two clients both "using id 1": the stream never sees client ids, only its own.
    tasks = [
        asyncio.create_task(stream.request(Outbound("ping", None, timeout_s=2))) for _ in range(5)
    ]
    await stream.wait_sent(5)
    ids = [m["id"] for m in stream.sent]
    assert ids == [1, 2, 3, 4, 5]
    for i in ids:
        await stream.answer(i, {})
    assert [r.result for r in await asyncio.gather(*tasks)] == [b"{}"] * 5


async def test_concurrent_requests_get_their_own_replies_out_of_order() -> None:
    stream = MemoryStream()
    tasks = [
        asyncio.create_task(
            stream.request(Outbound("tools/call", f'{{"n":{n}}}'.encode(), timeout_s=2))
        )
        for n in range(6)
    ]
    await stream.wait_sent(6)
    by_n = {m["params"]["n"]: m["id"] for m in stream.sent}
    for n in (3, 0, 5, 1, 4, 2):
        await stream.answer(by_n[n], {"echo": n})
    replies = await asyncio.gather(*tasks)
    assert [json.loads(r.result or b"") for r in replies] == [{"echo": n} for n in range(6)]


async def test_error_response_is_passed_through_raw() -> None:
    stream = MemoryStream()
    task = asyncio.create_task(stream.request(Outbound("x", None, timeout_s=2)))
    await stream.wait_sent(1)
    await stream._dispatch(
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad", "data":[1]}}'
    )
    reply = await task
    assert reply.result is None
    assert reply.error == b'{"code":-32602,"message":"bad", "data":[1]}'


async def test_response_for_unknown_id_is_dropped() -> None:
    stream = MemoryStream()
    task = asyncio.create_task(stream.request(Outbound("x", None, timeout_s=2)))
    await stream.wait_sent(1)
    await stream.answer(99, {"wrong": True})
    await stream.answer("1", {"wrong": True})  # a string id is not our int id 1
    await stream._dispatch(b'{"jsonrpc":"2.0","id":1.0,"result":{}}')  # invalid id kind
    await stream._dispatch(b"not json at all")
    assert not task.done()
    assert stream.notifications == []
    await stream.answer(1, {"right": True})
    assert (await task).result == b'{"right":true}'


async def test_late_duplicate_response_is_ignored() -> None:
    stream = MemoryStream()
    task = asyncio.create_task(stream.request(Outbound("x", None, timeout_s=2)))
    await stream.wait_sent(1)
    await stream.answer(1, {"first": True})
    await stream.answer(1, {"second": True})
    assert (await task).result == b'{"first":true}'
    await stream.answer(1, {"third": True})  # after completion: dropped, no error


async def test_timeout_returns_backend_timeout_and_cancels_upstream() -> None:
    stream = MemoryStream("slowpoke")
    reply = await stream.request(Outbound("tools/call", b"{}", timeout_s=0.05))
    err = frame.decode_error(reply.error or b"")
    assert err.code == codes.BACKEND_TIMEOUT == -31001
    assert "slowpoke" in err.message
    assert err.data == {"source": "gateway", "backend": "slowpoke"}
    request, cancel = stream.sent
    assert cancel["method"] == "notifications/cancelled"
    assert "id" not in cancel
    assert cancel["params"]["requestId"] == request["id"]
    assert stream._pending == {}
    # a reply arriving after the timeout is dropped
    await stream.answer(request["id"], {})


async def test_client_cancellation_cancels_upstream() -> None:
    stream = MemoryStream()
    task = asyncio.create_task(stream.request(Outbound("tools/call", b"{}", timeout_s=5)))
    await stream.wait_sent(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    request, cancel = stream.sent
    assert cancel["method"] == "notifications/cancelled"
    assert cancel["params"] == {"requestId": request["id"], "reason": "client cancelled"}


async def test_mark_closed_answers_every_pending_request() -> None:
    stream = MemoryStream("github")
    tasks = [
        asyncio.create_task(stream.request(Outbound("ping", None, timeout_s=5))) for _ in range(3)
    ]
    await stream.wait_sent(3)
    stream._mark_closed("process exited with status 1")
    for reply in await asyncio.gather(*tasks):
        err = frame.decode_error(reply.error or b"")
        assert err.code == codes.BACKEND_UNAVAILABLE == -31000
        assert "'github'" in err.message
        assert "process exited with status 1" in err.message
        assert err.data == {"source": "gateway", "backend": "github"}
    # no cancellation is sent to a closed stream
    assert [m.get("method") for m in stream.sent] == ["ping"] * 3


async def test_requests_after_close_are_unavailable_without_sending() -> None:
    stream = MemoryStream("gone")
    stream._mark_closed("shut down")
    reply = await stream.request(Outbound("ping", None, timeout_s=1))
    err = frame.decode_error(reply.error or b"")
    assert err.code == codes.BACKEND_UNAVAILABLE
    assert "shut down" in err.message
    assert stream.sent == []
    await stream.notify("notifications/initialized", None)
    assert stream.sent == []


async def test_send_failure_is_unavailable() -> None:
    stream = MemoryStream("broken")
    stream.fail_with = BrokenPipeError("pipe closed")
    reply = await stream.request(Outbound("ping", None, timeout_s=1))
    err = frame.decode_error(reply.error or b"")
    assert err.code == codes.BACKEND_UNAVAILABLE
    assert "pipe closed" in err.message
    stream.fail_with = UpstreamClosed()
    reply = await stream.request(Outbound("ping", None, timeout_s=1))
    assert frame.decode_error(reply.error or b"").code == codes.BACKEND_UNAVAILABLE
    assert stream._pending == {}


async def _answered(stream: MemoryStream) -> list[dict[str, Any]]:
    """Server requests are answered from their own task (a client may take minutes)."""
    await stream.wait_sent(1)
    return stream.sent


@pytest.mark.parametrize("server_id", [7, "srv-1", 0])
async def test_server_ping_is_answered_with_empty_result(server_id: Any) -> None:
    stream = MemoryStream()
    await stream._dispatch(
        json.dumps({"jsonrpc": "2.0", "id": server_id, "method": "ping"}).encode()
    )
    assert await _answered(stream) == [{"jsonrpc": "2.0", "id": server_id, "result": {}}]
    assert stream.notifications == []


async def test_a_server_request_with_no_client_to_route_to_is_refused() -> None:
    stream = MemoryStream()
    await stream._dispatch(
        b'{"jsonrpc":"2.0","id":"r","method":"sampling/createMessage","params":{}}'
    )
    [sent] = await _answered(stream)
    assert sent["id"] == "r"
    assert sent["error"]["code"] == codes.INTERNAL_ERROR
    assert "no single client" in sent["error"]["message"]


async def test_notifications_go_to_the_handler_with_raw_params() -> None:
    stream = MemoryStream()
    await stream._dispatch(
        b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{ "a" : 1 }}'
    )
    # A log line outside any request on a shared stream belongs to no provable client: dropped.
    await stream._dispatch(b'{"jsonrpc":"2.0","method":"notifications/message"}')
    assert stream.notifications == [("notifications/tools/list_changed", b'{ "a" : 1 }')]
    assert stream.unattributed == 1
    assert stream.sent == []


async def test_notify_sends_a_notification() -> None:
    stream = MemoryStream()
    await stream.notify("notifications/initialized", None)
    assert stream.sent == [{"jsonrpc": "2.0", "method": "notifications/initialized"}]
