"""Every message on one routed, attributed path: what one principal does never reaches another,
denials are decided on what is asked for, and two issuers' subjects are two principals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.test_subscriptions import WATCHED, Stream
from tests.harness import (
    FIXTURES,
    PYTHON,
    Gateway,
    create_key,
    free_port,
    start_port_fixture,
    stdio_fixture,
)
from tests.rpc import MODERN, MODERN_META, RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def _auth(port: int, data: Path, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "public_url": f"http://127.0.0.1:{port}",
        "data_dir": str(data),
        "rules": rules,
        **extra,
    }


def _as(gw: Gateway, http: aiohttp.ClientSession, key: str, era: str = "legacy") -> RawClient:
    return RawClient(gw.url, http, era=era, extra_headers={"Authorization": f"Bearer {key}"})


async def _open_listen(
    gw: Gateway, http: aiohttp.ClientSession, key: str, uris: list[str]
) -> tuple[Stream, dict[str, Any]]:
    params = {
        "notifications": {"toolsListChanged": True, "resourceSubscriptions": uris},
        "_meta": MODERN_META,
    }
    body = {"jsonrpc": "2.0", "id": "l", "method": "subscriptions/listen", "params": params}
    resp = await http.post(
        gw.url,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "subscriptions/listen",
            "Authorization": f"Bearer {key}",
        },
    )
    assert resp.status == 200, await resp.read()
    stream = Stream(resp)
    ack = await stream.next()
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    return stream, ack["params"]["notifications"]


async def test_a_listen_stream_honours_access_rules(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A URI the caller may not read is neither acknowledged nor delivered on its listen
    stream, while another caller's stream on the same URI gets the update."""
    data = tmp_path / "keys"
    alice, bob = create_key(data, "alice", "user"), create_key(data, "bob", "user")
    port = free_port()
    rules = [
        {"effect": "allow"},
        {"effect": "deny", "principals": ["bob"], "kinds": ["resources"], "names": [WATCHED]},
    ]
    backend = {"command": PYTHON, "args": [str(FIXTURES / "conformance_server.py")]}
    gw = gateway_factory(
        {"auth": _auth(port, data, rules), "servers": {"cf": {**backend, "prefix": ""}}},
        port=port,
    )
    bob_read = await _as(gw, http, bob).open()
    refused = (await bob_read.request("resources/read", {"uri": WATCHED})).json
    assert refused["error"]["code"] == -32002, refused
    alice_stream, alice_ack = await _open_listen(gw, http, alice, [WATCHED])
    bob_stream, bob_ack = await _open_listen(gw, http, bob, [WATCHED])
    assert alice_ack == {"toolsListChanged": True, "resourceSubscriptions": [WATCHED]}
    assert bob_ack == {"toolsListChanged": True}  # denied looks exactly like unknown
    caller = _as(gw, http, alice, era="modern")
    await caller.result("tools/call", {"name": "update_watched_resource", "arguments": {}})
    update = await alice_stream.next()
    assert update["method"] == "notifications/resources/updated"
    assert update["params"]["uri"] == WATCHED
    assert b"resources/updated" not in bob_stream.buffer
    alice_stream.resp.close()
    bob_stream.resp.close()


async def test_a_template_served_uri_is_judged_by_the_uri_itself(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A deny rule naming a concrete URI applies when a template serves it, for reads and
    subscriptions alike; its neighbours stay readable."""
    data = tmp_path / "keys"
    alice = create_key(data, "alice", "user")
    port = free_port()
    secret = "fixture://rich/items/7"
    rules = [
        {"effect": "allow"},
        {"effect": "deny", "principals": ["alice"], "names": [secret]},
    ]
    gw = gateway_factory(
        {
            "auth": _auth(port, data, rules),
            "servers": {"fx": {**stdio_fixture("rich"), "prefix": ""}},
        },
        port=port,
    )
    client = await _as(gw, http, alice).open()
    denied = (await client.request("resources/read", {"uri": secret})).json
    assert denied["error"] == {
        "code": -32002,
        "message": f"Resource not found: {secret}",
        "data": {"uri": secret},
    }
    allowed = await client.result("resources/read", {"uri": "fixture://rich/items/3"})
    assert allowed["contents"][0]["uri"] == "fixture://rich/items/3"
    modern = _as(gw, http, alice, era="modern")
    denied_modern = (await modern.request("resources/read", {"uri": secret})).json
    assert denied_modern["error"]["code"] == -32602


def _rsa_pem() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


async def test_two_issuers_subjects_are_two_principals(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A partner issuer's `alice` is not the API-key `alice`: rules naming `alice` do not grant
    it anything, and it cannot use API-key alice's session."""
    data = tmp_path / "keys"
    alice_key = create_key(data, "alice", "user")
    partner, pem = _rsa_pem()
    partner_iss = "https://partner.example"
    port = free_port()
    rules = [{"effect": "allow", "principals": ["alice"]}]
    gw = gateway_factory(
        {
            "auth": _auth(
                port,
                data,
                rules,
                issuers=[{"issuer": partner_iss, "static_keys": [pem], "algorithms": ["RS256"]}],
            ),
            "servers": {"fx": stdio_fixture("crashy")},
        },
        port=port,
    )
    token = jwt.encode(
        {
            "iss": partner_iss,
            "sub": "alice",
            "aud": f"http://127.0.0.1:{port}/mcp",
            "exp": int(time.time()) + 300,
        },
        partner,
        algorithm="RS256",
    )
    key_alice = await _as(gw, http, alice_key).open()
    jwt_alice = _as(gw, http, token)
    assert {t["name"] for t in await key_alice.list_all("tools/list", "tools")} >= {"fx_echo"}
    await jwt_alice.open()
    assert await jwt_alice.list_all("tools/list", "tools") == []
    # API-key alice's session id in the partner alice's hands is unknown.
    jwt_alice.session_id = key_alice.session_id
    stolen = await jwt_alice.request("tools/list")
    assert stolen.status == 404, stolen.body


async def test_a_shared_backends_log_lines_reach_nobody_they_do_not_provably_belong_to(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Two callers shout secrets through one shared stdio connection at once; a third who
    may use nothing asked for every log line. Nobody hears anybody else's secret."""
    data = tmp_path / "keys"
    keys = {who: create_key(data, who, "user") for who in ("alice", "bob", "carol")}
    port = free_port()
    rules = [{"effect": "allow", "principals": ["alice", "bob"]}]
    backend = {
        "command": PYTHON,
        "args": [str(FIXTURES / "chatty_stdio.py")],
        "isolation": "shared",
    }
    gw = gateway_factory(
        {"auth": _auth(port, data, rules), "servers": {"chat": backend}}, port=port
    )
    clients = {who: await _as(gw, http, key).open() for who, key in keys.items()}
    streams: dict[str, Stream] = {}
    for who, client in clients.items():
        assert await client.result("logging/setLevel", {"level": "debug"}) == {}
        resp = await http.get(
            gw.url,
            headers={
                "Accept": "text/event-stream",
                "Mcp-Session-Id": client.session_id or "",
                "MCP-Protocol-Version": "2025-06-18",
                "Authorization": f"Bearer {keys[who]}",
            },
        )
        assert resp.status == 200
        streams[who] = Stream(resp)

    async def shout(who: str, n: int) -> None:
        text = f"SECRET-OF-{who}-{n}"
        result = await clients[who].result(
            "tools/call", {"name": "chat_shout", "arguments": {"text": text}}
        )
        assert result["content"][0]["text"] == f"shouted {text}"

    await asyncio.gather(*(shout(who, n) for n in range(5) for who in ("alice", "bob")))
    # The list change comes after every log line on the backend's one stream, and reaches
    # every session: once a stream has it, nothing earlier is still on its way.
    await clients["alice"].result("tools/call", {"name": "chat_grow", "arguments": {}})
    for who, stream in streams.items():
        seen: list[dict[str, Any]] = []
        while True:
            msg = await stream.next()
            seen.append(msg)
            if msg.get("method") == "notifications/tools/list_changed":
                break
        for msg in seen:
            text = json.dumps(msg)
            for other in ("alice", "bob"):
                if other != who:
                    assert f"SECRET-OF-{other}" not in text, (who, msg)
        if who == "carol":
            assert [m["method"] for m in seen] == ["notifications/tools/list_changed"]
        stream.resp.close()


async def test_a_caller_denied_a_backend_never_starts_or_touches_it(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """`logging/setLevel` fans out to every backend, but never to one the caller may use
    nothing of, and a denied call is refused before routing: carol never opens a session (a
    process) of the chat backend; alice's first call does."""
    data = tmp_path / "keys"
    keys = {who: create_key(data, who, "user") for who in ("alice", "carol")}
    starts = tmp_path / "starts"
    port = free_port()
    rules = [
        {"effect": "allow", "principals": ["alice"]},
        {"effect": "allow", "principals": ["carol"], "backends": ["fx"]},
    ]
    chat = {
        "command": PYTHON,
        "args": [str(FIXTURES / "chatty_stdio.py")],
        "env": {"FIXTURE_STARTS_FILE": str(starts)},
        "isolation": "per_session",
    }
    gw = gateway_factory(
        {
            "auth": _auth(port, data, rules),
            "servers": {"chat": chat, "fx": stdio_fixture("crashy")},
        },
        port=port,
    )
    gw.wait_backend("chat")
    assert len(starts.read_text().split()) == 1  # the backend's own connection
    carol = await _as(gw, http, keys["carol"]).open()
    assert await carol.result("logging/setLevel", {"level": "debug"}) == {}
    denied = (await carol.request("tools/call", {"name": "chat_shout", "arguments": {}})).json
    assert denied["error"]["code"] == -32602
    assert len(starts.read_text().split()) == 1, "carol's requests started the chat backend"
    alice = await _as(gw, http, keys["alice"]).open()
    assert await alice.result("logging/setLevel", {"level": "debug"}) == {}
    grown = await alice.result("tools/call", {"name": "chat_grow", "arguments": {}})
    assert grown["content"][0]["text"] == "grew 1"
    assert len(starts.read_text().split()) == 2  # alice's own isolated session


async def test_mcp_param_headers_are_checked_inbound_and_sent_upstream(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    """A 2026-07-28 tool whose argument is annotated `x-mcp-header: Region`: the official SDK
    backend refuses a call without `Mcp-Param-Region`, so a call through Switchyard succeeds
    only if Switchyard sends it; a client whose header disagrees with its body gets 400
    `-32020`, before anything is forwarded."""
    proc, port = start_port_fixture(
        [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", "0", "--name", "web"],
        "param-header-backend",
        env={"FIXTURE_PARAM_HEADER_TOOL": "1"},
    )
    try:
        gw = gateway_factory({"servers": {"web": {"url": f"http://127.0.0.1:{port}/mcp"}}})
        gw.wait_backend("web")
        client = RawClient(gw.url, http, era="modern")
        call = {"name": "web_region", "arguments": {"region": "eu-west"}}
        headers = {**client.headers("tools/call", call), "Mcp-Param-Region": "eu-west"}
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {**call, "_meta": MODERN_META},
        }
        ok = await client.post(body, headers)
        assert ok.status == 200, ok.body
        assert ok.json["result"]["content"][0]["text"] == "region eu-west"
        wrong = await client.post(body, {**headers, "Mcp-Param-Region": "us-east"})
        assert wrong.status == 400, wrong.body
        assert wrong.json["error"]["code"] == -32020
    finally:
        proc.stop()
