"""Approvals end to end: real gateways, real backends, the official Python SDK in both eras,
raw HTTP for what an attacker would send, the REST APIs, the CLI and a real webhook receiver.

Every gated call here is the fixture's `flood` with count 0, which appends one line to
`done_file` each time it really runs: "runs once" is a line count, not a log message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
import yaml
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitResult

from switchyard.policies.approval_state import signature_valid
from tests.databases import pg_schema
from tests.harness import (
    BIN,
    FIXTURES,
    NODE_DIR,
    PYTHON,
    Gateway,
    create_key,
    register_secret,
    start_gateway,
    stdio_fixture,
)
from tests.rpc import MODERN_META, RawClient, Response

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

DENIED, EXPIRED, STATE_INVALID, POLICY_CHANGED, USED = -31040, -31041, -31042, -31043, -31045
SECRET = register_secret("approval-secret-" + secrets.token_hex(8))
HOOK_SECRET = register_secret("webhook-secret-" + secrets.token_hex(8))
ELICIT_CAPS = {"elicitation": {"form": {}, "url": {}}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """A real HTTP server standing in for a chat or ticketing system."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def for_ticket(self, ticket_id: str, timeout: float = 10.0) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, body in list(self.received):
                if json.loads(body)["ticket"]["id"] == ticket_id:
                    return headers, body
            time.sleep(0.05)
        raise AssertionError(f"no webhook for {ticket_id}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (the check Switchyard ships for receivers written in Python)."""
    return signature_valid(secret.encode(), headers.get("x-switchyard-signature"), body)


def approvals_config(
    data: Path, receiver: Receiver | None, *, ttl: float = 600, extra_rule: bool = False
) -> dict[str, Any]:
    annotated = stdio_fixture("crashy", isolation="shared")
    annotated["args"].append("--annotated")
    rules: list[dict[str, Any]] = [
        # The caller's own user confirms a flood of size 1; anything else needs an approver.
        {"name": "confirm", "tools": ["flood"], "arguments": {"size": {"equals": 1}}},
        {"name": "greet", "backends": ["m"], "tools": ["introduce"]},
        {"name": "floods", "tools": ["flood"], "approver": "approver"},
        {
            "name": "destructive",
            "backends": ["an"],
            "annotations": {"destructiveHint": True},
            "approver": "approver",
        },
    ]
    if extra_rule:
        rules.insert(0, {"name": "echo-rm", "tools": ["echo"], "approver": "approver"})
    config: dict[str, Any] = {
        "auth": {
            "enabled": True,
            "data_dir": str(data),
            "rules": [{"effect": "allow", "principals": ["*"]}],
        },
        "storage": {"data_dir": str(data / "db")},
        "servers": {
            "fx": stdio_fixture("chatty", isolation="shared"),
            "an": annotated,
            # A 2026-07-28 backend that itself asks the client for input (MRTR).
            "m": {"command": PYTHON, "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "m"]},
        },
        "approvals": {
            "enabled": True,
            "secret": SECRET,
            "ticket_ttl": ttl,
            "elicitation_wait": 20,
            "rules": rules,
        },
    }
    if receiver is not None:
        config["approvals"]["webhook"] = {"url": receiver.url, "secret": HOOK_SECRET}
    return config


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("approvals")
    keys = {
        "alice": create_key(data, "alice", "dev"),
        "bob": create_key(data, "bob", "dev"),
        "carol": create_key(data, "carol", "approver"),
        "dave": create_key(data, "dave", "approver"),
    }
    receiver = Receiver()
    config = approvals_config(data, receiver)
    config["audit"] = {
        "enabled": True,
        "hmac_key": register_secret("audit-hmac-" + secrets.token_hex(12)),
        "keys_dir": str(data / "audit-keys"),
    }
    gw = start_gateway(config, data)
    try:
        gw.wait_backend("fx")
        gw.wait_backend("an")
        gw.wait_backend("m")
        yield {"gw": gw, "keys": keys, "data": data, "receiver": receiver, "config": config}
    finally:
        gw.stop()
        receiver.close()


def done_file(tmp: Path) -> str:
    return str(tmp / f"runs-{secrets.token_hex(4)}.txt")


def runs(path: str) -> int:
    return Path(path).read_text().count("flooded") if os.path.exists(path) else 0


def flood_args(path: str, size: int = 0) -> dict[str, Any]:
    return {"count": 0, "size": size, "done_file": path}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def rest(
    gw: Gateway, method: str, path: str, key: str | None, body: Any = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.request(method, gw.base + path, json=body, headers=auth(key) if key else {}) as resp,
    ):
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode()


async def decide(
    gw: Gateway, key: str, ticket: str, verb: str = "approve", reason: str = ""
) -> Any:
    status, body = await rest(
        gw, "POST", f"/admin/v1/approvals/{ticket}/{verb}", key, {"reason": reason or None}
    )
    assert status == 200, (status, body)
    return body


async def raw_call(
    gw: Gateway,
    key: str,
    arguments: dict[str, Any],
    *,
    tool: str = "fx_flood",
    state: str | None = None,
    responses: dict[str, Any] | None = None,
    caps: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One 2026-07-28 `tools/call` as bytes on the wire; the JSON-RPC answer."""
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if state is not None:
        params["requestState"] = state
    if responses is not None:
        params["inputResponses"] = responses
    if caps is not None:
        params["_meta"] = {**MODERN_META, "io.modelcontextprotocol/clientCapabilities": caps}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        client = RawClient(gw.url, http, era="modern", extra_headers=auth(key))
        resp: Response = await client.request("tools/call", params, secrets.randbelow(10**6))
    assert resp.status in (200, 403), (resp.status, resp.body)
    body: dict[str, Any] = resp.json
    return body


def pending_ticket(answer: dict[str, Any]) -> str:
    result = answer["result"]
    assert result["isError"] is True, answer
    approval = result["structuredContent"]["approval"]
    assert approval["status"] == "pending"
    assert approval["id"] in result["content"][0]["text"]
    return str(approval["id"])


def error_code(answer: dict[str, Any]) -> int:
    assert "error" in answer, answer
    return int(answer["error"]["code"])


def sdk(gw: Gateway, key: str, mode: str = "auto", **callbacks: Any) -> Client:
    http = httpx2.AsyncClient(headers=auth(key), timeout=30)
    transport = streamable_http_client(gw.url, http_client=http)
    if mode == "legacy":
        return Client(transport, mode="legacy", **callbacks)  # type: ignore[arg-type]
    return Client(transport, **callbacks)  # type: ignore[arg-type]


def text_of(result: Any) -> str:
    return str(result.content[0].text)


# -- 2026-07-28: input_required with a signed requestState ------------------------------------


async def test_modern_sdk_caller_confirmation_runs_the_call_once(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    asked: list[Any] = []

    async def confirm(ctx: Any, params: Any) -> ElicitResult:
        asked.append(params)
        return ElicitResult(action="accept", content={"approve": True})

    path = done_file(tmp_path)
    async with sdk(gw, keys["alice"], elicitation_callback=confirm) as client:
        result = await client.call_tool("fx_flood", flood_args(path, size=1))
    assert text_of(result) == "flooded 0" and not result.is_error
    assert runs(path) == 1
    assert len(asked) == 1 and asked[0].mode == "form"
    assert "fx_flood" in asked[0].message


async def test_modern_sdk_caller_decline_is_denied_and_nothing_runs(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]

    async def decline(ctx: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="decline")

    path = done_file(tmp_path)
    async with sdk(gw, keys["alice"], elicitation_callback=decline) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("fx_flood", flood_args(path, size=1))
    assert refused.value.error.code == DENIED
    assert "caller-confirmed" in refused.value.error.message
    assert runs(path) == 0


async def test_modern_sdk_approver_decides_through_the_url_and_the_retry_runs_once(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    urls: list[str] = []

    async def open_page(ctx: Any, params: Any) -> ElicitResult:
        # The user follows the link; an approver decides there before the client retries.
        urls.append(params.url)
        ticket = params.url.rsplit("/", 1)[1]
        status, page = await rest(gw, "GET", f"/approvals/{ticket}", keys["carol"])
        assert status == 200 and ticket in page and "fx_flood" in page
        await decide(gw, keys["carol"], ticket)
        return ElicitResult(action="accept")

    path = done_file(tmp_path)
    async with sdk(gw, keys["alice"], elicitation_callback=open_page) as client:
        result = await client.call_tool("fx_flood", flood_args(path))
    assert text_of(result) == "flooded 0"
    assert runs(path) == 1
    assert len(urls) == 1 and urls[0].startswith(f"{gw.base}/approvals/apr_")


async def test_modern_raw_flow_approve_then_replay_is_refused(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    args = flood_args(path)
    first = await raw_call(gw, keys["alice"], args, caps=ELICIT_CAPS)
    result = first["result"]
    assert result["resultType"] == "input_required"
    request = result["inputRequests"]["switchyard.approval"]
    assert request["method"] == "elicitation/create" and request["params"]["mode"] == "url"
    ticket = request["params"]["url"].rsplit("/", 1)[1]
    state = result["requestState"]
    # Still pending: the retry is told so, and nothing runs.
    waiting = await raw_call(gw, keys["alice"], args, state=state, caps=ELICIT_CAPS)
    assert pending_ticket(waiting) == ticket and runs(path) == 0
    await decide(gw, keys["carol"], ticket)
    done = await raw_call(gw, keys["alice"], args, state=state, caps=ELICIT_CAPS)
    assert done["result"]["content"][0]["text"] == "flooded 0"
    assert done["result"]["resultType"] == "complete"
    again = await raw_call(gw, keys["alice"], args, state=state, caps=ELICIT_CAPS)
    assert error_code(again) == USED and ticket in again["error"]["message"]
    assert runs(path) == 1


async def test_modern_backend_rounds_after_approval_continue_the_same_approval(
    world: dict[str, Any],
) -> None:
    gw, keys = world["gw"], world["keys"]
    asked: list[str] = []

    async def answer(ctx: Any, params: Any) -> ElicitResult:
        fields = set(params.requested_schema["properties"])
        asked.append(",".join(sorted(fields)))
        if fields == {"approve"}:
            return ElicitResult(action="accept", content={"approve": True})
        return ElicitResult(action="accept", content={"name": "Ada"})

    async with sdk(gw, keys["alice"], elicitation_callback=answer) as client:
        result = await client.call_tool("m_introduce", {})
    assert text_of(result) == "Hello, Ada!"
    assert asked == ["approve", "name"]


async def test_a_round_of_an_approved_call_is_taken_once(world: dict[str, Any]) -> None:
    gw, keys = world["gw"], world["keys"]
    first = await raw_call(gw, keys["bob"], {}, tool="m_introduce", caps=ELICIT_CAPS)
    yes = {"switchyard.approval": {"action": "accept", "content": {"approve": True}}}
    asked = await raw_call(
        gw,
        keys["bob"],
        {},
        tool="m_introduce",
        state=first["result"]["requestState"],
        responses=yes,
        caps=ELICIT_CAPS,
    )
    result = asked["result"]
    assert result["resultType"] == "input_required"
    (key,) = result["inputRequests"]
    assert key != "switchyard.approval"
    state = result["requestState"]
    assert state.startswith("sy-approval.1.")
    name = {key: {"action": "accept", "content": {"name": "Grace"}}}
    done = await raw_call(
        gw, keys["bob"], {}, tool="m_introduce", state=state, responses=name, caps=ELICIT_CAPS
    )
    assert done["result"]["content"][0]["text"] == "Hello, Grace!"
    again = await raw_call(
        gw, keys["bob"], {}, tool="m_introduce", state=state, responses=name, caps=ELICIT_CAPS
    )
    assert error_code(again) == USED and "round" in again["error"]["message"]
    stolen = await raw_call(
        gw, keys["alice"], {}, tool="m_introduce", state=state, responses=name, caps=ELICIT_CAPS
    )
    assert error_code(stolen) == STATE_INVALID


# -- 2025: elicitation during the call, or an isError result and a retry ------------------------


async def test_legacy_sdk_without_elicitation_gets_the_ticket_and_the_retry_runs_once(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    async with sdk(gw, keys["alice"], mode="legacy") as client:
        waiting = await client.call_tool("fx_flood", flood_args(path))
        assert waiting.is_error
        approval = waiting.structured_content["approval"]  # type: ignore[index]
        ticket = approval["id"]
        assert f"ticket {ticket}" in text_of(waiting)
        assert "call this tool again with the same arguments" in text_of(waiting)
        assert runs(path) == 0
        await decide(gw, keys["carol"], ticket)
        done = await client.call_tool("fx_flood", flood_args(path))
        assert text_of(done) == "flooded 0" and not done.is_error
        again = await client.call_tool("fx_flood", flood_args(path))
        assert again.is_error
        assert again.structured_content["approval"]["id"] != ticket  # type: ignore[index]
    assert runs(path) == 1


async def test_legacy_sdk_with_elicitation_confirms_during_the_call(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    modes: list[str] = []

    async def confirm(ctx: Any, params: Any) -> ElicitResult:
        modes.append(params.mode)
        return ElicitResult(action="accept", content={"approve": True})

    path = done_file(tmp_path)
    async with sdk(gw, keys["bob"], mode="legacy", elicitation_callback=confirm) as client:
        result = await client.call_tool("fx_flood", flood_args(path, size=1))
    assert text_of(result) == "flooded 0" and modes == ["form"]
    assert runs(path) == 1


async def test_legacy_sdk_url_elicitation_runs_once_an_approver_decided(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]

    async def open_page(ctx: Any, params: Any) -> ElicitResult:
        assert params.mode == "url"
        await decide(gw, keys["dave"], params.url.rsplit("/", 1)[1])
        return ElicitResult(action="accept")

    path = done_file(tmp_path)
    async with sdk(gw, keys["bob"], mode="legacy", elicitation_callback=open_page) as client:
        result = await client.call_tool("fx_flood", flood_args(path))
    assert text_of(result) == "flooded 0"
    assert runs(path) == 1


async def test_a_headless_accept_never_stands_in_for_an_approver(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]

    async def yes(ctx: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"approve": True})

    path = done_file(tmp_path)
    async with sdk(gw, keys["bob"], mode="legacy", elicitation_callback=yes) as client:
        result = await client.call_tool("fx_flood", flood_args(path))
    assert result.is_error and runs(path) == 0
    # A forged confirmation on the modern retry does not approve an approver's ticket either.
    args = flood_args(path)
    first = await raw_call(gw, keys["bob"], args, caps=ELICIT_CAPS)
    state = first["result"]["requestState"]
    forged = {"switchyard.approval": {"action": "accept", "content": {"approve": True}}}
    answer = await raw_call(gw, keys["bob"], args, state=state, responses=forged, caps=ELICIT_CAPS)
    assert pending_ticket(answer) and runs(path) == 0


# -- the official TypeScript SDK client (2025) -----------------------------------------------


def ts_approval(gw: Gateway, key: str, approver: str, mode: str, args: dict[str, Any]) -> Any:
    cmd = [
        str(NODE_DIR / "node_modules" / ".bin" / "node"),
        str(NODE_DIR / "ts_approval.mjs"),
        "--url",
        gw.url,
        "--key",
        key,
        "--approver-key",
        approver,
        "--mode",
        mode,
        "--tool",
        "fx_flood",
        "--arguments",
        json.dumps(args),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=NODE_DIR)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_typescript_sdk_without_elicitation_retries_after_approval_once(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    out = await asyncio.to_thread(
        ts_approval, gw, keys["alice"], keys["carol"], "retry", flood_args(path)
    )
    first, second, third = (c["result"] for c in out["calls"])
    assert first["isError"] and first["structuredContent"]["approval"]["status"] == "pending"
    assert second["content"][0]["text"] == "flooded 0" and not second.get("isError")
    assert third["isError"]
    assert (
        third["structuredContent"]["approval"]["id"] != first["structuredContent"]["approval"]["id"]
    )
    assert runs(path) == 1 and out["elicitations"] == []


@pytest.mark.parametrize("mode", ["confirm", "url"])
async def test_typescript_sdk_with_elicitation_runs_once(
    world: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    args = flood_args(path, size=1 if mode == "confirm" else 0)
    out = await asyncio.to_thread(ts_approval, gw, keys["bob"], keys["carol"], mode, args)
    assert out["calls"][0]["result"]["content"][0]["text"] == "flooded 0"
    assert [e["mode"] for e in out["elicitations"]] == ["form" if mode == "confirm" else "url"]
    assert runs(path) == 1


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_switchyard_stdio_confirms_in_both_eras(
    world: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gw, keys = world["gw"], world["keys"]
    asked: list[str] = []

    async def confirm(ctx: Any, params: Any) -> ElicitResult:
        asked.append(params.mode)
        return ElicitResult(action="accept", content={"approve": True})

    params = StdioServerParameters(
        command=str(BIN / "switchyard"),
        args=["stdio", "--config", str(gw.config_path), "--log-level", "warning"],
        env={**os.environ, "SWITCHYARD_API_KEY": keys["alice"]},
    )
    path = done_file(tmp_path)
    async with Client(params, mode=mode, elicitation_callback=confirm) as client:  # type: ignore[arg-type]
        result = await client.call_tool("fx_flood", flood_args(path, size=1))
    assert text_of(result) == "flooded 0"
    assert asked == ["form"] and runs(path) == 1


# -- decisions: deny, expiry, policy change --------------------------------------------------


async def test_deny_gives_the_exact_error_with_the_reason(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    ticket = pending_ticket(await raw_call(gw, keys["alice"], flood_args(path)))
    status, body = await rest(gw, "POST", f"/admin/v1/approvals/{ticket}/deny", keys["carol"], {})
    assert status == 400 and "reason" in body["error"]
    await decide(gw, keys["carol"], ticket, "deny", "not during the freeze")
    answer = await raw_call(gw, keys["alice"], flood_args(path))
    assert error_code(answer) == DENIED
    assert answer["error"]["message"] == (
        f"Approval denied: ticket {ticket} was denied by api_key#carol: not during the freeze"
    )
    assert answer["error"]["data"]["ticket"] == ticket
    status, body = await rest(gw, "POST", f"/admin/v1/approvals/{ticket}/approve", keys["dave"])
    assert status == 409 and "denied" in body["error"]
    assert runs(path) == 0


async def test_an_expired_approval_is_refused_with_the_exact_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    alice, carol = create_key(data, "alice", "dev"), create_key(data, "carol", "approver")
    gw = start_gateway(approvals_config(data, None, ttl=1.5), tmp_path)
    try:
        gw.wait_backend("fx")
        path = done_file(tmp_path)
        first = await raw_call(gw, alice, flood_args(path), caps=ELICIT_CAPS)
        state = first["result"]["requestState"]
        ticket = first["result"]["inputRequests"]["switchyard.approval"]["params"]["url"]
        await decide(gw, carol, ticket.rsplit("/", 1)[1])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, shown = await rest(
                gw, "GET", f"/admin/v1/approvals/{ticket.rsplit('/', 1)[1]}", carol
            )
            if shown["status"] == "expired":
                break
            await asyncio.sleep(0.1)
        answer = await raw_call(gw, alice, flood_args(path), state=state, caps=ELICIT_CAPS)
        assert error_code(answer) == STATE_INVALID
        assert answer["error"]["message"] == "Approval refused: the approval state has expired"
        legacy = await raw_call(gw, alice, flood_args(path))
        assert error_code(legacy) == EXPIRED
        assert legacy["error"]["message"].startswith(
            f"Approval expired: ticket {shown['id']} was not used before"
        )
        assert runs(path) == 0
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{gw.base}/metrics", headers={"Authorization": f"Bearer {carol}"}) as resp,
        ):
            assert resp.status == 200
            page = await resp.text()
        from prometheus_client.parser import text_string_to_metric_families

        events = {
            s.labels["event"]: s.value
            for family in text_string_to_metric_families(page)
            for s in family.samples
            if s.name == "switchyard_approval_events_total"
        }
        # The one ticket: requested, approved, then expired unused; never consumed.
        assert events.get("requested") == 1 and events.get("approved") == 1
        assert events.get("expired") == 1 and "consumed" not in events
    finally:
        gw.stop()


async def test_an_approval_made_under_another_policy_is_refused(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    # A second gateway process on the same database, with one rule more.
    changed = approvals_config(world["data"], None, extra_rule=True)
    other = start_gateway(changed, tmp_path)
    try:
        other.wait_backend("fx")
        path = done_file(tmp_path)
        ticket = pending_ticket(await raw_call(gw, keys["alice"], flood_args(path)))
        status, body = await rest(
            other, "POST", f"/admin/v1/approvals/{ticket}/approve", keys["carol"]
        )
        assert status == 409 and "policy changed" in body["error"]
        ticket = pending_ticket(await raw_call(gw, keys["alice"], flood_args(path)))
        await decide(gw, keys["carol"], ticket)
        answer = await raw_call(other, keys["alice"], flood_args(path))
        assert error_code(answer) == POLICY_CHANGED
        assert ticket in answer["error"]["message"]
        assert runs(path) == 0
    finally:
        other.stop()


async def test_agent_mode_runs_the_listed_tools_and_escalates_what_waits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    alice = create_key(data, "alice", "dev")
    carol = create_key(data, "carol", "approver")
    oncall = create_key(data, "olga", "oncall")
    receiver = Receiver()
    config = approvals_config(data, receiver)
    config["approvals"].update(
        default="require",
        default_approver="approver",
        auto_execute=["fx_echo"],
        rules=[],
        escalate_after=1,
        escalate_to="oncall",
    )
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("fx")
        echo = await raw_call(gw, alice, {"text": "hi"}, tool="fx_echo")
        assert echo["result"]["content"][0]["text"] == "hi"  # agent mode: runs at once
        path = done_file(tmp_path)
        ticket = pending_ticket(await raw_call(gw, alice, flood_args(path)))  # fail closed
        _, shown = await rest(gw, "GET", f"/admin/v1/approvals/{ticket}", carol)
        assert (shown["rule"], shown["approver"]) == ("default", "approver")
        status, body = await rest(gw, "POST", f"/admin/v1/approvals/{ticket}/approve", oncall)
        assert status == 403, body  # not escalated yet: on-call may not decide
        deadline = time.monotonic() + 15
        escalated = None
        while escalated is None and time.monotonic() < deadline:
            for headers, raw in list(receiver.received):
                sent = json.loads(raw)
                if sent["event"] == "approval.escalated" and sent["ticket"]["id"] == ticket:
                    assert verify_signature(HOOK_SECRET, headers, raw)
                    escalated = sent
            await asyncio.sleep(0.1)
        assert escalated is not None and escalated["ticket"]["escalatedAt"] is not None
        await decide(gw, oncall, ticket)
        done = await raw_call(gw, alice, flood_args(path))
        assert done["result"]["content"][0]["text"] == "flooded 0"
        assert runs(path) == 1
    finally:
        gw.stop()
        receiver.close()


async def test_a_reload_that_changes_the_rules_voids_earlier_approvals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    alice, carol = create_key(data, "alice", "dev"), create_key(data, "carol", "approver")
    config = approvals_config(data, None)
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("fx")
        path = done_file(tmp_path)
        ticket = pending_ticket(await raw_call(gw, alice, flood_args(path)))
        await decide(gw, carol, ticket)
        before = gw.log_text().count("config reloaded")
        changed = approvals_config(data, None, extra_rule=True)
        gw.config_path.write_text(yaml.safe_dump(changed, sort_keys=False))
        gw.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        reloaded = False
        while not reloaded and time.monotonic() < deadline:
            reloaded = gw.log_text().count("config reloaded") > before
            if not reloaded:
                await asyncio.sleep(0.05)
        assert reloaded, gw.log_text()[-2000:]
        answer = await raw_call(gw, alice, flood_args(path))
        assert error_code(answer) == POLICY_CHANGED and ticket in answer["error"]["message"]
        # The new rules are in force: echo now waits for an approver.
        assert pending_ticket(await raw_call(gw, alice, {"text": "x"}, tool="fx_echo"))
        assert runs(path) == 0
    finally:
        gw.stop()


# -- abuse -------------------------------------------------------------------------------------


async def test_a_state_for_other_arguments_another_principal_or_forged_is_refused(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    first = await raw_call(gw, keys["alice"], flood_args(path), caps=ELICIT_CAPS)
    state = first["result"]["requestState"]
    ticket = first["result"]["inputRequests"]["switchyard.approval"]["params"]["url"].rsplit("/")[
        -1
    ]
    await decide(gw, keys["carol"], ticket)
    other_path = done_file(tmp_path)
    changed = await raw_call(gw, keys["alice"], flood_args(other_path), state=state)
    assert error_code(changed) == STATE_INVALID
    assert "arguments differ" in changed["error"]["message"]
    stolen = await raw_call(gw, keys["bob"], flood_args(path), state=state)
    assert error_code(stolen) == STATE_INVALID
    assert "another caller" in stolen["error"]["message"]
    # Bob's identical call is his own: a new ticket, never alice's approval.
    assert pending_ticket(await raw_call(gw, keys["bob"], flood_args(path))) != ticket
    body, mac = state.rsplit(".", 1)
    forged = body + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    tampered = await raw_call(gw, keys["alice"], flood_args(path), state=forged)
    assert error_code(tampered) == STATE_INVALID
    assert "signature is not valid" in tampered["error"]["message"]
    made_up = await raw_call(gw, keys["alice"], flood_args(path), state="sy-approval.1.e30.AAAA")
    assert error_code(made_up) == STATE_INVALID
    assert runs(path) == 0 and runs(other_path) == 0
    # The rightful retry still runs, once.
    done = await raw_call(gw, keys["alice"], flood_args(path), state=state)
    assert done["result"]["content"][0]["text"] == "flooded 0"
    assert runs(path) == 1


async def test_a_caller_cannot_approve_its_own_call_when_a_role_decides(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    # dave holds the approver role, and still may not approve his own call.
    ticket = pending_ticket(await raw_call(gw, keys["dave"], flood_args(path)))
    status, body = await rest(gw, "POST", f"/admin/v1/approvals/{ticket}/approve", keys["dave"])
    assert (
        status == 403 and body["error"] == "a caller cannot approve its own call: an approver must"
    )
    # Bob (no approver role) cannot see it, let alone approve it.
    status, _ = await rest(gw, "POST", f"/admin/v1/approvals/{ticket}/approve", keys["bob"])
    assert status == 404
    assert pending_ticket(await raw_call(gw, keys["dave"], flood_args(path))) == ticket
    assert runs(path) == 0


async def test_ticket_ids_cannot_be_guessed_and_the_page_needs_a_credential(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    ticket = pending_ticket(await raw_call(gw, keys["alice"], flood_args(done_file(tmp_path))))
    guess = "apr_" + secrets.token_urlsafe(18)
    for verb in ("approve", "deny"):
        status, _ = await rest(
            gw, "POST", f"/admin/v1/approvals/{guess}/{verb}", keys["carol"], {"reason": "x"}
        )
        assert status == 404
    assert (await rest(gw, "GET", f"/admin/v1/approvals/{guess}", keys["carol"]))[0] == 404
    assert (await rest(gw, "GET", f"/approvals/{ticket}", None))[0] == 401
    assert (await rest(gw, "GET", f"/admin/v1/approvals/{ticket}", None))[0] == 401
    assert (await rest(gw, "GET", f"/approvals/{ticket}", "sy_" + "x" * 40))[0] == 401
    assert (await rest(gw, "GET", f"/approvals/{ticket}", keys["bob"]))[0] == 404
    status, page = await rest(gw, "GET", f"/approvals/{ticket}", keys["carol"])
    assert status == 200 and ticket in page


async def test_two_principals_at_once_see_and_run_only_their_own(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    a, b = await asyncio.gather(
        raw_call(gw, keys["alice"], flood_args(path)), raw_call(gw, keys["bob"], flood_args(path))
    )
    ta, tb = pending_ticket(a), pending_ticket(b)
    assert ta != tb
    await decide(gw, keys["carol"], ta)
    ra, rb = await asyncio.gather(
        raw_call(gw, keys["alice"], flood_args(path)), raw_call(gw, keys["bob"], flood_args(path))
    )
    assert ra["result"]["content"][0]["text"] == "flooded 0"
    assert pending_ticket(rb) == tb
    assert runs(path) == 1
    _, mine = await rest(gw, "GET", "/admin/v1/approvals", keys["bob"])
    assert {t["principal"] for t in mine["approvals"]} == {"api_key#bob"}
    assert tb in {t["id"] for t in mine["approvals"]}
    status, _ = await rest(gw, "GET", f"/admin/v1/approvals/{ta}", keys["bob"])
    assert status == 404
    _, everyone = await rest(gw, "GET", "/admin/v1/approvals?status=pending", keys["carol"])
    assert tb in {t["id"] for t in everyone["approvals"]}


async def test_annotations_gate_destructive_tools_and_leave_read_only_ones(
    world: dict[str, Any],
) -> None:
    gw, keys = world["gw"], world["keys"]
    peek = await raw_call(gw, keys["alice"], {"target": "x"}, tool="an_peek")
    assert peek["result"]["content"][0]["text"] == "peeked x"
    wipe = await raw_call(gw, keys["alice"], {"target": "x"}, tool="an_wipe")
    ticket = pending_ticket(wipe)
    _, shown = await rest(gw, "GET", f"/admin/v1/approvals/{ticket}", keys["carol"])
    assert shown["rule"] == "destructive" and shown["approver"] == "approver"
    assert shown["arguments"] == {"target": "x"}  # approvers see what they approve
    status, page = await rest(gw, "GET", f"/approvals/{ticket}", keys["carol"])
    assert status == 200 and "{&quot;target&quot;: &quot;x&quot;}" in page
    echo = await raw_call(gw, keys["alice"], {"text": "hi"}, tool="fx_echo")
    assert echo["result"]["content"][0]["text"] == "hi"


# -- approvers' channels: webhook and CLI --------------------------------------------------------


async def test_the_webhook_is_signed_and_carries_the_ticket(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys, receiver = world["gw"], world["keys"], world["receiver"]
    ticket = pending_ticket(await raw_call(gw, keys["alice"], flood_args(done_file(tmp_path))))
    headers, body = await asyncio.to_thread(receiver.for_ticket, ticket)
    assert verify_signature(HOOK_SECRET, headers, body)
    assert not verify_signature("another-secret-of-16", headers, body)
    assert not verify_signature(HOOK_SECRET, {}, body)
    assert not verify_signature(HOOK_SECRET, headers, body.replace(b"alice", b"mallory"))
    # Recomputed independently: HMAC-SHA256 over "<t>.<body>".
    parts = dict(p.split("=", 1) for p in headers["x-switchyard-signature"].split(","))
    mac = hmac.new(HOOK_SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    assert parts["v1"] == mac.hexdigest()
    # A delivery replayed an hour later is refused by the receiver's check.
    later = int(parts["t"]) + 3600
    assert not signature_valid(HOOK_SECRET.encode(), headers["x-switchyard-signature"], body, later)
    sent = json.loads(body)
    assert sent["event"] == "approval.requested"
    assert sent["ticket"]["principal"] == "api_key#alice" and sent["ticket"]["status"] == "pending"
    assert sent["pageUrl"] == f"{gw.base}/approvals/{ticket}"
    assert SECRET not in body.decode() and keys["alice"] not in body.decode()


async def test_the_cli_lists_and_approves_from_the_same_database(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    ticket = pending_ticket(await raw_call(gw, keys["alice"], flood_args(path)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "switchyard"), "approvals", *args, "--config", str(gw.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = await asyncio.to_thread(cli, "list", "--status", "pending")
    assert listed.returncode == 0 and ticket in listed.stdout
    approved = await asyncio.to_thread(cli, "approve", ticket, "--by", "ops-oncall")
    assert approved.returncode == 0, approved.stderr
    twice = await asyncio.to_thread(cli, "approve", ticket)
    assert twice.returncode == 1 and "not pending" in twice.stderr
    assert (await asyncio.to_thread(cli, "deny", "apr_nope", "--reason", "x")).returncode == 1
    done = await raw_call(gw, keys["alice"], flood_args(path))
    assert done["result"]["content"][0]["text"] == "flooded 0"
    assert runs(path) == 1


async def test_every_approval_event_is_in_the_audit_trail(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    path = done_file(tmp_path)
    ticket = pending_ticket(await raw_call(gw, keys["alice"], flood_args(path)))
    await rest(gw, "POST", f"/admin/v1/approvals/{ticket}/approve", keys["alice"])
    await decide(gw, keys["carol"], ticket)
    await raw_call(gw, keys["alice"], flood_args(path))

    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "switchyard"), "audit", *args, "--config", str(gw.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    deadline = time.monotonic() + 20
    mine: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and "consumed" not in mine:
        out = await asyncio.to_thread(audit, "export", "--since", "2020-01-01")
        assert out.returncode == 0, out.stderr
        assert SECRET not in out.stdout and keys["carol"] not in out.stdout
        records = [json.loads(line) for line in out.stdout.splitlines()]
        mine = {
            r["approval_event"]: r
            for r in records
            if r.get("event") == "approval" and r.get("ticket") == ticket
        }
        await asyncio.sleep(0.2)
    assert {"requested", "decision_refused", "approved", "consumed"} <= set(mine)
    assert mine["approved"]["actor"] == "api_key#carol"
    assert mine["decision_refused"]["actor"] == "api_key#alice"
    assert mine["requested"]["principal"] == "api_key#alice"
    assert mine["requested"]["rule"] == "floods" and mine["requested"]["name"] == "flood"
    verified = await asyncio.to_thread(audit, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


# -- applications: explicit execution ------------------------------------------------------------


async def test_rest_api_lists_tools_in_each_shape_and_executes_through_the_policy(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    status, mcp_tools = await rest(gw, "GET", "/v1/tools", keys["alice"])
    assert status == 200 and "fx_flood" in {t["name"] for t in mcp_tools["tools"]}
    _, openai = await rest(gw, "GET", "/v1/tools?format=openai", keys["alice"])
    fn = next(t for t in openai["tools"] if t["function"]["name"] == "fx_echo")
    assert fn["type"] == "function" and fn["function"]["parameters"]["required"] == ["text"]
    _, anthropic = await rest(gw, "GET", "/v1/tools?format=anthropic", keys["alice"])
    assert any(t["name"] == "an_wipe" and "input_schema" in t for t in anthropic["tools"])
    assert (await rest(gw, "GET", "/v1/tools", None))[0] == 401
    path = done_file(tmp_path)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "fx_flood", "arguments": json.dumps(flood_args(path))},
    }
    status, proposed = await rest(gw, "POST", "/v1/tools/call", keys["alice"], call)
    assert status == 202 and proposed["status"] == "approval_required"
    ticket = proposed["approval"]["id"]
    await decide(gw, keys["carol"], ticket)
    status, done = await rest(gw, "POST", "/v1/tools/call", keys["alice"], call)
    assert status == 200 and done["status"] == "completed" and done["id"] == "call_1"
    assert done["result"]["content"][0]["text"] == "flooded 0"
    status, again = await rest(gw, "POST", "/v1/tools/call", keys["alice"], call)
    assert status == 202 and again["approval"]["id"] != ticket
    anthropic_call = {"type": "tool_use", "id": "tu_1", "name": "fx_echo", "input": {"text": "a"}}
    status, echoed = await rest(gw, "POST", "/v1/tools/call", keys["alice"], anthropic_call)
    assert status == 200 and echoed["result"]["content"][0]["text"] == "a"
    assert runs(path) == 1


async def test_a_thousand_pending_tickets_hold_no_request_task_or_session(
    world: dict[str, Any], tmp_path: Path
) -> None:
    gw, keys = world["gw"], world["keys"]
    pid = gw.process.pid
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> str:
        async with semaphore:
            args = {"count": 0, "size": 0, "done_file": f"/nonexistent/{i}"}
            return pending_ticket(await raw_call(gw, keys["bob"], args))

    async def make(numbers: range) -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in numbers)), 300)

    def descriptors() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    async def settled() -> int:
        # The callers' last connections close a moment after their answers: the count is
        # read once it stops falling (bounded), so it holds what stays, not what is leaving.
        last = descriptors()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            now = descriptors()
            if now >= last:
                return min(now, last)
            last = now
        return last

    tickets = await make(range(100))
    after_100 = await settled()
    tickets += await make(range(100, 1000))
    after_1000 = await settled()
    # Every one of the 1,000 calls was answered (so no request waits), and 900 more pending
    # tickets added no socket, pipe or file to the process: nothing is held per ticket.
    assert len(set(tickets)) == 1000
    assert after_1000 <= after_100 + 4, (after_100, after_1000)
    assert gw.readyz()["backends"]["fx"]["isolatedSessions"] == 0


# -- two gateway processes sharing PostgreSQL ------------------------------------------------------


async def test_a_ticket_approved_on_one_process_is_consumed_exactly_once_across_two(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    alice, carol = create_key(data, "alice", "dev"), create_key(data, "carol", "approver")
    async with pg_schema("sy_approvals") as url:
        config = approvals_config(data, None)
        config["storage"] = {"database_url": url}
        a = start_gateway(config, tmp_path)
        b = start_gateway(config, tmp_path)
        try:
            a.wait_backend("fx")
            b.wait_backend("fx")
            path = done_file(tmp_path)
            ticket = pending_ticket(await raw_call(a, alice, flood_args(path)))
            status, shown = await rest(b, "GET", f"/admin/v1/approvals/{ticket}", carol)
            assert status == 200 and shown["status"] == "pending"
            await decide(b, carol, ticket)
            answers = await asyncio.gather(
                *(raw_call(gw, alice, flood_args(path)) for gw in (a, b, a, b, a, b, a, b))
            )
            completed = [x for x in answers if not x["result"].get("isError")]
            assert len(completed) == 1
            assert completed[0]["result"]["content"][0]["text"] == "flooded 0"
            assert runs(path) == 1
            _, shown = await rest(a, "GET", f"/admin/v1/approvals/{ticket}", carol)
            assert shown["status"] == "consumed"
            # An approval outlives every process: approved, all stopped, used after a restart.
            later = done_file(tmp_path)
            second = pending_ticket(await raw_call(b, alice, flood_args(later)))
            await decide(a, carol, second)
            a.stop()
            b.stop()
            a = start_gateway(config, tmp_path)
            a.wait_backend("fx")
            done = await raw_call(a, alice, flood_args(later))
            assert done["result"]["content"][0]["text"] == "flooded 0"
            assert runs(later) == 1
        finally:
            a.stop()
            b.stop()
