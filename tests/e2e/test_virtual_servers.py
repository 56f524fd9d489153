"""Virtual servers: named endpoints with a curated, renamed subset of the backends."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.test_auth_server import AuthServer, client_token, start_auth_server
from tests.harness import (
    BIN,
    Gateway,
    create_key,
    free_port,
    start_gateway,
)
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SUPPORT = {
    "tools": [
        {"backends": ["clock"], "names": ["now"]},
        {"backends": ["notes"], "names": ["list_notes", "add_note"]},
    ],
    "prompts": [{"backends": ["notes"], "names": ["*"]}],
    "resources": [{"backends": ["clock"], "names": ["clock://zones"]}],
    "rename": {"clock_now": "what_time_is_it"},
    "describe": {"what_time_is_it": "The time, anywhere."},
    "roles": ["support", "viewer"],
}
EXPECTED_TOOLS = ["notes_add_note", "notes_list_notes", "what_time_is_it"]


def _key(data: Path, principal: str, role: str) -> str:
    return create_key(data, principal, role)


@pytest.fixture(scope="module")
def issuer() -> Iterator[AuthServer]:
    server = start_auth_server("auth-for-views")
    try:
        yield server
    finally:
        server.proc.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, issuer: AuthServer) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("views")
    data = tmp / "keys"
    keys = {"sam": _key(data, "sam", "support"), "eve": _key(data, "eve", "other")}
    port = free_port()
    config = {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data),
            "issuers": [{"issuer": issuer.issuer, "jwks_uri": issuer.jwks_uri}],
            "rules": [{"effect": "allow"}],
        },
        "servers": {
            "clock": {"command": "switchyard", "args": ["demo", "clock"]},
            "notes": {"command": "switchyard", "args": ["demo", "notes"]},
        },
        "virtual_servers": {"support": SUPPORT},
    }
    gw = start_gateway(config, tmp, port=port)
    try:
        gw.wait_backend("clock")
        gw.wait_backend("notes")
        yield {"gw": gw, "keys": keys}
    finally:
        gw.stop()


def _client(transport: Any, mode: str) -> Client:
    return Client(transport, mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(("face", "mode"), [("mcp", "legacy"), ("mcp", "auto"), ("sse", "legacy")])
async def test_a_virtual_server_exposes_exactly_its_subset(
    setup: dict[str, Any], face: str, mode: str
) -> None:
    gw: Gateway = setup["gw"]
    auth = httpx2.AsyncClient(headers={"Authorization": f"Bearer {setup['keys']['sam']}"})
    if face == "mcp":
        transport: Any = streamable_http_client(f"{gw.base}/servers/support/mcp", http_client=auth)
    else:
        transport = sse_client(
            f"{gw.base}/servers/support/sse",
            headers={"Authorization": f"Bearer {setup['keys']['sam']}"},
        )
    async with _client(transport, mode) as client:
        tools = (await client.list_tools()).tools
        assert sorted(t.name for t in tools) == EXPECTED_TOOLS
        assert (
            next(t for t in tools if t.name == "what_time_is_it").description
            == "The time, anywhere."
        )
        now = await client.call_tool("what_time_is_it", {"timezone": "Asia/Tokyo"})
        assert '"timezone": "Asia/Tokyo"' in now.content[0].text  # type: ignore[union-attr]
        prompts = sorted(p.name for p in (await client.list_prompts()).prompts)
        assert prompts == ["notes_summarize"]
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        assert resources == ["clock://zones"]
        assert (await client.list_resource_templates()).resource_templates == []


async def test_what_is_outside_the_subset_does_not_exist_there(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    headers = {"Authorization": f"Bearer {setup['keys']['sam']}"}
    view = await RawClient(f"{gw.base}/servers/support/mcp", http, extra_headers=headers).open()
    for name in ("clock_now", "clock_convert_time", "notes_delete_note"):
        resp = await view.request("tools/call", {"name": name, "arguments": {}})
        assert resp.json["error"] == {"code": -32602, "message": f"Unknown tool: {name}"}
    missing = await view.request("resources/read", {"uri": "notes://all"})
    assert missing.json["error"]["code"] == -32002
    # The full gateway still serves everything to the same caller.
    full = await RawClient(gw.url, http, extra_headers=headers).open()
    assert "clock_convert_time" in [t["name"] for t in await full.list_all("tools/list", "tools")]
    # A session belongs to the endpoint it was opened on.
    crossed = RawClient(
        f"{gw.base}/servers/support/mcp", http, extra_headers=headers, session_id=full.session_id
    )
    assert (await crossed.request("tools/list")).status == 404


async def test_each_virtual_server_has_its_own_auth_requirement(
    setup: dict[str, Any], issuer: AuthServer, http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    url = f"{gw.base}/servers/support/mcp"
    async with http.post(url, data=b"{}") as resp:
        assert resp.status == 401
        metadata = f"{gw.base}/.well-known/oauth-protected-resource/servers/support/mcp"
        assert resp.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{metadata}"'
    async with http.get(metadata) as resp:
        assert (await resp.json())["resource"] == url
    eve = RawClient(url, http, extra_headers={"Authorization": f"Bearer {setup['keys']['eve']}"})
    assert (await eve.post(b"{}", eve.headers())).status == 403  # authenticated, lacks the role
    # A token is good only at the endpoints its audience names.
    for_view = await client_token(http, issuer, "reader", url)  # role viewer
    for_root = await client_token(http, issuer, "reader", gw.url)
    ok = await RawClient(url, http, extra_headers={"Authorization": f"Bearer {for_view}"}).open()
    assert sorted(t["name"] for t in await ok.list_all("tools/list", "tools")) == EXPECTED_TOOLS
    wrong = RawClient(url, http, extra_headers={"Authorization": f"Bearer {for_root}"})
    assert (await wrong.post(b"{}", wrong.headers())).status == 401
    root_with_view_token = RawClient(
        gw.url, http, extra_headers={"Authorization": f"Bearer {for_view}"}
    )
    assert (await root_with_view_token.post(b"{}", root_with_view_token.headers())).status == 401


async def test_an_unknown_virtual_server_is_404(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    async with http.post(f"{gw.base}/servers/nope/mcp", data=b"{}") as resp:
        assert resp.status == 404


def _stdio_params(gw: Gateway, key: str | None) -> StdioServerParameters:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    if key is not None:
        env["SWITCHYARD_API_KEY"] = key
    return StdioServerParameters(
        command=str(BIN / "switchyard"),
        args=[
            "stdio",
            "--config",
            str(gw.config_path),
            "--server",
            "support",
            "--log-level",
            "warning",
        ],
        env=env,
    )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_virtual_server_over_stdio_with_the_key_from_the_environment(
    setup: dict[str, Any], mode: str
) -> None:
    async with _client(_stdio_params(setup["gw"], setup["keys"]["sam"]), mode) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == EXPECTED_TOOLS
        now = await client.call_tool("what_time_is_it", {"timezone": "UTC"})
        assert '"timezone": "UTC"' in now.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("who", [None, "eve"])
def test_without_a_valid_key_or_role_the_stdio_server_refuses_to_start(
    setup: dict[str, Any], who: str | None
) -> None:
    params = _stdio_params(setup["gw"], setup["keys"][who] if who else None)
    done = subprocess.run(
        [params.command, *params.args], env=params.env, input=b"", capture_output=True, timeout=30
    )
    assert done.returncode != 0
    expected = b"needs one of roles" if who else b"Authentication required"
    assert expected in done.stderr
