"""What Switchyard presents to an HTTP backend: its own token, or the caller's identity
exchanged for a backend-audience token; never the client's own credential."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from switchyard.protocol import codes
from tests.e2e.test_auth_server import AuthServer, client_token, start_auth_server
from tests.harness import (
    FIXTURES,
    PYTHON,
    Gateway,
    Proc,
    create_key,
    free_port,
    start_port_fixture,
)
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def issuer() -> Iterator[AuthServer]:
    server = start_auth_server("auth-for-backends")
    try:
        yield server
    finally:
        server.proc.stop()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    record = tmp_path / "headers.jsonl"
    args = [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", "0", "--json-response"]
    proc: Proc
    proc, port = start_port_fixture(
        args, "credential-backend", env={"FIXTURE_HEADERS_FILE": str(record)}
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp", record
    finally:
        proc.stop()


def _tokens(record: Path) -> list[dict[str, Any]]:
    """The claims of every bearer token the backend received, in order (None: no token)."""
    out = []
    for line in record.read_text().splitlines():
        headers = dict(json.loads(line)["headers"])
        value = headers.get("authorization")
        out.append(jwt.decode(value[7:], options={"verify_signature": False}) if value else None)
    return out


async def test_client_credentials_on_every_request(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    backend: tuple[str, Path],
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, record = backend
    auth = {
        "type": "client_credentials",
        "token_url": f"{issuer.issuer}/token",
        "client_id": "gateway",
        "client_secret": "${SY_TEST_BACKEND_SECRET}",
    }
    monkeypatch.setenv("SY_TEST_BACKEND_SECRET", "gateway-secret")  # the gateway inherits it
    gw = gateway_factory({"servers": {"web": {"url": url, "auth": auth}}})
    client = await RawClient(gw.url, http).open()
    assert (await client.result("tools/call", {"name": "web_echo", "arguments": {"text": "hi"}}))[
        "content"
    ][0]["text"] == "hi"
    claims = _tokens(record)
    assert claims and all(c is not None for c in claims), (
        "a request reached the backend without a token"
    )
    assert {c["aud"] if isinstance(c["aud"], str) else c["aud"][0] for c in claims} == {url}
    assert {c["sub"] for c in claims} == {"gateway"}


def _exchanging(url: str, issuer: AuthServer) -> dict[str, Any]:
    """A backend the gateway calls with each caller's identity, exchanged (RFC 8693)."""
    return {
        "url": url,
        "auth": {
            "type": "token_exchange",
            "token_url": f"{issuer.issuer}/token",
            "client_id": "gateway",
            "client_secret": "gateway-secret",
        },
    }


async def test_token_exchange_asserts_the_caller(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    backend: tuple[str, Path],
    http: aiohttp.ClientSession,
) -> None:
    url, record = backend
    port = free_port()
    gw = gateway_factory(
        {
            "auth": {
                "enabled": True,
                "public_url": f"http://127.0.0.1:{port}",
                "api_keys": False,
                "issuers": [{"issuer": issuer.issuer, "jwks_uri": issuer.jwks_uri}],
                "rules": [{"effect": "allow"}],
            },
            "servers": {"web": _exchanging(url, issuer)},
        },
        port=port,
    )
    caller = await client_token(http, issuer, "reader", gw.url)
    client = await RawClient(
        gw.url, http, extra_headers={"Authorization": f"Bearer {caller}"}
    ).open()
    result = await client.result(
        "tools/call", {"name": "web_echo", "arguments": {"text": "as reader"}}
    )
    assert result["content"][0]["text"] == "as reader"
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    claims = _tokens(record)
    assert all(c is not None for c in claims)
    assert caller not in record.read_text()  # the caller's own token never reached the backend
    # The call carried the caller's identity, for the backend's audience; the gateway's own
    # traffic (handshake, listing) its own.
    call_claims = claims[-1]
    assert call_claims["sub"] == "reader" and url in (
        call_claims["aud"] if isinstance(call_claims["aud"], list) else [call_claims["aud"]]
    )
    assert claims[0]["sub"] == "gateway"
    assert lines[0]["path"] == "/mcp"


async def test_an_api_key_caller_never_borrows_the_gateways_identity(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    backend: tuple[str, Path],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A caller who proved who it is with an API key has no token to exchange: its call is
    refused with a gateway error, never sent with the gateway's own service token; a JWT caller
    on the same backend at the same time is served as itself."""
    url, record = backend
    data = tmp_path / "keys"
    alice_key = create_key(data, "alice", "user")
    port = free_port()
    gw = gateway_factory(
        {
            "auth": {
                "enabled": True,
                "public_url": f"http://127.0.0.1:{port}",
                "data_dir": str(data),
                "issuers": [{"issuer": issuer.issuer, "jwks_uri": issuer.jwks_uri}],
                "rules": [{"effect": "allow"}],
            },
            "servers": {"web": _exchanging(url, issuer)},
        },
        port=port,
    )
    reader_token = await client_token(http, issuer, "reader", gw.url)
    alice = await RawClient(
        gw.url, http, extra_headers={"Authorization": f"Bearer {alice_key}"}
    ).open()
    reader = await RawClient(
        gw.url, http, extra_headers={"Authorization": f"Bearer {reader_token}"}
    ).open()
    before = len(_tokens(record))
    call = {"name": "web_echo", "arguments": {"text": "who am i"}}
    refused_resp, served_resp = await asyncio.gather(
        alice.request("tools/call", call), reader.request("tools/call", call)
    )
    refused, served = refused_resp.json, served_resp.json
    assert "error" in refused, refused
    assert refused["error"]["code"] == codes.BACKEND_PROTOCOL_ERROR
    assert refused["error"]["data"]["source"] == "gateway"
    assert "authenticated without one" in refused["error"]["message"]
    assert served["result"]["content"][0]["text"] == "who am i", served
    # Only the reader's identity reached the backend: its call, and before it the reader's own
    # lists (the backend's lists are not `cacheScope: public`: listed per caller); nothing
    # for alice, under any identity.
    calls = _tokens(record)[before:]
    assert calls and all(c is not None for c in calls), calls
    assert {c["sub"] for c in calls} == {"reader"}, calls
