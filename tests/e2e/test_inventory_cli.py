"""`switchyard backends` and `switchyard tools`: real backends started from a config, and the
tools two different callers would see, decided by the gateway's own rules and views."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import BIN, free_port, stdio_fixture
from tests.rpc import raw_fixture

pytestmark = pytest.mark.e2e

SWITCHYARD = str(BIN / "switchyard")
CRASHY = [t["name"] for t in raw_fixture().CRASHY_TOOLS]


def _run(tmp: Path, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [SWITCHYARD, *args, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _config(tmp: Path) -> dict[str, Any]:
    return {
        "gateway": {"startup_wait": 20},
        "auth": {
            "enabled": True,
            "data_dir": str(tmp / "keys"),
            "rules": [
                {"effect": "allow", "principals": ["alice"], "backends": ["one"]},
                {"effect": "allow", "roles": ["ops"], "backends": ["one", "two"]},
                {"effect": "deny", "roles": ["ops"], "names": ["crash"]},
            ],
        },
        "servers": {
            "one": stdio_fixture("crashy"),
            "two": stdio_fixture("crashy"),
            "gone": {"url": f"http://127.0.0.1:{free_port()}/mcp", "type": "http"},
        },
        "virtual_servers": {
            "team": {"tools": [{"backends": ["two"]}], "roles": ["ops"]},
        },
    }


def test_backends_lists_each_backend_with_its_state_and_last_error(tmp_path: Path) -> None:
    config = _config(tmp_path)
    port = config["servers"]["gone"]["url"].split(":")[2].split("/")[0]
    done = _run(tmp_path, config, "backends", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["one"] == {
        "name": "one",
        "transport": "stdio",
        "era": "legacy",
        "state": "up",
        "tools": len(CRASHY),
        "error": None,
    }
    assert rows["gone"]["state"] == "down" and rows["gone"]["tools"] is None
    assert rows["gone"]["error"] == (
        f"BackendUnreachable: cannot reach http://127.0.0.1:{port}/mcp (Streamable HTTP): "
        "connection refused"
    )
    done = _run(tmp_path, config, "backends")
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TRANSPORT", "ERA", "STATE", "TOOLS", "ERROR"]
    assert lines[1].split() == ["one", "stdio", "legacy", "up", str(len(CRASHY)), "-"]


def test_tools_shows_what_each_caller_would_see(tmp_path: Path) -> None:
    config = _config(tmp_path)
    alice = _run(tmp_path, config, "tools", "--json", "--as", "alice")
    assert alice.returncode == 0, alice.stderr
    assert [r["name"] for r in json.loads(alice.stdout)] == [f"one_{n}" for n in CRASHY]
    bob = _run(tmp_path, config, "tools", "--json", "--as", "bob", "--role", "ops")
    assert [r["name"] for r in json.loads(bob.stdout)] == [
        f"{b}_{n}" for b in ("one", "two") for n in CRASHY if n != "crash"
    ]
    nobody = _run(tmp_path, config, "tools", "--json", "--as", "carol")
    assert json.loads(nobody.stdout) == []
    team = _run(tmp_path, config, "tools", "--as", "bob", "--role", "ops", "--server", "team")
    assert team.stdout.splitlines()[0].split() == ["NAME", "BACKEND", "DESCRIPTION"]
    assert [line.split()[0] for line in team.stdout.splitlines()[1:]] == [
        f"two_{n}" for n in CRASHY if n != "crash"
    ]
    refused = _run(tmp_path, config, "tools", "--as", "alice", "--server", "team")
    assert refused.returncode == 2
    assert refused.stderr.endswith(
        "switchyard tools: virtual server 'team' needs one of roles ['ops']\n"
    )


def test_tools_refuses_contradictory_flags(tmp_path: Path) -> None:
    config = {"servers": {"one": stdio_fixture("crashy")}}
    done = _run(tmp_path, config, "tools", "--as", "alice")
    assert done.returncode == 2
    assert done.stderr.endswith(
        "switchyard tools: --as needs authentication on (auth.enabled): without it every "
        "caller sees the same tools\n"
    )
    done = _run(tmp_path, config, "tools", "--role", "ops")
    assert done.returncode == 2
    assert done.stderr.endswith("switchyard tools: --role and --issuer describe --as; give --as\n")
