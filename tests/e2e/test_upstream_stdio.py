"""A stdio backend's oversize or unreadable message costs only the request it answers: the
shared connection, its other clients' calls and the process all carry on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from switchyard.protocol import codes
from tests.harness import FIXTURES, PYTHON, Gateway
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

LIMIT = 1024 * 1024


async def call(client: RawClient, name: str, request_id: int, **args: Any) -> Any:
    resp = await client.request("tools/call", {"name": name, "arguments": args}, request_id)
    assert resp.status == 200, (resp.status, resp.body[:300])
    return resp.json


async def test_an_oversize_answer_fails_only_its_own_request(
    gateway_factory: Callable[..., Gateway],
) -> None:
    backend = {
        "command": PYTHON,
        "args": [str(FIXTURES / "raw_stdio.py"), "--scenario", "crashy", "--huge"],
        "isolation": "shared",
    }
    gw = gateway_factory({"gateway": {"max_message_bytes": LIMIT}, "servers": {"fx": backend}})
    gw.wait_backend("fx")
    async with aiohttp.ClientSession() as http:
        alice = await RawClient(gw.url, http).open()
        bob = await RawClient(gw.url, http).open()
        pid = (await call(alice, "fx_whoami", 1))["result"]["content"][0]["text"]
        # Alice's call is in flight on the shared process while Bob's answer is oversize.
        slow = asyncio.create_task(call(alice, "fx_sleep", 2, ms=1500))
        huge = await call(bob, "fx_huge", 3, bytes=4 * LIMIT)
        assert huge["error"]["code"] == codes.RESULT_TOO_LARGE
        assert huge["error"]["data"]["source"] == "gateway"
        assert (await asyncio.wait_for(slow, 10))["result"]["content"][0]["text"] == "slept 1500"
        # Just under the limit still goes through, and the reader is back in step.
        fits = await call(bob, "fx_huge", 4, bytes=LIMIT // 2)
        assert len(fits["result"]["content"][0]["text"]) == LIMIT // 2
        echo = await call(bob, "fx_echo", 5, text="after")
        assert echo["result"]["content"][0]["text"] == "after"
        again = (await call(alice, "fx_whoami", 6))["result"]["content"][0]["text"]
        assert again == pid  # the same process: never restarted
    status = gw.readyz()["backends"]["fx"]
    assert status["state"] == "up" and status["restarts"] == 0


async def test_a_frame_nested_past_any_readers_depth_is_dropped_and_the_reader_carries_on(
    gateway_factory: Callable[..., Gateway],
) -> None:
    # msgspec raised RecursionError, which no reader expected: it ended the stdout reader, and
    # with it every call of every client on the shared connection.
    backend = {
        "command": PYTHON,
        "args": [str(FIXTURES / "deep_stdio.py")],
        "isolation": "shared",
        "timeout": 2,
    }
    gw = gateway_factory({"servers": {"deep": backend}})
    gw.wait_backend("deep")
    async with aiohttp.ClientSession() as http:
        alice = await RawClient(gw.url, http).open()
        bob = await RawClient(gw.url, http).open()
        await alice.result("logging/setLevel", {"level": "debug"}, request_id=1)
        note = await call(alice, "deep_deep_note", 2)
        assert note["result"]["content"][0]["text"] == "after the deep note"
        # An answer nested that deep is no answer: its call runs into its timeout, alone.
        lost = asyncio.create_task(call(bob, "deep_deep_answer", 3))
        echo = await call(alice, "deep_echo", 3, text="meanwhile")
        assert echo["result"]["content"][0]["text"] == "meanwhile"
        assert (await asyncio.wait_for(lost, 10))["error"]["code"] == codes.BACKEND_TIMEOUT
        echo = await call(bob, "deep_echo", 4, text="after")
        assert echo["result"]["content"][0]["text"] == "after"
    status = gw.readyz()["backends"]["deep"]
    assert status["state"] == "up" and status["restarts"] == 0
