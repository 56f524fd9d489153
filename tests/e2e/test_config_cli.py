"""What a newcomer's config gets told: lints for names that match nothing and authentication
that lets nobody in (at load and from `switchyard config check`), a desktop config's own keys
accepted with a warning, the environment stdio backends get, where `switchyard keys` writes,
and a `make run` that needs no Node. Real `switchyard` processes throughout."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import BIN, FIXTURES, PYTHON, ROOT, register_secret, start_gateway

pytestmark = pytest.mark.e2e

SWITCHYARD = str(BIN / "switchyard")


def _check(
    tmp: Path, config: dict[str, Any] | str, *flags: str
) -> subprocess.CompletedProcess[str]:
    path = tmp / "switchyard.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return subprocess.run(
        [SWITCHYARD, "config", "check", *flags, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_config_check_names_every_silent_misconfiguration(tmp_path: Path) -> None:
    config = {
        "auth": {"enabled": True},
        "servers": {"github": {"command": "true"}},
        "virtual_servers": {
            "team": {"tools": [{"backends": ["gitlab"]}], "roles": ["dev"]},
        },
        "rate_limits": {
            "rules": [{"name": "r", "backends": ["jira"], "views": ["nope"], "concurrency": 1}]
        },
        "redaction": {"rules": [{"name": "x", "detectors": ["email"], "backends": ["slack"]}]},
    }
    done = _check(tmp_path, config)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "warning: virtual_servers.team.tools[0].backends: 'gitlab' matches no configured server",
        "warning: auth.rules: authentication is on and there are no rules: every request is "
        "denied (nothing is allowed by default)",
        "warning: rate_limits.rules[0].backends: 'jira' matches no configured server",
        "warning: rate_limits.rules[0].views: 'nope' matches no configured virtual server",
        "warning: redaction.rules[0].backends: 'slack' matches no configured server",
    ]


def test_config_check_names_a_cache_rule_that_matches_no_server(tmp_path: Path) -> None:
    config = {
        "servers": {"github": {"command": "true"}},
        "cache": {"rules": [{"backend": "git*", "ttl": 5}, {"backend": "wether", "ttl": 5}]},
    }
    done = _check(tmp_path, config)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "warning: cache.rules[1].backend: 'wether' matches no configured server",
    ]


def test_config_check_names_rules_and_roles_that_match_nothing(tmp_path: Path) -> None:
    config = {
        "auth": {
            "enabled": True,
            "rules": [
                {"effect": "allow", "roles": ["ops"], "backends": ["github", "gitlab*"]},
            ],
        },
        "servers": {"github": {"command": "true"}},
        "virtual_servers": {"team": {"roles": ["dev", "ops"]}},
    }
    done = _check(tmp_path, config)
    assert done.stderr.splitlines() == [
        "warning: auth.rules[0].backends: 'gitlab*' matches no configured server",
        "warning: virtual_servers.team.roles: no rule in auth.rules allows role 'dev': callers "
        "with only that role are denied everything",
    ]
    config["auth"] = {"enabled": False}
    done = _check(tmp_path, config)
    assert done.stderr.splitlines() == [
        "warning: virtual_servers.team.roles: authentication is off, so roles are not checked"
    ]


def test_config_check_names_a_console_oauth_issuer_the_gateway_does_not_trust(
    tmp_path: Path,
) -> None:
    issuer = {"issuer": "https://login.example", "jwks_uri": "https://login.example/jwks"}
    config: dict[str, Any] = {
        "auth": {"enabled": True, "rules": [{"effect": "allow"}], "issuers": [issuer]},
        "servers": {"github": {"command": "true"}},
        "admin": {"console_oauth": {"client_id": "console", "issuer": "https://other.example"}},
    }
    done = _check(tmp_path, config)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "warning: admin.console_oauth.issuer: 'https://other.example' is not one of "
        "auth.issuers (with auth.enabled): the console offers no OAuth sign-in"
    ]
    del config["admin"]["console_oauth"]["issuer"]
    assert _check(tmp_path, config).stderr == ""
    config["auth"]["issuers"] = []
    assert _check(tmp_path, config).stderr.splitlines() == [
        "warning: admin.console_oauth: auth.issuers is empty or authentication is off: the "
        "console offers no OAuth sign-in"
    ]


def test_config_check_takes_config_flag_and_refuses_two_files(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"servers": {"a": {"command": "true"}}}))
    done = subprocess.run(
        [SWITCHYARD, "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout == f"{path}: OK (1 servers: a)\n"
    done = subprocess.run(
        [SWITCHYARD, "config", "check", "--config", str(path), str(tmp_path / "other.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "switchyard config check: give the file once (a path or --config), not two\n"
    )


def test_a_desktop_configs_own_top_level_keys_are_accepted_with_a_warning(
    tmp_path: Path,
) -> None:
    desktop = {
        "globalShortcut": "Ctrl+Space",
        "preferences": {"theme": "dark"},
        "mcpServers": {"time": {"command": "true", "autoApprove": ["x"]}},
    }
    done = _check(tmp_path, json.dumps(desktop))
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: globalShortcut: not a Switchyard setting (a desktop client's key); ignored",
        "warning: preferences: not a Switchyard setting (a desktop client's key); ignored",
        "warning: mcpServers.time.autoApprove: not supported by Switchyard; ignored",
    ]
    # Without `mcpServers` it is not a desktop file: an unknown key stays an error (a typo).
    done = _check(tmp_path, {"globalShortcut": "x", "servers": {}})
    assert done.returncode == 2
    assert "  globalShortcut: unknown key" in done.stderr


def _env_dumping(out: Path, **extra: Any) -> dict[str, Any]:
    """A stdio backend that writes its environment to `out`, then serves as the fixture."""
    script = (
        "import json, os, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))\n"
        f"os.execv(sys.executable, [sys.executable, {str(FIXTURES / 'raw_stdio.py')!r}])\n"
    )
    return {"command": PYTHON, "args": ["-c", script], **extra}


@pytest.mark.parametrize("proxy_env", [True, False])
def test_stdio_backends_get_the_gateway_env_their_own_env_and_opted_in_proxy_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy_env: bool
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    monkeypatch.setenv("SWITCHYARD_TEST_SHARED", "from-gateway-env")
    monkeypatch.setenv("UNRELATED_SECRET", "never-passed")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    config = {
        "gateway": {
            "proxy_env": proxy_env,
            "env": {"SHARED": "${SWITCHYARD_TEST_SHARED}", "REGION": "eu"},
        },
        "servers": {
            "one": _env_dumping(one, env={"REGION": "us"}),
            "two": _env_dumping(two),
        },
    }
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("one")
        gw.wait_backend("two")
        env_one, env_two = json.loads(one.read_text()), json.loads(two.read_text())
    finally:
        gw.stop()
    assert env_one["SHARED"] == env_two["SHARED"] == "from-gateway-env"
    assert (env_one["REGION"], env_two["REGION"]) == ("us", "eu")
    assert "UNRELATED_SECRET" not in env_one
    if proxy_env:
        assert env_one["HTTPS_PROXY"] == "http://proxy.internal:3128"
        assert env_two["no_proxy"] == "localhost,127.0.0.1"
    else:
        assert "HTTPS_PROXY" not in env_one and "no_proxy" not in env_two


def test_keys_cli_reads_the_key_store_from_the_config_and_says_where_it_writes_without(
    tmp_path: Path,
) -> None:
    store = tmp_path / "gateway-keys"
    config = tmp_path / "switchyard.yaml"
    config.write_text(yaml.safe_dump({"auth": {"enabled": True, "data_dir": str(store)}}))
    env = {k: v for k, v in os.environ.items() if k != "SWITCHYARD_DATA_DIR"}
    done = subprocess.run(
        [SWITCHYARD, "keys", "create", "--principal", "alice", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    register_secret(done.stdout.strip())
    assert (store / "keys.db").exists()
    assert not (tmp_path / "var").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run(
        [SWITCHYARD, "keys", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=work,
        env=env,
    )
    assert done.returncode == 0
    assert done.stderr == (
        f"switchyard keys: using the SQLite key store {work / 'var' / 'keys.db'} (no --config, "
        "--data-dir or $SWITCHYARD_DATA_DIR; a gateway finds it only when run from this "
        "directory)\n"
    )


def test_make_run_installs_the_python_side_only() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "npm" not in done.stdout
    assert done.stdout.rstrip().endswith(".venv/bin/switchyard serve --host 127.0.0.1 --port 8080")
