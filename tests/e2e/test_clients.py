"""Official SDK clients over every face, against several real backends at once."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import BIN, FIXTURES, PYTHON, Gateway, sdk_http_backend, start_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EXPECTED_TOOLS = {
    "clock_now",  # bundled demo, stdio, modern
    "notes_add_note",  # bundled demo, stdio, modern
    "time_get_current_time",  # mcp-server-time (PyPI), stdio
    "git_git_status",  # mcp-server-git (PyPI), stdio
    "web_echo",  # SDK server over Streamable HTTP, forced legacy era
    "modern_echo",  # SDK server over Streamable HTTP, modern era
    "sdkio_add",  # SDK server over stdio
}


def _git_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("hello\n")
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _git_repo(tmp_path_factory.mktemp("clients") / "repo")


@pytest.fixture(scope="module")
def config(repo: Path) -> Iterator[dict[str, Any]]:
    with (
        sdk_http_backend("--json-response", name="web") as web,
        sdk_http_backend(name="modern") as modern,
    ):
        yield {
            "servers": {
                "clock": {"command": "switchyard", "args": ["demo", "clock"]},
                "notes": {"command": "switchyard", "args": ["demo", "notes"]},
                "time": {
                    "command": str(BIN / "mcp-server-time"),
                    "args": ["--local-timezone", "UTC"],
                },
                "git": {
                    "command": str(BIN / "mcp-server-git"),
                    "args": ["--repository", str(repo)],
                },
                "web": {"url": web, "type": "streamable-http", "era": "legacy"},
                "modern": {"url": modern, "type": "http", "era": "modern"},
                "sdkio": {
                    "command": PYTHON,
                    "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "sdkio"],
                },
            }
        }


@pytest.fixture(scope="module")
def gateway(config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(config, tmp_path_factory.mktemp("gw"))
    try:
        for name in config["servers"]:
            gw.wait_backend(name)
        yield gw
    finally:
        gw.stop()


async def _exercise(client: Client, repo: Path) -> dict[str, Any]:
    tools = {t.name for t in (await client.list_tools()).tools}
    assert tools >= EXPECTED_TOOLS, EXPECTED_TOOLS - tools
    now = await client.call_tool("time_get_current_time", {"timezone": "UTC"})
    assert not now.is_error and '"timezone": "UTC"' in now.content[0].text  # type: ignore[union-attr]
    echo = await client.call_tool("web_echo", {"text": "via legacy http"})
    assert echo.content[0].text == "via legacy http"  # type: ignore[union-attr]
    echo = await client.call_tool("modern_echo", {"text": "via modern http"})
    assert echo.content[0].text == "via modern http"  # type: ignore[union-attr]
    added = await client.call_tool("sdkio_add", {"a": 2, "b": 40})
    assert added.content[0].text == "42"  # type: ignore[union-attr]
    status = await client.call_tool("git_git_status", {"repo_path": str(repo)})
    assert not status.is_error, status.content
    assert "README.md" in status.content[0].text  # type: ignore[union-attr]
    resources = {str(r.uri) for r in (await client.list_resources()).resources}
    assert {"clock://zones", "notes://all", "fixture://web/info"} <= resources
    read = await client.read_resource("clock://zones")
    assert "Europe/Paris" in read.contents[0].text  # type: ignore[union-attr]
    templates = {
        t.uri_template for t in (await client.list_resource_templates()).resource_templates
    }
    assert {"clock://zone/{+name}", "notes://note/{id}"} <= templates
    via_template = await client.read_resource("clock://zone/Europe/Paris")
    assert "Europe/Paris" in via_template.contents[0].text  # type: ignore[union-attr]
    prompts = {p.name for p in (await client.list_prompts()).prompts}
    assert {"clock_plan_meeting", "notes_summarize", "web_greet"} <= prompts
    greeting = await client.get_prompt("web_greet", {"who": "Ada"})
    assert "Ada" in greeting.messages[0].content.text  # type: ignore[union-attr]
    return {"tools": tools}


async def test_sdk_client_legacy_streamable_http(gateway: Gateway, repo: Path) -> None:
    async with Client(streamable_http_client(gateway.url), mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_info is not None and client.server_info.name == "switchyard"
        await _exercise(client, repo)


async def test_sdk_client_modern_streamable_http(gateway: Gateway, repo: Path) -> None:
    async with Client(gateway.url) as client:
        assert client.protocol_version == "2026-07-28"
        await _exercise(client, repo)
        # SDK clients still ping after negotiating 2026-07-28; the answer must validate.
        await client.send_ping()


async def test_sdk_client_legacy_sse(gateway: Gateway, repo: Path) -> None:
    async with Client(sse_client(f"{gateway.base}/sse"), mode="legacy") as client:
        await _exercise(client, repo)


async def test_sdk_client_default_mode_sse_falls_back_to_the_handshake(
    gateway: Gateway, repo: Path
) -> None:
    # The 2024-11-05 transport serves only the handshake era: the client's discover probe must
    # lead it to `initialize`, and every listing then validates.
    async with Client(sse_client(f"{gateway.base}/sse")) as client:
        assert client.protocol_version != "2026-07-28"
        await _exercise(client, repo)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sdk_client_spawning_switchyard_stdio(
    gateway: Gateway, repo: Path, mode: str
) -> None:
    params = StdioServerParameters(
        command=str(BIN / "switchyard"),
        args=["stdio", "--config", str(gateway.config_path), "--log-level", "warning"],
    )
    async with Client(params, mode=mode) as client:  # type: ignore[arg-type]
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        assert client.protocol_version == expected
        await _exercise(client, repo)
