"""Tasks (2025-11-25) through Switchyard, driven by the official TypeScript SDK client."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest

from tests.e2e.test_reference_servers import EVERYTHING, NODE
from tests.harness import NODE_DIR, Gateway, start_gateway
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Anonymous clients are one principal: per_session keeps each client's tasks its own.
    ev = {"command": str(NODE), "args": [str(EVERYTHING), "stdio"], "isolation": "per_session"}
    config = {"servers": {"ev": ev}}
    gw = start_gateway(config, tmp_path_factory.mktemp("tasks"))
    try:
        gw.wait_backend("ev")
        yield gw
    finally:
        gw.stop()


def _ts_tasks(gateway: Gateway) -> dict[str, object]:
    out = subprocess.run(
        [
            str(NODE),
            str(NODE_DIR / "ts_tasks.mjs"),
            "--url",
            gateway.url,
            "--tool",
            "ev_simulate-research-query",
            "--arguments",
            '{"topic": "rail yards"}',
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def test_a_task_is_created_followed_listed_and_fetched(gateway: Gateway) -> None:
    seen = _ts_tasks(gateway)
    caps = seen["capabilities"]
    assert isinstance(caps, dict) and caps["tasks"]["requests"] == {"tools": {"call": {}}}
    messages = seen["messages"]
    assert isinstance(messages, list)
    assert messages[0] == "taskCreated" and messages[-1] == "result"
    result = seen["result"]
    assert (
        isinstance(result, dict) and "# Research Report: rail yards" in result["content"][0]["text"]
    )
    assert seen["listed"] == [seen["taskId"]]
    assert seen["status"] == "completed"
    assert seen["unknown"] == -32602


async def test_another_clients_task_is_unknown_to_everyone_else(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as http:
        owner = await RawClient(gateway.url, http).open()
        created = await owner.result(
            "tools/call",
            {
                "name": "ev_simulate-research-query",
                "arguments": {"topic": "t"},
                "task": {"ttl": 60000},
            },
        )
        task_id = created["task"]["taskId"]
        mine = await owner.result("tasks/get", {"taskId": task_id})
        assert mine["taskId"] == task_id
        stranger = await RawClient(gateway.url, http).open()
        for method in ("tasks/get", "tasks/result", "tasks/cancel"):
            resp = await stranger.request(method, {"taskId": task_id})
            assert resp.json["error"] == {"code": -32602, "message": f"Unknown task: {task_id}"}
        assert (await stranger.result("tasks/list"))["tasks"] == []
        cancelled = await owner.result("tasks/cancel", {"taskId": task_id})
        assert cancelled["status"] == "cancelled"
