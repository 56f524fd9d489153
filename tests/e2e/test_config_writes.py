"""Virtual servers and the access, rate-limit and approval rules written through the admin API
(the database as the configuration's source): each change seen by two real MCP callers, one
gaining what the other loses; refused writes (428, 412, 422, 403, 409) change nothing; every
write is audited; the CLI does the same; three gateway processes on one PostgreSQL database
converge within a second, and one that missed the change notice still converges by polling."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.databases import PG_BASE
from tests.e2e.test_admin import admin_cli, call
from tests.harness import Gateway, create_key, register_secret, start_gateway, stdio_fixture
from tests.rpc import RawClient, Response

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HMAC_ENV = "SWITCHYARD_CONFIG_WRITES_TEST_HMAC"
RATE_LIMITED = -31020
ADMINS = {"effect": "allow", "roles": ["admin", "probe"]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def hmac_env(monkeypatch: pytest.MonkeyPatch) -> None:
    key = register_secret(f"writes-hmac-{time.monotonic_ns()}-0123456789")
    monkeypatch.setenv(HMAC_ENV, key)  # the gateway processes inherit it


def writes_config(tmp: Path, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"enabled": True, "data_dir": str(tmp / "keys"), "rules": rules},
        "storage": {"data_dir": str(tmp / "db")},
        "audit": {
            "enabled": True,
            "hmac_key": "${" + HMAC_ENV + "}",
            "keys_dir": str(tmp / "audit-keys"),
        },
        "admin": {"dynamic_registration": True},
        "servers": {"fx": stdio_fixture("crashy", isolation="shared")},
        **extra,
    }


async def acall(gw: Gateway, *args: Any, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    return await asyncio.to_thread(call, gw, *args, **kwargs)


async def etag(gw: Gateway, path: str, key: str) -> str:
    status, headers, _ = await acall(gw, "GET", path, key)
    assert status == 200
    return headers["etag"]


async def write(gw: Gateway, method: str, path: str, key: str, body: Any = None) -> dict[str, Any]:
    """A write with the ETag just read; it must succeed and change no backend."""
    status, headers, answer = await acall(
        gw, method, path, key, body, {"If-Match": await etag(gw, "/admin/v1/status", key)}
    )
    assert status == 200, answer
    assert headers["etag"] == f'"v{answer["version"]}"'
    assert (answer["added"], answer["replaced"], answer["removed"]) == ([], [], [])
    return answer  # type: ignore[no-any-return]


async def version(gw: Gateway, key: str) -> int:
    status, _, body = await acall(gw, "GET", "/admin/v1/status", key)
    assert status == 200
    return int(body["version"])


async def session(http: aiohttp.ClientSession, url: str, key: str) -> RawClient:
    return await RawClient(url, http, extra_headers={"Authorization": f"Bearer {key}"}).open()


async def tool_names(client: RawClient) -> set[str]:
    return {t["name"] for t in await client.list_all("tools/list", "tools")}


async def call_tool(client: RawClient, name: str, arguments: dict[str, Any]) -> Response:
    return await client.request(
        "tools/call", {"name": name, "arguments": arguments}, secrets.randbelow(10**6)
    )


async def echo(client: RawClient, text: str) -> str | int:
    """The echoed text, or the JSON-RPC error code of a refusal."""
    resp = await call_tool(client, "fx_echo", {"text": text})
    body = resp.json
    if "error" in body:
        return int(body["error"]["code"])
    assert resp.status == 200, (resp.status, resp.body)
    return str(body["result"]["content"][0]["text"])


async def backend_pid(client: RawClient) -> str:
    resp = await call_tool(client, "fx_whoami", {})
    return str(resp.json["result"]["content"][0]["text"])


async def admin_records(gw: Gateway, key: str, until: Any) -> list[dict[str, Any]]:
    """The `admin` audit records once `until(records)` holds (the writer flushes in batches)."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found, after = [], 0
        for _ in range(50):
            query = f"/admin/v1/audit/records?event=admin&limit=200&after={after}"
            status, _, page = await acall(gw, "GET", query, key)
            assert status == 200
            found += page["records"]
            if page["next"] is None:
                break
            after = page["next"]
        if until(found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"audit records incomplete: {found}")


def actions(records: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(r.get("action"), r.get("principal"), r.get("outcome")) for r in records}


async def list_changed(stream: aiohttp.ClientResponse, method: str) -> None:
    seen = b""
    deadline = time.monotonic() + 10
    while f"notifications/{method}/list_changed".encode() not in seen:
        assert time.monotonic() < deadline, seen
        seen += await asyncio.wait_for(stream.content.readany(), 10)


async def test_access_rules_written_through_the_api_decide_from_the_next_request(
    tmp_path: Path, hmac_env: None
) -> None:
    keys = tmp_path / "keys"
    alice, bob = create_key(keys, "alice", "dev"), create_key(keys, "bob", "dev")
    carol = create_key(keys, "carol", "admin")
    only = {"effect": "allow", "principals": ["alice"], "backends": ["fx"]}
    gw = start_gateway(writes_config(tmp_path, [only, ADMINS]), tmp_path)
    path = "/admin/v1/access-rules"
    try:
        gw.wait_backend("fx")
        async with aiohttp.ClientSession() as http:
            as_alice = await session(http, gw.url, alice)
            as_bob = await session(http, gw.url, bob)
            as_carol = await session(http, gw.url, carol)
            pid = await backend_pid(as_carol)
            assert "fx_echo" in await tool_names(as_alice)
            assert await tool_names(as_bob) == set()
            assert await echo(as_alice, "a1") == "a1"
            assert isinstance(await echo(as_bob, "b1"), int)
            streams = [
                await http.get(gw.url, headers={**c.headers(), "Accept": "text/event-stream"})
                for c in (as_alice, as_bob)
            ]
            # A call of alice's in flight when she loses access finishes under the rules it
            # started with.
            sleeping = asyncio.create_task(call_tool(as_alice, "fx_sleep", {"ms": 1500}))
            deadline = time.monotonic() + 10
            while (await asyncio.to_thread(gw.readyz))["backends"]["fx"]["inFlight"] < 1:
                assert time.monotonic() < deadline and not sleeping.done()
                await asyncio.sleep(0.02)
            try:
                assert [s.status for s in streams] == [200, 200]
                swapped = {**only, "principals": ["bob"]}
                changed = await write(gw, "PUT", path, carol, {"rules": [swapped, ADMINS]})
                assert changed["version"] == 2
                assert not sleeping.done()
                slept = (await asyncio.wait_for(sleeping, 20)).json
                assert slept["result"]["content"][0]["text"] == "slept 1500", slept
                # Both sessions are told their lists changed; the next request decides anew.
                for stream in streams:
                    await list_changed(stream, "tools")
            finally:
                for stream in streams:
                    stream.close()
            assert await tool_names(as_alice) == set()
            assert isinstance(await echo(as_alice, "a2"), int)
            assert "fx_echo" in await tool_names(as_bob)
            assert await echo(as_bob, "b2") == "b2"
            # No backend restarted: the same process answers.
            assert await backend_pid(as_carol) == pid
            _, headers, shown = await acall(gw, "GET", path, carol)
            assert headers["etag"] == '"v2"'
            assert [r["principals"] for r in shown["rules"][:1]] == [["bob"]]

            # Refused writes change nothing.
            body = {"rules": [only, ADMINS]}
            assert (await acall(gw, "PUT", path, carol, body))[0] == 428
            stale = await acall(gw, "PUT", path, carol, body, {"If-Match": '"v1"'})
            assert stale[0] == 412 and '"v2"' in stale[2]["error"]
            current = {"If-Match": '"v2"'}
            bad = await acall(gw, "PUT", path, carol, {"rules": [{"effect": "maybe"}]}, current)
            assert bad[0] == 422 and "rules.0.effect" in bad[2]["error"], bad
            unknown = await acall(
                gw, "PUT", path, carol, {"rules": [{"effect": "allow", "who": "x"}]}, current
            )
            assert unknown[0] == 422 and "rules.0.who: unknown key" in unknown[2]["error"]
            off = await acall(gw, "PUT", path, carol, {**body, "enabled": False}, current)
            assert off[0] == 422 and off[2]["error"].startswith("enabled: the API does not")
            assert (await acall(gw, "PUT", path, bob, body, current))[:1] == (403,)
            assert (await acall(gw, "PUT", path, alice, body, current))[2] == {
                "error": "the admin API needs an admin role or scope"
            }
            assert await version(gw, carol) == 2
            assert (await acall(gw, "GET", path, carol))[2] == shown
            assert await echo(as_bob, "b3") == "b3"
            assert isinstance(await echo(as_alice, "a3"), int)

            # The CLI: a list read with `list-access-rules` goes back as it is read.
            both = {**only, "principals": ["alice", "bob"]}
            rules_file = tmp_path / "rules.json"
            rules_file.write_text(json.dumps({"rules": [both, ADMINS]}))
            put = await asyncio.to_thread(
                admin_cli, gw, carol, "put-access-rules", "--body", f"@{rules_file}"
            )
            assert put.returncode == 0, put.stderr
            assert json.loads(put.stdout)["version"] == 3
            assert (await echo(as_alice, "a4"), await echo(as_bob, "b4")) == ("a4", "b4")
            read = await asyncio.to_thread(admin_cli, gw, carol, "list-access-rules")
            assert read.returncode == 0, read.stderr
            rules_file.write_text(read.stdout)
            again = await asyncio.to_thread(
                admin_cli, gw, carol, "put-access-rules", "--body", f"@{rules_file}"
            )
            assert again.returncode == 0, again.stderr
            assert json.loads(again.stdout)["version"] == 4
            assert (await acall(gw, "GET", path, carol))[2]["rules"] == json.loads(read.stdout)[
                "rules"
            ]
            refused = await asyncio.to_thread(
                admin_cli, gw, bob, "put-access-rules", "--body", f"@{rules_file}"
            )
            assert (refused.returncode, refused.stderr.strip()) == (
                1,
                "switchyard admin: 403: the admin API needs an admin role or scope",
            )
        _, _, history = await acall(gw, "GET", "/admin/v1/config/versions", carol)
        assert [(v["version"], v["author"], v["summary"]) for v in history["versions"][:3]] == [
            (4, "api_key#carol", "set access rules (2)"),
            (3, "api_key#carol", "set access rules (2)"),
            (2, "api_key#carol", "set access rules (2)"),
        ]
        records = await admin_records(
            gw, carol, lambda rs: len([r for r in rs if r.get("action") == "putAccessRules"]) >= 10
        )
        assert {
            ("putAccessRules", "api_key#carol", 200),
            ("putAccessRules", "api_key#carol", 428),
            ("putAccessRules", "api_key#carol", 412),
            ("putAccessRules", "api_key#carol", 422),
            ("putAccessRules", "api_key#alice", 403),
        } <= actions(records)
        # One record per attempt (the refused CLI write stopped at reading the ETag).
        assert len([r for r in records if r.get("action") == "putAccessRules"]) == 10
        done = [
            r for r in records if (r.get("action"), r.get("outcome")) == ("putAccessRules", 200)
        ]
        assert [r.get("target") for r in done] == ["set access rules (2)"] * 3
    finally:
        gw.stop()


async def test_virtual_servers_created_replaced_and_removed_through_the_api(
    tmp_path: Path, hmac_env: None
) -> None:
    keys = tmp_path / "keys"
    alice, bob = create_key(keys, "alice", "dev"), create_key(keys, "bob", "ops")
    carol = create_key(keys, "carol", "admin")
    everyone = {"effect": "allow", "roles": ["dev", "ops"]}
    gw = start_gateway(writes_config(tmp_path, [everyone, ADMINS]), tmp_path)
    path = "/admin/v1/virtual-servers/team"
    team_url = f"{gw.base}/servers/team/mcp"
    try:
        gw.wait_backend("fx")
        async with aiohttp.ClientSession() as http:
            as_carol = await session(http, gw.url, carol)
            pid = await backend_pid(as_carol)
            # No such endpoint yet.
            probe = await RawClient(
                team_url, http, extra_headers={"Authorization": f"Bearer {alice}"}
            ).request("tools/list")
            assert probe.status == 404
            assert (await acall(gw, "GET", path, carol))[0] == 404
            for_dev = {"tools": [{"backends": ["fx"], "names": ["echo"]}], "roles": ["dev"]}
            added = await asyncio.to_thread(
                admin_cli, gw, carol, "put-virtual-server", "team", "--body", json.dumps(for_dev)
            )
            assert added.returncode == 0, added.stderr
            assert json.loads(added.stdout)["version"] == 2
            status, _, row = await acall(gw, "GET", path, carol)
            assert status == 200 and row["roles"] == ["dev"] and row["tools"] == 1
            alice_team = await session(http, team_url, alice)
            assert await tool_names(alice_team) == {"fx_echo"}
            assert await echo(alice_team, "t1") == "t1"
            bob_team = RawClient(team_url, http, extra_headers={"Authorization": f"Bearer {bob}"})
            refused = await bob_team.request("tools/list")
            assert refused.status == 403

            for_ops = {"tools": [{"backends": ["fx"], "names": ["whoami"]}], "roles": ["ops"]}
            replaced = await write(gw, "PUT", path, carol, for_ops)
            assert replaced["version"] == 3
            # The next request decides: alice's open session is refused, bob gets in.
            assert (await alice_team.request("tools/list")).status == 403
            bob_team = await session(http, team_url, bob)
            assert await tool_names(bob_team) == {"fx_whoami"}
            assert await backend_pid(bob_team) == pid
            # The plain endpoint is untouched for both.
            assert "fx_echo" in await tool_names(await session(http, gw.url, alice))
            assert "fx_echo" in await tool_names(await session(http, gw.url, bob))

            # Refused writes change nothing.
            current = {"If-Match": '"v3"'}
            assert (await acall(gw, "PUT", path, carol, for_dev))[0] == 428
            assert (await acall(gw, "PUT", path, carol, for_dev, {"If-Match": '"v2"'}))[0] == 412
            bad = await acall(gw, "PUT", path, carol, {"tools": [{"backend": ["fx"]}]}, current)
            assert bad[0] == 422 and "tools.0.backend: unknown key" in bad[2]["error"], bad
            # Checked as the file is: a name no client may use is refused when it compiles.
            renamed = {**for_ops, "rename": {"fx_whoami": "who am i"}}
            bad = await acall(gw, "PUT", path, carol, renamed, current)
            assert bad[0] == 422 and "virtual_servers.team.rename.fx_whoami" in bad[2]["error"]
            assert (await acall(gw, "PUT", "/admin/v1/virtual-servers/a%20b", carol, for_ops))[
                0
            ] == 428
            assert (
                await acall(gw, "PUT", "/admin/v1/virtual-servers/a%20b", carol, for_ops, current)
            )[0] == 400
            assert (await acall(gw, "PUT", path, bob, for_dev, current))[0] == 403
            assert (await acall(gw, "DELETE", path, alice, None, current))[0] == 403
            assert await version(gw, carol) == 3
            assert await tool_names(bob_team) == {"fx_whoami"}

            removed = await asyncio.to_thread(admin_cli, gw, carol, "delete-virtual-server", "team")
            assert removed.returncode == 0, removed.stderr
            assert json.loads(removed.stdout) == {
                "version": 4,
                "added": [],
                "replaced": [],
                "removed": [],
            }
            assert (await bob_team.request("tools/list")).status == 404
            assert (await alice_team.request("tools/list")).status == 404
            gone = await acall(gw, "DELETE", path, carol, None, {"If-Match": '"v4"'})
            assert gone[:1] == (404,)
            assert await backend_pid(as_carol) == pid
        records = await admin_records(
            gw, carol, lambda rs: ("deleteVirtualServer", "api_key#carol", 404) in actions(rs)
        )
        assert {
            ("putVirtualServer", "api_key#carol", 200),
            ("putVirtualServer", "api_key#carol", 422),
            ("putVirtualServer", "api_key#carol", 412),
            ("putVirtualServer", "api_key#bob", 403),
            ("deleteVirtualServer", "api_key#carol", 200),
        } <= actions(records)
        targets = [r.get("target") for r in records if r.get("outcome") == 200]
        assert targets[-3:] == [
            "add virtual server team",
            "change virtual server team",
            "remove virtual server team",
        ]
    finally:
        gw.stop()


async def test_rate_limit_rules_written_through_the_api(tmp_path: Path, hmac_env: None) -> None:
    keys = tmp_path / "keys"
    alice, bob = create_key(keys, "alice", "dev"), create_key(keys, "bob", "dev")
    carol = create_key(keys, "carol", "admin")
    everyone = {"effect": "allow", "roles": ["dev"]}
    gw = start_gateway(writes_config(tmp_path, [everyone, ADMINS]), tmp_path)
    path = "/admin/v1/rate-limits"

    def one_a_minute(who: str) -> dict[str, Any]:
        return {
            "name": "tight",
            "principals": [who],
            "tools": ["echo"],
            "windows": [{"period": "minute", "max": 1}],
        }

    try:
        gw.wait_backend("fx")
        async with aiohttp.ClientSession() as http:
            as_alice = await session(http, gw.url, alice)
            as_bob = await session(http, gw.url, bob)
            pid = await backend_pid(as_bob)
            assert [await echo(as_alice, f"a{i}") for i in range(3)] == ["a0", "a1", "a2"]
            changed = await write(gw, "PUT", path, carol, {"rules": [one_a_minute("alice")]})
            assert changed["version"] == 2
            assert [await echo(as_alice, f"a{i}") for i in range(2)] == ["a0", RATE_LIMITED]
            assert [await echo(as_bob, f"b{i}") for i in range(3)] == ["b0", "b1", "b2"]
            changed = await write(gw, "PUT", path, carol, {"rules": [one_a_minute("bob")]})
            assert changed["version"] == 3
            assert [await echo(as_bob, f"b{i}") for i in range(2)] == ["b0", RATE_LIMITED]
            assert [await echo(as_alice, f"a{i}") for i in range(3)] == ["a0", "a1", "a2"]
            assert await backend_pid(as_alice) == pid

            rule = {**one_a_minute("alice"), "windows": [{"period": "fortnight", "max": 1}]}
            current = {"If-Match": '"v3"'}
            bad = await acall(gw, "PUT", path, carol, {"rules": [rule]}, current)
            assert bad[0] == 422 and "rules.0.windows.0.period" in bad[2]["error"], bad
            twice = {"rules": [one_a_minute("alice"), {**one_a_minute("bob"), "per": "all"}]}
            bad = await acall(gw, "PUT", path, carol, twice, current)
            assert bad[0] == 422 and "rules.1.per" in bad[2]["error"], bad
            good = {"rules": [one_a_minute("alice")]}
            assert (await acall(gw, "PUT", path, carol, good))[0] == 428
            assert (await acall(gw, "PUT", path, carol, good, {"If-Match": '"v2"'}))[0] == 412
            assert (await acall(gw, "PUT", path, alice, good, current))[0] == 403
            assert await version(gw, carol) == 3
            assert await echo(as_bob, "b") == RATE_LIMITED
            assert await echo(as_alice, "a") == "a"

            # The GET's answer goes back as read (its counters' status is no setting).
            status, _, shown = await acall(gw, "GET", path, carol)
            assert status == 200
            shown["rules"] = []
            cleared = await asyncio.to_thread(
                admin_cli, gw, carol, "put-rate-limits", "--body", json.dumps(shown)
            )
            assert cleared.returncode == 0, cleared.stderr
            assert json.loads(cleared.stdout)["version"] == 4
            assert [await echo(as_bob, f"b{i}") for i in range(2)] == ["b0", "b1"]
        records = await admin_records(
            gw, carol, lambda rs: ("putRateLimits", "api_key#carol", 200) in actions(rs)
        )
        assert {
            ("putRateLimits", "api_key#carol", 422),
            ("putRateLimits", "api_key#carol", 428),
            ("putRateLimits", "api_key#carol", 412),
            ("putRateLimits", "api_key#alice", 403),
        } <= actions(records)
    finally:
        gw.stop()


async def test_approval_rules_written_through_the_api(tmp_path: Path, hmac_env: None) -> None:
    keys = tmp_path / "keys"
    alice, bob = create_key(keys, "alice", "dev"), create_key(keys, "bob", "dev")
    carol = create_key(keys, "carol", "admin")
    everyone = {"effect": "allow", "roles": ["dev"]}
    approvals = {
        "enabled": True,
        "secret": register_secret("approval-secret-" + secrets.token_hex(8)),
    }
    config = writes_config(tmp_path, [everyone, ADMINS], approvals=approvals)
    gw = start_gateway(config, tmp_path)
    path = "/admin/v1/approval-rules"

    def gate(who: str) -> dict[str, Any]:
        return {"name": "gate", "principals": [who], "tools": ["echo"], "approver": "oncall"}

    async def outcome(client: RawClient, text: str) -> str:
        """`ran`, or `waits` when the call waits for an approver's decision (each call with
        arguments of its own: a repeated call would find its earlier ticket)."""
        text = f"{text}-{secrets.token_hex(4)}"
        body = (await call_tool(client, "fx_echo", {"text": text})).json
        assert "result" in body, body
        result = body["result"]
        if result.get("isError"):
            assert result["structuredContent"]["approval"]["status"] == "pending", body
            return "waits"
        assert result["content"][0]["text"] == text
        return "ran"

    try:
        gw.wait_backend("fx")
        async with aiohttp.ClientSession() as http:
            as_alice = await session(http, gw.url, alice)
            as_bob = await session(http, gw.url, bob)
            pid = await backend_pid(as_bob)
            assert (await outcome(as_alice, "a"), await outcome(as_bob, "b")) == ("ran", "ran")
            changed = await write(gw, "PUT", path, carol, {"rules": [gate("alice")]})
            assert changed["version"] == 2
            assert (await outcome(as_alice, "a"), await outcome(as_bob, "b")) == ("waits", "ran")
            changed = await write(gw, "PUT", path, carol, {"rules": [gate("bob")]})
            assert changed["version"] == 3
            assert (await outcome(as_alice, "a"), await outcome(as_bob, "b")) == ("ran", "waits")
            assert await backend_pid(as_alice) == pid

            current = {"If-Match": '"v3"'}
            wrong = {"rules": [{**gate("alice"), "action": "maybe"}]}
            bad = await acall(gw, "PUT", path, carol, wrong, current)
            assert bad[0] == 422 and "rules.0.action" in bad[2]["error"], bad
            off = await acall(gw, "PUT", path, carol, {"rules": [], "enabled": False}, current)
            assert off[0] == 422 and off[2]["error"].startswith("enabled: the API does not")
            assert (await acall(gw, "PUT", path, carol, {"rules": []}))[0] == 428
            assert (await acall(gw, "PUT", path, carol, {"rules": []}, {"If-Match": '"v2"'}))[
                0
            ] == 412
            assert (await acall(gw, "PUT", path, bob, {"rules": []}, current))[0] == 403
            assert await version(gw, carol) == 3
            assert (await outcome(as_alice, "a"), await outcome(as_bob, "b")) == ("ran", "waits")
            # The settings read with the list decide with it: every call now waits.
            status, _, shown = await acall(gw, "GET", path, carol)
            assert status == 200 and shown["rules"][0]["principals"] == ["bob"]
            strict = {**shown, "rules": [], "default": "require", "default_approver": "oncall"}
            strict_put = await asyncio.to_thread(
                admin_cli, gw, carol, "put-approval-rules", "--body", json.dumps(strict)
            )
            assert strict_put.returncode == 0, strict_put.stderr
            assert json.loads(strict_put.stdout)["version"] == 4
            assert (await outcome(as_alice, "a"), await outcome(as_bob, "b")) == ("waits", "waits")
        records = await admin_records(
            gw, carol, lambda rs: ("putApprovalRules", "api_key#bob", 403) in actions(rs)
        )
        assert {
            ("putApprovalRules", "api_key#carol", 200),
            ("putApprovalRules", "api_key#carol", 422),
            ("putApprovalRules", "api_key#carol", 428),
            ("putApprovalRules", "api_key#carol", 412),
        } <= actions(records)
    finally:
        gw.stop()


async def test_with_the_file_as_the_source_every_rule_write_is_refused(
    tmp_path: Path, hmac_env: None
) -> None:
    carol = create_key(tmp_path / "keys", "carol", "admin")
    config = writes_config(tmp_path, [ADMINS])
    config["admin"] = {}
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("fx")
        tag = await etag(gw, "/admin/v1/status", carol)
        for method, path, body, what in (
            ("PUT", "/admin/v1/virtual-servers/team", {}, "virtual servers"),
            ("DELETE", "/admin/v1/virtual-servers/team", None, "virtual servers"),
            ("PUT", "/admin/v1/access-rules", {"rules": []}, "access rules"),
            ("PUT", "/admin/v1/rate-limits", {"rules": []}, "rate-limit rules"),
            ("PUT", "/admin/v1/approval-rules", {"rules": []}, "approval rules"),
        ):
            status, _, answer = await acall(gw, method, path, carol, body, {"If-Match": tag})
            assert (status, answer) == (
                409,
                {
                    "error": f"{what} are configured in the file: set "
                    "admin.dynamic_registration to manage them through the API"
                },
            )
        assert await version(gw, carol) == 1
    finally:
        gw.stop()


# -- several processes on one PostgreSQL database -------------------------------------------

POLL_S = 2.0
"""Longer than the one second a change may take: converging in time needs the notice."""


async def _sql(statement: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(PG_BASE)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


async def converged(gateways: list[Gateway], key: str, wanted: int, within: float) -> float:
    """Seconds until every gateway runs version `wanted`; fails past `within`."""
    start = time.monotonic()
    pending = list(gateways)
    while pending:
        if time.monotonic() - start > within:
            versions = [await version(g, key) for g in pending]
            raise AssertionError(f"not at version {wanted} within {within}s: {versions}")
        pending = [g for g in pending if await version(g, key) != wanted]
        if pending:
            await asyncio.sleep(0.02)
    return time.monotonic() - start


async def listener_pid(gw: Gateway) -> int:
    """The PostgreSQL backend of `gw`'s configuration `LISTEN` connection."""
    name = f"switchyard-config-listener:{socket.gethostname()}:{gw.process.pid}"[:63]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = await _sql("SELECT pid FROM pg_stat_activity WHERE application_name = $1", name)
        if rows:
            assert len(rows) == 1, rows
            return int(rows[0]["pid"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no listener named {name}")


async def test_three_gateways_converge_within_a_second_and_a_lost_notice_only_delays(
    tmp_path: Path, hmac_env: None
) -> None:
    schema = f"sy_writes_{secrets.token_hex(6)}"
    await _sql(f'CREATE SCHEMA "{schema}"')
    keys = tmp_path / "keys"
    alice, bob = create_key(keys, "alice", "dev"), create_key(keys, "bob", "dev")
    carol = create_key(keys, "carol", "admin")
    only = {"effect": "allow", "principals": ["alice"]}
    config = writes_config(tmp_path, [only, ADMINS])
    config["storage"]["database_url"] = f"{PG_BASE}?search_path={schema}"
    config["admin"]["poll_interval"] = POLL_S
    gateways: list[Gateway] = []
    try:
        gateways = [start_gateway(config, tmp_path) for _ in range(3)]
        a, b, c = gateways
        for gw in gateways:
            gw.wait_backend("fx")
        await converged(gateways, carol, 1, 5.0)
        async with aiohttp.ClientSession() as http:
            # A change on a: b and c serve it within a second, for each caller.
            swapped = {"rules": [{**only, "principals": ["bob"]}, ADMINS]}
            await write(a, "PUT", "/admin/v1/access-rules", carol, swapped)
            took = await converged(gateways, carol, 2, 1.0)
            for gw in (b, c):
                assert isinstance(await echo(await session(http, gw.url, alice), "a"), int)
                assert await echo(await session(http, gw.url, bob), "b") == "b"
            # A change on b reaches a and c the same way.
            team = {"tools": [{"backends": ["fx"]}], "roles": ["dev"]}
            await write(b, "PUT", "/admin/v1/virtual-servers/team", carol, team)
            took = max(took, await converged(gateways, carol, 3, 1.0))
            bob_team = await session(http, f"{c.base}/servers/team/mcp", bob)
            assert "fx_echo" in await tool_names(bob_team)

            # c misses the notice of the next change: its LISTEN connection is ended first.
            pid = await listener_pid(c)
            [row] = await _sql("SELECT pg_terminate_backend($1) AS done", pid)
            assert row["done"] is True
            await write(a, "PUT", "/admin/v1/rate-limits", carol, {"rules": []})
            await converged([a, b], carol, 4, 1.0)
            late = await converged([c], carol, 4, POLL_S + 1.0)
            await c.log_lines("configuration notices lost; listening again")
            # Listening again, c is back to converging within a second.
            assert await listener_pid(c) != pid
            await write(b, "DELETE", "/admin/v1/virtual-servers/team", carol)
            took = max(took, await converged(gateways, carol, 5, 1.0))
            assert (await bob_team.request("tools/list")).status == 404
        print(f"converged within {took:.3f}s; after a lost notice {late:.3f}s")
    finally:
        for gw in gateways:
            gw.stop()
        await _sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_official_clients_on_mcp_and_sse_follow_an_access_rule_write(
    tmp_path: Path, hmac_env: None
) -> None:
    """The official Python client, alice on `/mcp` in its default (2026-07-28) mode and bob on
    `/sse` in a legacy session, across one access-rule write: bob's open session is told
    `tools/list_changed` and lists what he gained; alice's next list lacks what she lost, and
    calling it is answered as for a tool that does not exist."""
    import anyio
    import httpx2
    from mcp import Client, MCPError
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp_types import ToolListChangedNotification

    keys = tmp_path / "keys"
    alice, bob = create_key(keys, "alice", "dev"), create_key(keys, "bob", "dev")
    carol = create_key(keys, "carol", "admin")
    before = [
        ADMINS,
        {"effect": "allow", "principals": ["alice"], "backends": ["fx"]},
        {"effect": "allow", "principals": ["bob"], "names": ["whoami"]},
    ]
    after = [
        ADMINS,
        {"effect": "allow", "principals": ["alice"], "names": ["whoami"]},
        {"effect": "allow", "principals": ["bob"], "backends": ["fx"]},
    ]
    gw = start_gateway(writes_config(tmp_path, before), tmp_path)
    try:
        gw.wait_backend("fx")
        told = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, ToolListChangedNotification):
                told.set()

        as_alice = httpx2.AsyncClient(headers={"Authorization": f"Bearer {alice}"})
        with anyio.fail_after(60):
            async with (
                Client(streamable_http_client(gw.url, http_client=as_alice)) as modern,  # type: ignore[arg-type]
                Client(
                    sse_client(f"{gw.base}/sse", headers={"Authorization": f"Bearer {bob}"}),
                    mode="legacy",
                    message_handler=on_message,
                ) as legacy,
            ):
                assert modern.protocol_version == "2026-07-28"

                async def names(client: Client) -> set[str]:
                    return {t.name for t in (await client.list_tools()).tools}

                assert "fx_echo" in await names(modern)
                assert await names(legacy) == {"fx_whoami"}
                await write(gw, "PUT", "/admin/v1/access-rules", carol, {"rules": after})
                await told.wait()
                assert "fx_echo" in await names(legacy)
                assert (await legacy.call_tool("fx_echo", {"text": "bob"})).content[0].text == (  # type: ignore[union-attr]
                    "bob"
                )
                assert await names(modern) == {"fx_whoami"}
                with pytest.raises(MCPError) as refused:
                    await modern.call_tool("fx_echo", {"text": "alice"})
                assert refused.value.error.code == -32602
    finally:
        gw.stop()
