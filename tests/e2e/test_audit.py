"""The audit trail of a running gateway: what the official SDK client's calls (allowed and
denied) and an HTTP refusal leave in it, what `switchyard audit verify|export` make of it, two
gateway processes on one PostgreSQL, and what happens when the store is down."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from switchyard.audit.canonical import canonical
from tests.databases import pg_schema
from tests.harness import (
    BIN,
    FIXTURES,
    LOG_DIR,
    PYTHON,
    Gateway,
    create_key,
    free_port,
    register_secret,
    start_gateway,
)
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HMAC_ENV = "SWITCHYARD_TEST_AUDIT_HMAC"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
CLOCK = {"command": "switchyard", "args": ["demo", "clock"]}
UNAVAILABLE = (
    "Audit trail unavailable (the audit store is unavailable): calls are refused until it "
    "records again"
)


@pytest.fixture
def hmac_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = register_secret(f"audit-hmac-{time.monotonic_ns()}-0123456789")
    monkeypatch.setenv(HMAC_ENV, key)  # the gateway processes inherit it
    return key


def _audit(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "hmac_key": "${" + HMAC_ENV + "}",
        "keys_dir": str(tmp / "audit-keys"),
        "checkpoint_every": 5,
        **extra,
    }


def _cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "switchyard"), "audit", *args, "--config", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _export(gw: Gateway) -> list[dict[str, Any]]:
    """Every record, through `switchyard audit export`; kept in the test logs so the suite's
    secret scan reads it too."""
    out = _cli(gw, "export", "--since", "2020-01-01")
    assert out.returncode == 0, out.stderr
    (LOG_DIR / f"audit-export-{gw.port}-{time.monotonic_ns()}.jsonl").write_text(out.stdout)
    return [json.loads(line) for line in out.stdout.splitlines()]


def _sqlite_records(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT record FROM audit_records ORDER BY writer, seq").fetchall()
    return [json.loads(r[0]) for r in rows]


@pytest.fixture
def authed(tmp_path: Path, hmac_key: str) -> Iterator[dict[str, Any]]:
    data = tmp_path / "keys"
    keys = {name: create_key(data, name, "user") for name in ("alice", "bob")}
    port = free_port()
    config = {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data),
            "rules": [
                {"effect": "allow", "principals": ["alice", "bob", "readyz-probe"]},
                {"effect": "deny", "principals": ["bob"], "names": ["now"]},
            ],
        },
        "storage": {"data_dir": str(tmp_path / "db")},
        "audit": _audit(tmp_path),
        "servers": {"clock": CLOCK},
    }
    gw = start_gateway(config, tmp_path, port=port)
    try:
        gw.wait_backend("clock")
        yield {"gw": gw, "keys": keys, "db": tmp_path / "db" / "switchyard.db", "hmac": hmac_key}
    finally:
        gw.stop()


async def test_an_allowed_call_a_denied_call_and_a_401_each_leave_exactly_one_record(
    authed: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = authed["gw"]
    keys = authed["keys"]
    arguments = {"timezone": "Europe/Paris"}

    alice = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {keys['alice']}", "traceparent": TRACEPARENT}
    )
    async with Client(streamable_http_client(gw.url, http_client=alice)) as client:  # type: ignore[arg-type]
        result = await client.call_tool("clock_now", arguments)
        assert not result.is_error

    bob = httpx2.AsyncClient(headers={"Authorization": f"Bearer {keys['bob']}"})
    async with Client(streamable_http_client(gw.url, http_client=bob)) as client:  # type: ignore[arg-type]
        with pytest.raises(MCPError) as refused:
            await client.call_tool("clock_now", arguments)
    denied_code = refused.value.error.code

    async with http.post(
        gw.url,
        data=b"{}",
        headers={"Content-Type": "application/json", "traceparent": TRACEPARENT},
    ) as resp:
        assert resp.status == 401

    assert gw.stop() == 0  # a clean stop writes the queue and closes the stream
    records = _sqlite_records(authed["db"])
    calls = [r for r in records if r["event"] == "decision" and r["method"] == "tools/call"]
    [allowed] = [r for r in calls if r["principal"] == "api_key#alice"]
    [denied] = [r for r in calls if r["principal"] == "api_key#bob"]
    [unauthorized] = [r for r in records if r.get("status") == 401]
    assert len(calls) == 2

    digest = hmac.new(authed["hmac"].encode(), canonical(arguments), hashlib.sha256).hexdigest()
    assert allowed["decision"] == "allow" and allowed["outcome"] == "ok"
    assert (allowed["backend"], allowed["name"], allowed["public"]) == ("clock", "now", "clock_now")
    assert (allowed["face"], allowed["era"], allowed["via"]) == (
        "streamable-http",
        "modern",
        "api_key",
    )
    assert allowed["trace_id"] == TRACE_ID and allowed["args_hmac"] == digest
    assert allowed["request_bytes"] > 0 and allowed["result_bytes"] > 0
    assert allowed["latency_us"] > 0 and allowed["request_id"] is not None
    assert "args" not in allowed  # no rule asks for raw arguments

    assert denied["decision"] == "deny" and denied["outcome"] == denied_code
    assert denied["args_hmac"] == digest and denied["trace_id"] is None
    assert (denied["backend"], denied["name"]) == ("clock", "now")

    assert unauthorized["decision"] == "deny" and unauthorized["outcome"] == 401
    assert unauthorized["principal"] is None and unauthorized["face"] == "http"
    assert unauthorized["method"] == "HTTP POST /mcp" and unauthorized["trace_id"] == TRACE_ID

    verified = _cli(gw, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"OK: {len(records)} records in 1 streams verified" in verified.stdout
    exported = _export(gw)
    assert [{k: v for k, v in r.items() if k not in ("prev", "hash")} for r in exported] == sorted(
        records, key=lambda r: (r["ts"], r["writer"], r["seq"])
    )
    everything = authed["db"].read_bytes() + json.dumps(exported).encode()
    for secret in (keys["alice"], keys["bob"], authed["hmac"]):
        assert secret.encode() not in everything
    for private in (gw.config_path.parent / "audit-keys").glob("*.key"):
        pem_body = b"".join(private.read_bytes().splitlines()[1:-1])
        assert pem_body not in everything


async def test_verify_names_the_first_break_after_tampering(
    authed: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = authed["gw"]
    client = await RawClient(
        gw.url, http, extra_headers={"Authorization": f"Bearer {authed['keys']['alice']}"}
    ).open()
    for i in range(8):
        await client.result("tools/call", {"name": "clock_now", "arguments": {"n": str(i)}})
    assert gw.stop() == 0
    with sqlite3.connect(authed["db"]) as conn:
        conn.execute("DROP TRIGGER audit_records_no_delete")
        conn.execute("DELETE FROM audit_records WHERE seq = 4")
        [(writer,)] = conn.execute("SELECT DISTINCT writer FROM audit_records").fetchall()
    out = _cli(gw, "verify")
    assert out.returncode == 1
    assert f"FIRST BREAK: delete at writer {writer}, record 4: record 4 is missing" in out.stdout


async def test_fail_closed_refuses_calls_while_the_store_is_down(
    gateway_factory: Any, tmp_path: Path, hmac_key: str, http: aiohttp.ClientSession
) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    gw = gateway_factory(
        {
            "storage": {"database_url": closed},
            "audit": _audit(tmp_path),
            "servers": {"clock": CLOCK},
        },
        ready=False,
    )
    ready = gw.readyz()
    assert ready["ready"] is False and ready["audit"]["recording"] is False
    client = await RawClient(gw.url, http).open()  # the handshake itself is not refused
    for method, params in (
        ("tools/call", {"name": "clock_now", "arguments": {}}),
        ("tools/list", None),
    ):
        resp = await client.request(method, params, request_id=f"r-{method}")
        assert resp.json["error"] == {
            "code": -31013,
            "message": UNAVAILABLE,
            "data": {"source": "gateway"},
        }


async def test_fail_closed_refuses_calls_once_the_audit_table_is_dropped(
    gateway_factory: Any, tmp_path: Path, hmac_key: str, http: aiohttp.ClientSession
) -> None:
    import asyncpg  # type: ignore[import-untyped]

    async with pg_schema("sy_audit_e2e") as url:
        gw = gateway_factory(
            {
                "storage": {"database_url": url},
                "audit": _audit(tmp_path),
                "servers": {"clock": CLOCK},
            }
        )
        gw.wait_backend("clock")
        client = await RawClient(gw.url, http).open()
        ok = await client.request("tools/call", {"name": "clock_now", "arguments": {}}, "first")
        assert "result" in ok.json
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("DROP TABLE audit_records")
        finally:
            await conn.close()
        error = None
        for i in range(100):  # until the writer's next flush fails: bounded at ~10 s
            resp = await client.request(
                "tools/call", {"name": "clock_now", "arguments": {}}, f"after-{i}"
            )
            error = resp.json.get("error")
            if error is not None:
                break
            await asyncio.sleep(0.1)
        assert error == {"code": -31013, "message": UNAVAILABLE, "data": {"source": "gateway"}}
        gw.stop()
        assert "audit: write failed" in gw.log_text()


async def test_buffer_mode_serves_calls_and_counts_the_records_it_drops(
    gateway_factory: Any, tmp_path: Path, hmac_key: str, http: aiohttp.ClientSession
) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    gw = gateway_factory(
        {
            "storage": {"database_url": closed},
            # Pins fail closed on a dead store and would hide the tool: this test is the audit's.
            "pinning": {"mode": "off"},
            "audit": _audit(tmp_path, on_failure="buffer", buffer_size=5),
            "servers": {"clock": CLOCK},
        },
        ready=False,
    )
    gw.wait_backend("clock")
    client = await RawClient(gw.url, http).open()  # the first decision: initialize
    for i in range(12):
        resp = await client.request("tools/call", {"name": "clock_now", "arguments": {}}, f"b{i}")
        assert "result" in resp.json
    audit = gw.readyz()["audit"]
    assert (audit["pending"], audit["dropped"]) == (5, 8)
    assert gw.readyz()["ready"] is True  # buffering, the gateway keeps serving
    gw.stop()
    log = gw.log_text()
    assert "audit: buffer full (5 records); 1 records dropped so far" in log
    assert "audit: 5 records could not be written before shutdown" in log


async def test_two_gateways_on_one_postgresql_write_two_streams_that_verify(
    gateway_factory: Any, tmp_path: Path, hmac_key: str, http: aiohttp.ClientSession
) -> None:
    async with pg_schema("sy_audit_e2e") as url:
        config = {
            "storage": {"database_url": url},
            "audit": _audit(tmp_path),
            # Which of the two pins the tools first (and records it) is a race: not this test's.
            "pinning": {"mode": "off"},
            "servers": {"clock": CLOCK},
        }
        first = gateway_factory(config)
        second = gateway_factory(config)
        for gw in (first, second):
            gw.wait_backend("clock")

        async def load(gw: Gateway, tag: str) -> None:
            client = await RawClient(gw.url, http).open()
            for i in range(40):
                resp = await client.request(
                    "tools/call", {"name": "clock_now", "arguments": {}}, f"{tag}-{i}"
                )
                assert "result" in resp.json

        await asyncio.gather(
            load(first, "a"), load(second, "a2"), load(first, "b"), load(second, "b2")
        )
        writers = {first.readyz()["audit"]["writer"], second.readyz()["audit"]["writer"]}
        assert first.stop() == 0 and second.stop() == 0
        out = _cli(first, "verify")
        assert out.returncode == 0, out.stdout + out.stderr
        # Each: 2 initialize + 80 calls, in its own closed stream.
        for writer in writers:
            assert f"{writer}: ok: records 1..82, " in out.stdout and "closed" in out.stdout
        assert "OK: 164 records in 2 streams verified" in out.stdout


async def test_raw_arguments_are_recorded_redacted_and_tokens_stay_tokens(
    tmp_path: Path, hmac_key: str
) -> None:
    """Redaction runs before audit: where a rule keeps raw arguments, the record holds what
    the caller sent with detected values masked, and a caller's token as the token, never the
    value the backend alone received."""
    from tests.e2e.test_redaction import REDACTION_KEY, _digest, registered_values

    values = registered_values()
    data = tmp_path / "keys"
    alice = create_key(data, "alice", "user")
    config = {
        "auth": {"enabled": True, "data_dir": str(data), "rules": [{"effect": "allow"}]},
        "servers": {
            "vault": {
                "command": PYTHON,
                "args": [str(FIXTURES / "secrets_stdio.py")],
                "env": values,
            }
        },
        "redaction": {
            "key": REDACTION_KEY,
            "rules": [
                {"name": "cards", "detectors": ["payment_card"], "action": "mask"},
                {"name": "emails", "detectors": ["email"], "action": "tokenize"},
            ],
        },
        "audit": _audit(tmp_path, raw_arguments=[{"names": ["digest"]}]),
    }
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("vault")
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {alice}"})
        async with Client(streamable_http_client(gw.url, http_client=http)) as client:  # type: ignore[arg-type]
            profile = await client.call_tool("vault_profile", {})
            token = profile.structured_content["email"]  # type: ignore[index]
            assert token.startswith("«tok:email:")
            reached = await client.call_tool("vault_digest", {"text": f"mail {token}"})
            # The backend got the caller's own value back from its token.
            assert reached.content[0].text == _digest(f"mail {values['SECRET_EMAIL']}", None)  # type: ignore[union-attr,arg-type]
            await client.call_tool("vault_digest", {"text": f"pay {values['SECRET_CARD']}"})
    finally:
        gw.stop()
    echoes = [r for r in _export(gw) if r.get("name") == "digest"]
    assert [r["args"]["text"] for r in echoes] == [
        f"mail {token}",
        "pay **** **** **** " + values["SECRET_CARD"][-4:],
    ]
    recorded = json.dumps(echoes)
    assert values["SECRET_EMAIL"] not in recorded
    assert values["SECRET_CARD"] not in recorded


async def test_a_limited_a_redacted_and_a_quarantined_call_each_leave_exactly_one_record(
    tmp_path: Path, hmac_key: str
) -> None:
    """What the official SDK client sees for a rate-limited call, a result a redaction rule
    blocks and a tool quarantined by pinning, and that each is exactly one audit record with
    the outcome the client saw."""
    from tests.e2e.test_redaction import REDACTION_KEY, registered_values

    values = registered_values()
    data = tmp_path / "keys"
    alice = create_key(data, "alice", "user")
    config = {
        "auth": {"enabled": True, "data_dir": str(data), "rules": [{"effect": "allow"}]},
        "storage": {"data_dir": str(tmp_path / "db")},
        "servers": {
            "vault": {
                "command": PYTHON,
                "args": [str(FIXTURES / "secrets_stdio.py")],
                "env": values,
            },
            "clock": CLOCK,
        },
        "rate_limits": {
            "rules": [
                {"name": "one-echo", "tools": ["echo"], "windows": [{"period": "hour", "max": 1}]}
            ]
        },
        "redaction": {
            "key": REDACTION_KEY,
            "rules": [{"name": "no-cloud-keys", "detectors": ["aws_*"], "action": "block"}],
        },
        "pinning": {"backends": {"clock": {"mode": "quarantine_new"}}},
        "audit": _audit(tmp_path),
    }
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("vault")
        gw.wait_backend("clock")
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {alice}"})
        async with Client(streamable_http_client(gw.url, http_client=http)) as client:  # type: ignore[arg-type]
            names = {t.name for t in (await client.list_tools()).tools}
            assert "vault_echo" in names and not any(n.startswith("clock_") for n in names)
            await client.call_tool("vault_echo", {"text": "one"})
            with pytest.raises(MCPError) as limited:
                await client.call_tool("vault_echo", {"text": "two"})
            assert limited.value.error.code == -31020
            with pytest.raises(MCPError) as blocked:
                await client.call_tool("vault_leak", {})
            assert blocked.value.error.code == -31030
            with pytest.raises(MCPError) as quarantined:
                await client.call_tool("clock_now", {})
            assert quarantined.value.error.code == -32602
            assert quarantined.value.error.message == "Unknown tool: clock_now"
    finally:
        gw.stop()
    calls = [r for r in _export(gw) if r["event"] == "decision" and r["method"] == "tools/call"]
    by_target: dict[str, list[Any]] = {}
    for record in calls:
        by_target.setdefault(record["public"], []).append(record["outcome"])
    assert by_target == {
        "vault_echo": ["ok", -31020],
        "vault_leak": [-31030],
        # Quarantined looks exactly like unknown: the name asked for, no backend named.
        "clock_now": [-32602],
    }
    (refused,) = (r for r in calls if r["public"] == "clock_now")
    assert refused["backend"] is None and refused["name"] is None
