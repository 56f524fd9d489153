"""Governance on every face, through the official clients: one gateway with authentication,
the audit trail, redaction and a rate limit, reached by the official Python SDK client (its
default mode and legacy mode) on `/mcp`, `/sse` and a spawned `switchyard stdio`, and by the
official TypeScript SDK client on the same three faces.

Each client run is two principals' at once, both new to the gateway: `alice-<run>`'s result
is redacted and never limited; `bob-<run>` gets two calls, then the gateway's rate-limit error
with `retryAfterMs`, and cannot see or call a tool an access rule denies him. The audit trail
then holds exactly one record per call, with the face it came through, under the caller who
made it: no policy is a special case of one face.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.test_reference_servers import NODE
from tests.harness import (
    BIN,
    FIXTURES,
    NODE_DIR,
    PYTHON,
    Gateway,
    create_key,
    free_port,
    register_secret,
    start_gateway,
)

pytestmark = [pytest.mark.e2e]

TS_CLIENT = NODE_DIR / "ts_client.mjs"
HMAC_ENV = "SWITCHYARD_TEST_FACES_HMAC"
RATE_LIMITED = -31020
UNKNOWN_TOOL = -32602  # a denied tool is not listed, and called it is unknown
SECRET_MAIL = "carol.jones@example.org"
MASKED = "c**********@example.org"  # the local part masked, the domain kept
RUN_S = 60
PYTHON_RUNS = [
    ("py-auto-mcp", "auto", "mcp"),
    ("py-legacy-mcp", "legacy", "mcp"),
    ("py-auto-sse", "auto", "sse"),
    ("py-auto-stdio", "auto", "stdio"),
    ("py-legacy-stdio", "legacy", "stdio"),
]
TS_RUNS = [("ts-mcp", "mcp"), ("ts-sse", "sse"), ("ts-stdio", "stdio")]
FACE_NAMES = {"mcp": "streamable-http", "sse": "sse", "stdio": "stdio"}


@dataclass
class Setup:
    gateway: Gateway
    keys: dict[str, str]
    db: Path


def _principal(run: str) -> str:
    return f"bob-{run}"


def _alice(run: str) -> str:
    return f"alice-{run}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("governance-faces")
    data = tmp / "keys"
    runs = [r[0] for r in PYTHON_RUNS] + [r[0] for r in TS_RUNS]
    limited = [_principal(r) for r in runs]
    unlimited = [_alice(r) for r in runs]
    keys = {name: create_key(data, name, "user") for name in [*unlimited, *limited]}
    for key in keys.values():
        register_secret(key)
    hmac_key = register_secret(f"faces-hmac-{time.monotonic_ns()}-0123456789")
    os.environ[HMAC_ENV] = hmac_key  # the gateway and its stdio face inherit it
    port = free_port()
    config: dict[str, Any] = {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data),
            "rules": [
                {"effect": "allow", "principals": ["readyz-probe", *unlimited, *limited]},
                {"effect": "deny", "principals": limited, "names": ["add"]},
            ],
        },
        "storage": {"data_dir": str(tmp / "db")},
        "audit": {
            "enabled": True,
            "hmac_key": "${" + HMAC_ENV + "}",
            "keys_dir": str(tmp / "audit-keys"),
        },
        "redaction": {
            "key": "faces-redaction-key-0123456789",
            "rules": [
                {
                    "name": "mail",
                    "detectors": ["email"],
                    "action": "mask",
                    "directions": ["results"],
                }
            ],
        },
        "rate_limits": {
            "rules": [
                {
                    "name": "twins",
                    "principals": limited,
                    "tools": ["echo"],
                    "windows": [{"period": "hour", "max": 2}],
                }
            ]
        },
        "servers": {
            "g": {"command": PYTHON, "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "g"]}
        },
    }
    gateway = start_gateway(config, tmp, port=port)
    try:
        yield Setup(gateway, keys, tmp / "db" / "switchyard.db")
    finally:
        gateway.stop()
        os.environ.pop(HMAC_ENV, None)


def _stdio_params(setup: Setup, principal: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=str(BIN / "switchyard"),
        args=["stdio", "--config", str(setup.gateway.config_path), "--log-level", "warning"],
        env={**os.environ, "SWITCHYARD_API_KEY": setup.keys[principal]},
    )


def _py_transport(face: str, setup: Setup, principal: str) -> Any:
    headers = {"Authorization": f"Bearer {setup.keys[principal]}"}
    gw = setup.gateway
    if face == "mcp":
        return streamable_http_client(gw.url, http_client=httpx2.AsyncClient(headers=headers))
    if face == "sse":
        return sse_client(f"{gw.base}/sse", headers=headers)
    return _stdio_params(setup, principal)


def _plan(tag: str, echoes: int, denied: bool) -> list[tuple[str, dict[str, Any]]]:
    """`echoes` echo calls carrying a mail address, then (`denied`) a call of a denied tool."""
    plan = [("g_echo", {"text": f"{tag} {i} mail {SECRET_MAIL}"}) for i in range(echoes)]
    return plan + ([("g_add", {"a": 1, "b": 2})] if denied else [])


async def _py_calls(transport: Any, mode: str, plan: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Each call's outcome: its text, or (code, data) of its error."""
    out: list[Any] = []
    with anyio.fail_after(RUN_S):
        async with Client(transport, mode=mode) as client:  # type: ignore[arg-type]
            for tool, arguments in plan:
                try:
                    result = await client.call_tool(tool, arguments)
                except MCPError as exc:
                    out.append((exc.error.code, exc.error.data))
                else:
                    out.append(result.content[0].text)  # type: ignore[union-attr]
    return out


def _ts_calls(
    face: str, setup: Setup, principal: str, plan: list[tuple[str, dict[str, Any]]]
) -> list[Any]:
    gw = setup.gateway
    env = {**os.environ, "FACES_TOKEN": setup.keys[principal]}
    if face == "stdio":
        env["SWITCHYARD_API_KEY"] = setup.keys[principal]
        args = [
            "--transport",
            "stdio",
            "--command",
            str(BIN / "switchyard"),
            "--args",
            json.dumps(["stdio", "--config", str(gw.config_path), "--log-level", "warning"]),
        ]
    else:
        url = gw.url if face == "mcp" else f"{gw.base}/sse"
        transport = "streamable-http" if face == "mcp" else "sse"
        args = ["--transport", transport, "--url", url, "--bearer-env", "FACES_TOKEN"]
    calls = json.dumps([{"tool": tool, "arguments": arguments} for tool, arguments in plan])
    done = subprocess.run(
        [str(NODE), str(TS_CLIENT), *args, "--calls", calls, "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=RUN_S,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out: list[Any] = []
    for call in json.loads(done.stdout)["calls"]:
        error = call.get("error")
        if error is not None and "code" not in error and face == "mcp":
            # The TypeScript SDK (1.x) reads no JSON-RPC answer out of a non-2xx response: an
            # HTTP 429 reaches the application as a transport error whose text holds it whole.
            head, _, body = error["message"].partition("{")
            assert head == "Streamable HTTP error: Error POSTing to endpoint: ", error
            error = json.loads("{" + body)["error"]
        if error is not None:
            out.append((error["code"], error.get("data")))
        else:
            out.append(call["result"]["content"][0]["text"])
    return out


def _records(setup: Setup, principal: str, count: int) -> list[dict[str, Any]]:
    """The audit trail's tool-call decisions of one principal, once `count` are written."""
    deadline = time.monotonic() + 15
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with sqlite3.connect(setup.db) as conn:
            rows = conn.execute("SELECT record FROM audit_records").fetchall()
        found = [
            r
            for r in (json.loads(row[0]) for row in rows)
            if r.get("event") == "decision"
            and r.get("method") == "tools/call"
            and r.get("principal") == f"api_key#{principal}"
        ]
        if len(found) >= count:
            break
        time.sleep(0.05)
    return sorted(found, key=lambda r: (r["ts"], r["seq"]))


def _check(setup: Setup, run: str, face: str, alice: list[Any], twin: list[Any]) -> None:
    # Redaction: alice's result is masked, on every face, and never limited.
    assert alice == [f"{run}-alice 0 mail {MASKED}"]
    # The limited twin: two calls, then the refusal with its retry hint; a denied tool is one
    # it cannot see.
    assert twin[:2] == [f"{run}-twin 0 mail {MASKED}", f"{run}-twin 1 mail {MASKED}"]
    code, data = twin[2]
    assert code == RATE_LIMITED and data["source"] == "gateway" and data["retryAfterMs"] >= 1
    assert twin[3][0] == UNKNOWN_TOOL
    # The trail: exactly one record per call, through this face, each caller's its own.
    face_name = FACE_NAMES[face]
    [redacted] = _records(setup, _alice(run), 1)
    assert (redacted["decision"], redacted["outcome"], redacted["face"]) == (
        "allow",
        "ok",
        face_name,
    )
    records = _records(setup, _principal(run), 4)
    assert [(r["decision"], r["outcome"], r["face"], r["public"]) for r in records] == [
        ("allow", "ok", face_name, "g_echo"),
        ("allow", "ok", face_name, "g_echo"),
        ("deny", RATE_LIMITED, face_name, "g_echo"),
        ("deny", UNKNOWN_TOOL, face_name, "g_add"),
    ]
    assert all(r["args_hmac"] and "args" not in r for r in [redacted, *records])
    assert SECRET_MAIL not in json.dumps([redacted, *records])


@pytest.mark.parametrize(("run", "mode", "face"), PYTHON_RUNS)
def test_python_sdk_client(setup: Setup, run: str, mode: str, face: str) -> None:
    alice, twin = _alice(run), _principal(run)

    async def both() -> tuple[list[Any], list[Any]]:
        results: dict[str, list[Any]] = {}

        async def one(who: str, plan: list[tuple[str, dict[str, Any]]]) -> None:
            results[who] = await _py_calls(_py_transport(face, setup, who), mode, plan)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, alice, _plan(f"{run}-alice", 1, denied=False))
            tg.start_soon(one, twin, _plan(f"{run}-twin", 3, denied=True))
        return results[alice], results[twin]

    redacted, limited = anyio.run(both)
    _check(setup, run, face, redacted, limited)


@pytest.mark.parametrize(("run", "face"), TS_RUNS)
def test_typescript_sdk_client(setup: Setup, run: str, face: str) -> None:
    redacted = _ts_calls(face, setup, _alice(run), _plan(f"{run}-alice", 1, denied=False))
    limited = _ts_calls(face, setup, _principal(run), _plan(f"{run}-twin", 3, denied=True))
    _check(setup, run, face, redacted, limited)
