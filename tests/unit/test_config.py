from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.config.load import ConfigError, load, load_plan
from switchyard.upstream.http import HttpSettings
from switchyard.upstream.stdio import StdioSettings

SWITCHYARD = Path(sys.executable).parent / "switchyard"
SECRET = "sk-live-9f8e7d6c5b4a"


def write(tmp_path: Path, data: Any, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    elif name.endswith(".json"):
        path.write_text(json.dumps(data), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def config_error(tmp_path: Path, data: Any, name: str = "config.yaml") -> str:
    path = write(tmp_path, data, name)
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    return str(info.value)


# -- valid files ---------------------------------------------------------------------------


def test_valid_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
gateway:
  separator: "__"
  page_size: 20
  request_timeout: 12
servers:
  local:
    command: python3
    args: ["-m", "server", "--flag"]
    env: {MODE: test}
    timeout: 3
  remote:
    url: https://mcp.example.com/mcp
    prefix: ""
    type: sse
""",
    )
    plan, _, warnings = load_plan(path)
    assert warnings == []
    assert plan.gateway.separator == "__"
    assert plan.gateway.page_size == 20
    local, remote = plan.backends
    assert (local.name, local.prefix, local.timeout_s) == ("local", "local", 3)
    assert isinstance(local.transport, StdioSettings)
    assert local.transport.args == ("-m", "server", "--flag")
    assert local.transport.env == {"MODE": "test"}
    assert (remote.name, remote.prefix, remote.timeout_s) == ("remote", "", 12)
    assert isinstance(remote.transport, HttpSettings)
    assert remote.transport.url == "https://mcp.example.com/mcp"
    assert remote.transport.transport == "sse"


def test_empty_file_is_a_valid_config_with_no_servers(tmp_path: Path) -> None:
    plan, _, warnings = load_plan(write(tmp_path, ""))
    assert plan.backends == ()
    assert warnings == []


def test_claude_desktop_json(tmp_path: Path) -> None:
    env_file = tmp_path / "time.env"
    env_file.write_text("# comment\nTZ_FROM_FILE=Europe/Paris\nexport QUOTED='q v'\nSHARED=file\n")
    path = write(
        tmp_path,
        {
            "mcpServers": {
                "time": {
                    "command": "uvx",
                    "args": ["mcp-server-time"],
                    "env": {"SHARED": "env"},
                    "envFile": str(env_file),
                    "autoApprove": ["get_current_time"],
                },
                "off": {"command": "nothing-here", "disabled": True},
                "remote": {"url": "http://127.0.0.1:9/mcp", "type": "http"},
            }
        },
        "claude_desktop_config.json",
    )
    plan, _, warnings = load_plan(path)
    assert warnings == ["mcpServers.time.autoApprove: not supported by Switchyard; ignored"]
    assert [b.name for b in plan.backends] == ["time", "remote"]
    time_backend = plan.backends[0]
    assert isinstance(time_backend.transport, StdioSettings)
    assert time_backend.transport.env == {
        "TZ_FROM_FILE": "Europe/Paris",
        "QUOTED": "q v",
        "SHARED": "env",  # `env` wins over the file
    }
    assert isinstance(plan.backends[1].transport, HttpSettings)
    assert plan.backends[1].transport.transport == "streamable-http"


def test_other_desktop_keys_warn_with_their_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"mcpServers": {"a": {"command": "x", "alwaysAllow": [], "description": "d"}}},
        "c.json",
    )
    _, warnings = load(path)
    assert warnings == [
        "mcpServers.a.alwaysAllow: not supported by Switchyard; ignored",
        "mcpServers.a.description: not supported by Switchyard; ignored",
    ]


def test_disabled_server_is_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"servers": {"a": {"command": "x", "disabled": True}, "b": {"command": "y"}}}
    )
    plan, _, _ = load_plan(path)
    assert [b.name for b in plan.backends] == ["b"]


def test_servers_and_mcp_servers_merge(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"servers": {"a": {"command": "x"}}, "mcpServers": {"b": {"url": "https://h/mcp"}}},
    )
    plan, _, _ = load_plan(path)
    assert [(b.name, b.prefix) for b in plan.backends] == [("a", "a"), ("b", "b")]


# -- errors name the key -------------------------------------------------------------------


def test_same_name_in_both_sections(tmp_path: Path) -> None:
    msg = config_error(
        tmp_path, {"servers": {"a": {"command": "x"}}, "mcpServers": {"a": {"command": "y"}}}
    )
    assert "mcpServers.a" in msg
    assert "servers" in msg


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"servers": {"a": {"command": "x", "tmeout": 3}}}, "servers.a.tmeout"),
        ({"mcpServers": {"b": {"command": "x", "argz": []}}}, "mcpServers.b.argz"),
        ({"gateway": {"page_sise": 3}}, "gateway.page_sise"),
        ({"severs": {}}, "severs"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, data: Any, key: str) -> None:
    msg = config_error(tmp_path, data)
    assert f"{key}: unknown key" in msg


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"servers": {"a": {"command": "x", "timeout": "abc"}}}, "servers.a.timeout"),
        ({"servers": {"a": {"command": "x", "timeout": -1}}}, "servers.a.timeout"),
        ({"servers": {"a": {"command": "x", "args": "one"}}}, "servers.a.args"),
        ({"servers": {"a": {"url": "https://h", "type": "websocket"}}}, "servers.a.type"),
        ({"servers": {"a": {"command": "x", "prefix": "has space"}}}, "servers.a.prefix"),
        ({"gateway": {"page_size": 0}}, "gateway.page_size"),
        ({"gateway": {"separator": "::"}}, "gateway.separator"),
        ({"servers": {"a": {"url": "ftp://h/mcp"}}}, "servers.a.url"),
    ],
)
def test_wrong_value_is_named(tmp_path: Path, data: Any, key: str) -> None:
    msg = config_error(tmp_path, data)
    assert f"{key}:" in msg


@pytest.mark.parametrize("server", [{"command": "x", "url": "https://h/mcp"}, {}, {"args": ["a"]}])
def test_exactly_one_of_command_or_url(tmp_path: Path, server: dict[str, Any]) -> None:
    msg = config_error(tmp_path, {"servers": {"srv": server}})
    assert "servers.srv:" in msg
    assert "exactly one of `command`" in msg


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    msg = config_error(
        tmp_path,
        {"servers": {"a": {"command": "x", "tmeout": 1, "timeout": "abc"}}, "gateway": {"x": 1}},
    )
    for key in ("servers.a.tmeout", "servers.a.timeout", "gateway.x"):
        assert key in msg


def test_invalid_server_name(tmp_path: Path) -> None:
    msg = config_error(tmp_path, {"servers": {"bad name": {"command": "x"}}})
    assert "servers.bad name" in msg


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in config_error(tmp_path, "- a\n- b\n")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")


# -- ${VAR} --------------------------------------------------------------------------------


def test_variables_resolve_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SY_UNIT_TOKEN", SECRET)
    monkeypatch.delenv("SY_UNIT_UNSET", raising=False)
    path = write(
        tmp_path,
        {
            "servers": {
                "a": {
                    "url": "https://h.example/mcp",
                    "headers": {
                        "Authorization": "Bearer ${SY_UNIT_TOKEN}",
                        "X-Region": "${SY_UNIT_UNSET:-eu-west}",
                        "X-Empty": "${SY_UNIT_UNSET:-}",
                    },
                },
                "b": {
                    "command": "x",
                    "args": ["--token=${SY_UNIT_TOKEN}"],
                    "env": {"T": "${SY_UNIT_TOKEN}"},
                },
            }
        },
    )
    plan, _, _ = load_plan(path)
    a, b = plan.backends
    assert isinstance(a.transport, HttpSettings)
    assert a.transport.headers == {
        "Authorization": f"Bearer {SECRET}",
        "X-Region": "eu-west",
        "X-Empty": "",
    }
    assert isinstance(b.transport, StdioSettings)
    assert b.transport.args == (f"--token={SECRET}",)
    assert b.transport.env == {"T": SECRET}


def test_set_variable_wins_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_UNIT_REGION", "us")
    path = write(
        tmp_path, {"servers": {"a": {"command": "x", "env": {"R": "${SY_UNIT_REGION:-eu}"}}}}
    )
    plan, _, _ = load_plan(path)
    assert isinstance(plan.backends[0].transport, StdioSettings)
    assert plan.backends[0].transport.env == {"R": "us"}


def test_missing_variable_names_the_key_and_hides_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SY_UNIT_TOKEN", SECRET)
    monkeypatch.delenv("SY_UNIT_MISSING", raising=False)
    msg = config_error(
        tmp_path,
        {
            "servers": {
                "a": {
                    "url": "https://h.example/mcp",
                    "headers": {
                        "X-Other": "${SY_UNIT_TOKEN}",
                        "Authorization": "Bearer inline-xyz-123 ${SY_UNIT_MISSING}",
                    },
                }
            }
        },
    )
    assert "servers.a.headers.Authorization" in msg
    assert "SY_UNIT_MISSING" in msg
    assert SECRET not in msg
    assert "inline-xyz-123" not in msg


def test_url_may_come_from_a_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # compile_plan resolves ${VAR} in `url`; validation must not reject it before resolution.
    monkeypatch.setenv("SY_UNIT_URL", "https://mcp.example.com/mcp")
    path = write(tmp_path, {"servers": {"a": {"url": "${SY_UNIT_URL}"}}})
    plan, _, _ = load_plan(path)
    assert isinstance(plan.backends[0].transport, HttpSettings)
    assert plan.backends[0].transport.url == "https://mcp.example.com/mcp"


def test_missing_env_file_names_the_key(tmp_path: Path) -> None:
    msg = config_error(
        tmp_path, {"servers": {"a": {"command": "x", "envFile": str(tmp_path / "nope.env")}}}
    )
    assert "servers.a.envFile" in msg


def test_yaml_syntax_error_does_not_echo_secret_values(tmp_path: Path) -> None:
    text = (
        "servers:\n"
        "  a:\n"
        "    url: https://h.example/mcp\n"
        f'    headers: {{Authorization: "Bearer {SECRET}\n'
    )
    msg = config_error(tmp_path, text)
    assert "not valid YAML" in msg
    assert SECRET not in msg


# -- prefixes ------------------------------------------------------------------------------


def test_duplicate_prefixes_are_rejected(tmp_path: Path) -> None:
    msg = config_error(
        tmp_path,
        {"servers": {"a": {"command": "x", "prefix": "p"}, "b": {"command": "y", "prefix": "p"}}},
    )
    assert "servers.b.prefix" in msg
    assert "'p'" in msg


def test_explicit_prefix_equal_to_another_servers_name_is_rejected(tmp_path: Path) -> None:
    msg = config_error(
        tmp_path,
        {
            "servers": {"gh": {"command": "x"}},
            "mcpServers": {"b": {"command": "y", "prefix": "gh"}},
        },
    )
    assert "mcpServers.b.prefix" in msg


def test_empty_prefixes_may_repeat_and_disabled_servers_do_not_count(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "servers": {
                "a": {"command": "x", "prefix": ""},
                "b": {"command": "y", "prefix": ""},
                "c": {"command": "z", "prefix": "p", "disabled": True},
                "d": {"command": "w", "prefix": "p"},
            }
        },
    )
    plan, _, _ = load_plan(path)
    assert [(b.name, b.prefix) for b in plan.backends] == [("a", ""), ("b", ""), ("d", "p")]


# -- the real CLI --------------------------------------------------------------------------

BAD = {"servers": {"a": {"command": "x", "tmeout": 3}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [str(SWITCHYARD), *args], capture_output=True, text=True, timeout=30, check=False
    )
    return proc, time.monotonic() - start


def test_cli_config_check_bad(tmp_path: Path) -> None:
    proc, elapsed = run_cli("config", "check", str(write(tmp_path, BAD)))
    assert proc.returncode == 2
    assert "servers.a.tmeout" in proc.stderr
    assert proc.stdout == ""
    assert elapsed < 10


def test_cli_serve_bad_config_exits_before_serving(tmp_path: Path) -> None:
    proc, elapsed = run_cli(
        "serve", "--config", str(write(tmp_path, BAD)), "--port", str(free_port())
    )
    assert proc.returncode == 2
    assert "servers.a.tmeout" in proc.stderr
    assert elapsed < 10


def test_cli_serve_missing_variable_exits_2_without_leaking(tmp_path: Path) -> None:
    data = {
        "servers": {
            "a": {
                "url": "https://h.example/mcp",
                "headers": {"Authorization": f"Bearer {SECRET}-${{SY_UNIT_SURELY_UNSET_VAR}}"},
            }
        }
    }
    proc, _ = run_cli("serve", "--config", str(write(tmp_path, data)), "--port", str(free_port()))
    assert proc.returncode == 2
    assert "servers.a.headers.Authorization" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_cli_config_check_good(tmp_path: Path) -> None:
    good = {"servers": {"a": {"command": "x"}, "b": {"url": "https://h.example/mcp"}}}
    proc, _ = run_cli("config", "check", str(write(tmp_path, good)))
    assert proc.returncode == 0, proc.stderr
    assert "OK (2 servers: a, b)" in proc.stdout


def test_cli_config_check_prints_desktop_warnings(tmp_path: Path) -> None:
    data = {"mcpServers": {"t": {"command": "x", "autoApprove": []}}}
    proc, _ = run_cli("config", "check", str(write(tmp_path, data, "c.json")))
    assert proc.returncode == 0
    assert "mcpServers.t.autoApprove" in proc.stderr
