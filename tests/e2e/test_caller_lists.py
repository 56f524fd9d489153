"""Per-caller lists of a `token_exchange` backend, end to end: the real test authorization
server exchanges each caller's token, a real backend (tests/fixtures/servers/per_user_http.py)
lists each bearer's subject its own tool and resource, and the official Python client (mcp 2.x)
connects as two principals at once, in its default mode (2026-07-28) and in legacy mode."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from switchyard.protocol import codes
from tests.e2e.test_auth_server import CLIENTS, AuthServer, client_token
from tests.harness import (
    FIXTURES,
    NODE_DIR,
    PYTHON,
    Gateway,
    Proc,
    free_port,
    register_secret,
    start_port_fixture,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WRITER = {"id": "writer", "secret": "writer-secret", "scopes": ["mcp:read"], "roles": ["editor"]}
register_secret(WRITER["secret"])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def issuer() -> Iterator[AuthServer]:
    """The test authorization server, with a second caller (`writer`) beside `reader`."""
    args = [PYTHON, str(FIXTURES / "auth_server.py"), "--port", "0"]
    for client in [*CLIENTS, WRITER]:
        args += ["--client", json.dumps(client)]
    proc, port = start_port_fixture(args, "caller-lists-as")
    try:
        yield AuthServer(proc, f"http://127.0.0.1:{port}")
    finally:
        proc.stop()


def _per_user(tmp_path: Path, name: str, *args: str) -> tuple[Proc, str, Path]:
    calls = tmp_path / f"{name}-calls.txt"
    calls.touch()
    proc, port = start_port_fixture(
        [PYTHON, str(FIXTURES / "per_user_http.py"), "--port", "0", *args],
        name,
        env={"FIXTURE_CALLS_FILE": str(calls)},
    )
    return proc, f"http://127.0.0.1:{port}/mcp", calls


@pytest.fixture
def private_backend(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Lists per bearer subject, saying `cacheScope: private` (`ttlMs` 0)."""
    proc, url, calls = _per_user(tmp_path, "per-user-private", "--scope", "private")
    try:
        yield url, calls
    finally:
        proc.stop()


@pytest.fixture
def public_backend(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The same backend, but claiming its lists are `cacheScope: public` (ttl 60 s)."""
    proc, url, calls = _per_user(
        tmp_path, "per-user-public", "--scope", "public", "--ttl-ms", "60000"
    )
    try:
        yield url, calls
    finally:
        proc.stop()


def _exchanging(url: str, issuer: AuthServer, **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "auth": {
            "type": "token_exchange",
            "token_url": f"{issuer.issuer}/token",
            "client_id": "gateway",
            "client_secret": "gateway-secret",
        },
        **extra,
    }


def _gateway(
    factory: Callable[..., Gateway],
    issuer: AuthServer,
    servers: dict[str, Any],
    data: Path,
    **extra: Any,
) -> Gateway:
    port = free_port()
    gw = factory(
        {
            **extra,
            "auth": {
                "enabled": True,
                "public_url": f"http://127.0.0.1:{port}",
                "data_dir": str(data),  # for the harness's readiness probe key
                "issuers": [{"issuer": issuer.issuer, "jwks_uri": issuer.jwks_uri}],
                "rules": [{"effect": "allow"}],
            },
            "servers": servers,
        },
        port=port,
    )
    for name in servers:
        gw.wait_backend(name)
    return gw


async def _tokens(
    http: aiohttp.ClientSession, issuer: AuthServer, gw: Gateway, resource: str | None = None
) -> list[str]:
    """Access tokens for the gateway (or one of its endpoints): `reader`'s, then `writer`'s."""
    resource = resource or gw.url
    reader = await client_token(http, issuer, "reader", resource)
    auth = {"Authorization": aiohttp.encode_basic_auth("writer", str(WRITER["secret"]))}
    form = [("grant_type", "client_credentials"), ("resource", resource)]
    async with http.post(f"{issuer.issuer}/token", data=form, headers=auth) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return [reader, register_secret(body["access_token"])]


def _lists(calls: Path) -> list[str]:
    return calls.read_text().splitlines()


async def _see_own_items(
    gw: Gateway, tokens: list[str], mode: str | None, face: str = "mcp"
) -> None:
    """Two principals at once through the official client, on `/mcp` or `/sse`: each lists,
    calls and reads only its own items; the other's are unknown to it."""
    import httpx2
    from mcp import Client, MCPError
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client

    def transport(token: str) -> Any:
        if face == "sse":
            return sse_client(f"{gw.base}/sse", headers={"Authorization": f"Bearer {token}"})
        http_client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        return streamable_http_client(gw.url, http_client=http_client)

    kwargs: dict[str, Any] = {} if mode is None else {"mode": mode}
    with anyio.fail_after(60):
        async with (
            Client(transport(tokens[0]), **kwargs) as reader,
            Client(transport(tokens[1]), **kwargs) as writer,
        ):
            if face == "sse" or mode is not None:
                # HTTP+SSE is a 2025 transport: the face answers in that era only.
                assert reader.protocol_version != "2026-07-28"
            else:
                assert reader.protocol_version == "2026-07-28"

            async def tools(client: Client) -> set[str]:
                return {t.name for t in (await client.list_tools()).tools}

            async def resources(client: Client) -> set[str]:
                return {str(r.uri) for r in (await client.list_resources()).resources}

            seen: dict[str, set[str]] = {}

            async def both(name: str, client: Client) -> None:
                seen[name] = await tools(client)
                seen[name + "-res"] = await resources(client)

            async with anyio.create_task_group() as tg:
                tg.start_soon(both, "reader", reader)
                tg.start_soon(both, "writer", writer)
            assert seen["reader"] == {"pu_common", "pu_notes_reader"}
            assert seen["writer"] == {"pu_common", "pu_notes_writer"}
            assert seen["reader-res"] == {"user://reader/profile"}
            assert seen["writer-res"] == {"user://writer/profile"}

            own = await reader.call_tool("pu_notes_reader", {})
            assert own.content[0].text == "reader's notes (as reader)"  # type: ignore[union-attr]
            own = await writer.call_tool("pu_notes_writer", {})
            assert own.content[0].text == "writer's notes (as writer)"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as refused:
                await reader.call_tool("pu_notes_writer", {})
            assert refused.value.error.code == -32602
            assert refused.value.error.message == "Unknown tool: pu_notes_writer"
            with pytest.raises(MCPError) as refused:
                await writer.call_tool("pu_notes_reader", {})
            assert refused.value.error.message == "Unknown tool: pu_notes_reader"
            read = await reader.read_resource("user://reader/profile")
            assert read.contents[0].text == "profile of reader"  # type: ignore[union-attr]
            with pytest.raises(MCPError):
                await writer.read_resource("user://reader/profile")
            # Listed again (ttlMs 0): still only their own.
            assert await tools(writer) == {"pu_common", "pu_notes_writer"}
            assert await tools(reader) == {"pu_common", "pu_notes_reader"}


@pytest.mark.parametrize(
    ("face", "mode"),
    [("mcp", None), ("mcp", "legacy"), ("sse", None), ("sse", "legacy")],
    ids=["mcp-2026-07-28", "mcp-legacy", "sse-default", "sse-legacy"],
)
async def test_each_caller_sees_and_calls_only_its_own_items(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    private_backend: tuple[str, Path],
    http: aiohttp.ClientSession,
    face: str,
    mode: str | None,
    tmp_path: Path,
) -> None:
    url, calls = private_backend
    gw = _gateway(
        gateway_factory, issuer, {"pu": _exchanging(url, issuer, prefix="pu")}, tmp_path / "k"
    )
    tokens = await _tokens(http, issuer, gw)
    await _see_own_items(gw, tokens, mode, face)
    # The backend listed to each caller as itself (and to the gateway as itself).
    subjects = {line.split()[0] for line in _lists(calls)}
    assert subjects == {"gateway", "reader", "writer"}


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_the_typescript_client_sees_only_its_own_items(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    private_backend: tuple[str, Path],
    http: aiohttp.ClientSession,
    transport: str,
    tmp_path: Path,
) -> None:
    """The official TypeScript client, as two principals at once, on `/mcp` and `/sse`."""
    from tests.e2e.test_reference_servers import NODE

    url, _calls = private_backend
    gw = _gateway(
        gateway_factory, issuer, {"pu": _exchanging(url, issuer, prefix="pu")}, tmp_path / "k"
    )
    tokens = await _tokens(http, issuer, gw)
    target = gw.url if transport == "streamable-http" else f"{gw.base}/sse"

    async def run(who: str, token: str, other: str) -> dict[str, Any]:
        plan = json.dumps([{"tool": f"pu_notes_{who}"}, {"tool": f"pu_notes_{other}"}])
        proc = await asyncio.create_subprocess_exec(
            str(NODE), str(NODE_DIR / "ts_client.mjs"), "--transport", transport,
            "--url", target, "--bearer-env", "CALLER_TOKEN", "--calls", plan, "--timeout", "30",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "CALLER_TOKEN": token},
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        seen: dict[str, Any] = json.loads(out)
        return seen

    reader, writer = await asyncio.gather(
        run("reader", tokens[0], "writer"), run("writer", tokens[1], "reader")
    )
    for who, seen, other in (("reader", reader, "writer"), ("writer", writer, "reader")):
        assert set(seen["tools"]) == {"pu_common", f"pu_notes_{who}"}
        assert seen["resources"] == [f"user://{who}/profile"]
        own, theirs = seen["calls"]
        assert own["result"]["content"][0]["text"] == f"{who}'s notes (as {who})"
        assert theirs["error"] == {"code": -32602, "message": f"Unknown tool: pu_notes_{other}"}


async def test_a_legacy_era_token_exchange_backend_lists_per_caller(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """A legacy-era backend's lists carry no cacheScope: listed per caller too, on each
    caller's own (per-principal) upstream session."""
    proc, url, calls = _per_user(tmp_path, "per-user-legacy", "--scope", "none")
    try:
        servers = {"pu": _exchanging(url, issuer, prefix="pu", era="legacy")}
        gw = _gateway(gateway_factory, issuer, servers, tmp_path / "k")
        assert gw.readyz()["backends"]["pu"]["era"] == "legacy"
        tokens = await _tokens(http, issuer, gw)
        await _see_own_items(gw, tokens, None)
        # No ttlMs: each principal's lists were listed once, and kept.
        listed = _lists(calls)
        assert listed.count("reader tools/list") == 1, listed
        assert listed.count("writer tools/list") == 1, listed
    finally:
        proc.stop()


async def test_a_public_list_is_listed_once_for_everyone(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    public_backend: tuple[str, Path],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """`cacheScope: public` keeps the shared catalog: listed once, as the gateway, for both
    callers (who then see what the gateway was shown)."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    url, calls = public_backend
    gw = _gateway(
        gateway_factory, issuer, {"pu": _exchanging(url, issuer, prefix="pu")}, tmp_path / "k"
    )
    tokens = await _tokens(http, issuer, gw)
    names: list[set[str]] = []
    with anyio.fail_after(60):
        for token in tokens:
            as_caller = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
            async with Client(streamable_http_client(gw.url, http_client=as_caller)) as client:  # type: ignore[arg-type]
                names.append({t.name for t in (await client.list_tools()).tools})
    assert names == [{"pu_common", "pu_notes_gateway"}] * 2
    assert [line for line in _lists(calls) if "tools/list" in line] == ["gateway tools/list"]


async def test_a_caller_without_an_exchangeable_token_sees_none_of_its_items(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    private_backend: tuple[str, Path],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """An API-key caller has no token to exchange: the backend's per-caller kinds are not
    listed to it at all, and a call is refused as before (-31002, never made under the
    gateway's identity), while a token caller at the same time sees its own."""
    from tests.harness import create_key
    from tests.rpc import RawClient

    url, _ = private_backend
    data = tmp_path / "keys"
    alice_key = create_key(data, "alice", "user")
    gw = _gateway(gateway_factory, issuer, {"pu": _exchanging(url, issuer, prefix="pu")}, data)
    reader_token = await client_token(http, issuer, "reader", gw.url)
    alice = await RawClient(
        gw.url, http, extra_headers={"Authorization": f"Bearer {alice_key}"}
    ).open()
    reader = await RawClient(
        gw.url, http, extra_headers={"Authorization": f"Bearer {reader_token}"}
    ).open()
    listed = await alice.result("tools/list", {})
    assert listed["tools"] == []
    mine = await reader.result("tools/list", {})
    assert {t["name"] for t in mine["tools"]} == {"pu_common", "pu_notes_reader"}
    refused = (await alice.request("tools/call", {"name": "pu_common", "arguments": {}})).json
    assert refused["error"]["code"] == codes.BACKEND_PROTOCOL_ERROR
    assert "authenticated without one" in refused["error"]["message"]


async def test_list_changed_relists_every_principal_and_tells_their_sessions(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """A legacy-era backend (its lists kept until `list_changed`) grants `reader` a tool and
    announces `tools/list_changed`: both principals' sessions are told, and each lists again
    as itself; the granted tool is reader's alone, callable by reader, unknown to writer."""
    import httpx2
    from mcp import Client, MCPError
    from mcp.client.streamable_http import streamable_http_client
    from mcp_types import ToolListChangedNotification

    proc, url, calls = _per_user(tmp_path, "per-user-grant", "--scope", "none", "--grant")
    try:
        servers = {"pu": _exchanging(url, issuer, prefix="pu", era="legacy")}
        gw = _gateway(gateway_factory, issuer, servers, tmp_path / "k")
        tokens = await _tokens(http, issuer, gw)
        told = {"reader": anyio.Event(), "writer": anyio.Event()}

        def handler(who: str) -> Callable[[Any], Any]:
            async def on_message(message: Any) -> None:
                if isinstance(message, ToolListChangedNotification):
                    told[who].set()

            return on_message

        def as_caller(token: str) -> Any:
            http_client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
            return streamable_http_client(gw.url, http_client=http_client)

        with anyio.fail_after(90):
            async with (
                Client(
                    as_caller(tokens[0]), mode="legacy", message_handler=handler("reader")
                ) as reader,
                Client(
                    as_caller(tokens[1]), mode="legacy", message_handler=handler("writer")
                ) as writer,
            ):

                async def tools(client: Client) -> set[str]:
                    return {t.name for t in (await client.list_tools()).tools}

                base = {"pu_common", "pu_grant"}
                assert await tools(reader) == base | {"pu_notes_reader"}
                assert await tools(writer) == base | {"pu_notes_writer"}
                granted = await reader.call_tool("pu_grant", {"tag": "x"})
                assert granted.content[0].text == "granted extra_x"  # type: ignore[union-attr]
                await told["reader"].wait()
                await told["writer"].wait()
                assert await tools(reader) == base | {"pu_notes_reader", "pu_extra_x"}
                assert await tools(writer) == base | {"pu_notes_writer"}
                called = await reader.call_tool("pu_extra_x", {})
                assert called.content[0].text == "extra_x (reader)"  # type: ignore[union-attr]
                with pytest.raises(MCPError) as refused:
                    await writer.call_tool("pu_extra_x", {})
                assert refused.value.error.message == "Unknown tool: pu_extra_x"
        # Each listed again after the change (once per list_changed it heard of: the backend
        # announces it on every session it has, the gateway's and each caller's own).
        listed = _lists(calls)
        assert listed.count("reader tools/list") >= 2, listed
        assert listed.count("writer tools/list") >= 2, listed
    finally:
        proc.stop()


async def test_principals_held_are_bounded(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    private_backend: tuple[str, Path],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """`lists_max_principals: 1`: the second principal to list evicts the first, who is
    listed again (as itself) when it next needs its lists; nobody sees another's items."""
    from tests.rpc import RawClient

    url, calls = private_backend
    server = _exchanging(url, issuer, prefix="pu")
    server["auth"]["lists_max_principals"] = 1
    gw = _gateway(gateway_factory, issuer, {"pu": server}, tmp_path / "k")
    tokens = await _tokens(http, issuer, gw)
    reader, writer = [
        await RawClient(gw.url, http, extra_headers={"Authorization": f"Bearer {t}"}).open()
        for t in tokens
    ]
    for client, who in ((reader, "reader"), (writer, "writer"), (reader, "reader")):
        listed = await client.result("tools/list", {})
        assert {t["name"] for t in listed["tools"]} == {"pu_common", f"pu_notes_{who}"}
        assert gw.readyz()["callerLists"] == {"pu": 1}
    called = await writer.result("tools/call", {"name": "pu_notes_writer", "arguments": {}})
    assert called["content"][0]["text"] == "writer's notes (as writer)"
    assert [line.split()[0] for line in _lists(calls) if "tools/list" in line][1:] == [
        "reader",
        "writer",
        "reader",
        "writer",
    ]


async def test_a_virtual_server_shows_each_caller_its_own_picks(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    private_backend: tuple[str, Path],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A virtual server picking `notes_*` of the backend: each principal, at the same time,
    is shown and can call only its own pick, under the view's name for it."""
    from tests.rpc import RawClient

    url, _ = private_backend
    view = {"tools": [{"backends": ["pu"], "names": ["notes_*"]}]}
    gw = _gateway(
        gateway_factory,
        issuer,
        {"pu": _exchanging(url, issuer, prefix="pu")},
        tmp_path / "k",
        virtual_servers={"mine": view},
    )
    endpoint = f"{gw.base}/servers/mine/mcp"
    tokens = await _tokens(http, issuer, gw, endpoint)
    reader, writer = [
        await RawClient(endpoint, http, extra_headers={"Authorization": f"Bearer {t}"}).open()
        for t in tokens
    ]
    for client, who, other in ((reader, "reader", "writer"), (writer, "writer", "reader")):
        listed = await client.result("tools/list", {})
        assert [t["name"] for t in listed["tools"]] == [f"pu_notes_{who}"]
        called = await client.result("tools/call", {"name": f"pu_notes_{who}", "arguments": {}})
        assert called["content"][0]["text"] == f"{who}'s notes (as {who})"
        refused = (
            await client.request("tools/call", {"name": f"pu_notes_{other}", "arguments": {}})
        ).json
        assert refused["error"]["message"] == f"Unknown tool: pu_notes_{other}"
        refused = (await client.request("tools/call", {"name": "pu_common", "arguments": {}})).json
        assert refused["error"]["message"] == "Unknown tool: pu_common"


async def test_mirrored_headers_are_checked_against_a_callers_own_tool(
    gateway_factory: Callable[..., Gateway],
    issuer: AuthServer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A 2026-07-28 call's `Mcp-Param-*` headers are checked against the definition of the
    tool the caller is shown, when only that caller is shown it; another caller naming that
    tool gets an unknown tool, whatever headers it sends."""
    from tests.rpc import RawClient

    proc, url, _ = _per_user(tmp_path, "per-user-tagged", "--scope", "private", "--tagged")
    try:
        servers = {"pu": _exchanging(url, issuer, prefix="pu")}
        gw = _gateway(gateway_factory, issuer, servers, tmp_path / "keys")
        reader_token, writer_token = await _tokens(http, issuer, gw)

        def client(token: str, region: str) -> RawClient:
            headers = {"Authorization": f"Bearer {token}", "Mcp-Param-Region": region}
            return RawClient(gw.url, http, era="modern", extra_headers=headers)

        call = {"name": "pu_tagged_reader", "arguments": {"region": "eu"}}
        lying, honest, other = await asyncio.gather(
            client(reader_token, "us").request("tools/call", call),
            client(reader_token, "eu").request("tools/call", call),
            client(writer_token, "us").request("tools/call", call),
        )
        assert lying.status == 400, lying.json
        assert lying.json["error"]["code"] == codes.HEADER_MISMATCH
        assert "Region" in lying.json["error"]["message"]
        assert honest.json["result"]["content"][0]["text"] == "reader in eu"
        assert other.json["error"]["code"] == codes.INVALID_PARAMS
        assert "pu_tagged_reader" in other.json["error"]["message"]
    finally:
        proc.stop()
