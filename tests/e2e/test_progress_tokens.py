"""A progress token reaches a shared backend only as the gateway minted it, however a client
spells the key: one client's progress never lands on another client's request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import FIXTURES, PYTHON, Gateway
from tests.rpc import MODERN_META, RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def _sse_messages(body: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[len(b"data: ") :])
        for line in body.split(b"\n")
        if line.startswith(b"data: ")
    ]


async def test_escaped_progress_tokens_never_reach_another_clients_stream(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    # A 2026-07-28 stdio backend: one connection shared by every client.
    io = {"command": PYTHON, "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "io"]}
    gw = gateway_factory({"servers": {"io": io}})
    gw.wait_backend("io")
    bob = await RawClient(gw.url, http, era="modern").open()
    alice = await RawClient(gw.url, http, era="modern").open()

    bob_params = {
        "name": "io_ticks",
        "arguments": {"count": 30, "interval_ms": 100},
        "_meta": {"progressToken": "bob-token"},
    }
    bob_call = asyncio.create_task(bob.request("tools/call", bob_params, request_id=1))

    async def alice_call(token: int) -> list[dict[str, Any]]:
        params = {
            "name": "io_ticks",
            "arguments": {"count": 1, "interval_ms": 0},
            "_meta": {**MODERN_META, "progressToken": token},
        }
        body = {"jsonrpc": "2.0", "id": token, "method": "tools/call", "params": params}
        # The same key, spelled with an escape: it decodes to "progressToken" everywhere.
        raw = json.dumps(body).replace('"progressToken"', '"progress\\u0054oken"').encode()
        resp = await alice.post(raw, alice.headers("tools/call", params))
        assert resp.status == 200, resp.body
        if resp.headers["Content-Type"].startswith("text/event-stream"):
            return _sse_messages(resp.body)
        return [resp.json]

    # Every token bob's upstream request id could be, while his call is in flight.
    calls = await asyncio.wait_for(asyncio.gather(*(alice_call(t) for t in range(1, 41))), 20)
    assert not bob_call.done(), "bob's call ended before alice's were all answered"
    alice_seen = [message for messages in calls for message in messages]
    resp = await asyncio.wait_for(bob_call, 30)
    assert not bob_call.cancelled()

    bob_seen = _sse_messages(resp.body)
    bob_progress = [m["params"] for m in bob_seen if m.get("method") == "notifications/progress"]
    assert [(p["progressToken"], p["progress"], p["total"]) for p in bob_progress] == [
        ("bob-token", i, 30) for i in range(1, 31)
    ]
    assert bob_seen[-1]["result"]["content"][0]["text"] == "ticked 30"
    alice_progress = [m["params"] for m in alice_seen if m.get("method")]
    # Alice gets her own progress back, under her own token, and nothing of bob's.
    assert all(p["total"] == 1 for p in alice_progress)
    answers = [m for m in alice_seen if "result" in m]
    assert sorted(m["id"] for m in answers) == list(range(1, 41))
    for p in alice_progress:
        assert p["progressToken"] in range(1, 41)
