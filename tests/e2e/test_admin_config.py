"""One desired configuration, versioned: backends registered, changed and removed through the
admin API (the database as the source), SIGHUP recorded as a version, and two gateway
processes on one PostgreSQL database converging on a new version within a second."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest
import yaml

from tests.databases import PG_BASE
from tests.e2e.test_admin import call
from tests.harness import Gateway, create_key, start_gateway, stdio_fixture
from tests.rpc import RawClient

pytestmark = pytest.mark.e2e


def base_config(tmp: Path, **admin: Any) -> dict[str, Any]:
    return {
        "auth": {
            "enabled": True,
            "data_dir": str(tmp / "keys"),
            "rules": [{"effect": "allow", "roles": ["user", "admin", "probe"]}],
        },
        "storage": {"data_dir": str(tmp / "db")},
        "admin": admin,
        "servers": {"fx": stdio_fixture("crashy")},
    }


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    """Seconds until `predicate()` held (polled every 20 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_backends_registered_changed_and_removed_through_the_api(tmp_path: Path) -> None:
    admin = create_key(tmp_path / "keys", "alice", "admin")
    user = create_key(tmp_path / "keys", "bob", "user")
    gw = start_gateway(base_config(tmp_path, dynamic_registration=True), tmp_path)
    try:
        gw.wait_backend("fx")
        asyncio.run(gw.log_lines("configuration source: the database (version 1)"))
        status, headers, _ = call(gw, "GET", "/admin/v1/backends", admin)
        assert status == 200 and headers["etag"] == '"v1"'
        entry = stdio_fixture("crashy")
        path = "/admin/v1/backends/extra"
        # Validated before anything applies: a bad entry changes nothing.
        bad = call(gw, "PUT", path, admin, {"command": 5}, {"If-Match": '"v1"'})
        assert bad[0] == 422 and "command" in bad[2]["error"]
        assert call(gw, "PUT", path, admin, entry)[0] == 428
        assert call(gw, "PUT", path, user, entry, {"If-Match": '"v1"'})[0] == 403
        status, headers, changed = call(gw, "PUT", path, admin, entry, {"If-Match": '"v1"'})
        assert (status, changed["version"], changed["added"]) == (200, 2, ["extra"])
        assert headers["etag"] == '"v2"'
        # Up at once (it started before the swap); its tools listed once checked against
        # their pins (the pin check runs after the swap).
        assert call(gw, "GET", path, admin)[2]["state"] == "up"

        def listed() -> bool:
            tools = call(gw, "GET", path + "/tools", admin)[2]["items"]
            return "extra_echo" in [t["name"] for t in tools]

        wait_for(listed, 10, "extra's tools listed")
        # A second writer that read version 1 is refused, not merged.
        stale = call(gw, "DELETE", path, admin, headers={"If-Match": '"v1"'})
        assert stale[0] == 412 and '"v2"' in stale[2]["error"]
        changed_entry = {**entry, "env": {"FIXTURE_MARK": "v2"}}
        status, _, changed = call(gw, "PUT", path, admin, changed_entry, {"If-Match": '"v2"'})
        assert (status, changed["replaced"]) == (200, ["extra"])
        status, _, removed = call(gw, "DELETE", path, admin, headers={"If-Match": '"v3"'})
        assert (status, removed["version"], removed["removed"]) == (200, 4, ["extra"])
        assert call(gw, "GET", path, admin)[0] == 404
        status, _, history = call(gw, "GET", "/admin/v1/config/versions", admin)
        assert [(v["version"], v["source"]) for v in history["versions"]] == [
            (4, "api"),
            (3, "api"),
            (2, "api"),
            (1, "seed"),
        ]
        assert history["versions"][0]["author"] == "api_key#alice"
        assert history["versions"][0]["summary"] == "remove backend extra"
        status, _, v3 = call(gw, "GET", "/admin/v1/config/versions/3", admin)
        assert v3["document"]["servers"]["extra"]["env"] == {"FIXTURE_MARK": "[redacted]"}
        # Restart keeps the configuration and brings the backend back.
        status, _, _ = call(
            gw, "POST", "/admin/v1/backends/fx/restart", admin, {}, {"If-Match": '"v4"'}
        )
        assert status == 202
        gw.wait_backend("fx")
    finally:
        gw.stop()


def test_file_mode_refuses_api_writes_and_records_sighup_as_a_version(tmp_path: Path) -> None:
    admin = create_key(tmp_path / "keys", "alice", "admin")
    config = base_config(tmp_path)
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("fx")
        asyncio.run(gw.log_lines("configuration source: the file"))
        refused = call(
            gw, "PUT", "/admin/v1/backends/x", admin, stdio_fixture("crashy"), {"If-Match": '"v1"'}
        )
        assert refused[0] == 409 and "admin.dynamic_registration" in refused[2]["error"]
        config["servers"]["more"] = stdio_fixture("crashy")
        gw.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        gw.process.send_signal(signal.SIGHUP)

        def recorded() -> bool:
            return call(gw, "GET", "/admin/v1/status", admin)[2]["version"] == 2

        wait_for(recorded, 30, "version 2 after SIGHUP")
        _, _, history = call(gw, "GET", "/admin/v1/config/versions", admin)
        assert [(v["version"], v["source"]) for v in history["versions"]] == [
            (2, "sighup"),
            (1, "file"),
        ]
        gw.wait_backend("more")
        # An invalid file is refused; the version stays.
        gw.config_path.write_text("servers: [not, a, mapping]\n")
        gw.process.send_signal(signal.SIGHUP)
        asyncio.run(gw.log_lines("config reload refused"))
        assert call(gw, "GET", "/admin/v1/status", admin)[2]["version"] == 2
    finally:
        gw.stop()


def _version(gw: Gateway, key: str) -> int:
    status, _, body = call(gw, "GET", "/admin/v1/status", key)
    return int(body["version"]) if status == 200 else -1


async def _sql(statement: str) -> None:
    conn = await asyncpg.connect(PG_BASE)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def test_two_gateways_on_postgresql_converge_within_a_second(tmp_path: Path) -> None:
    # A schema of its own (as tests/databases.py makes them), for two processes to share.
    schema = f"sy_admin_{secrets.token_hex(6)}"
    asyncio.run(_sql(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_BASE}?search_path={schema}"
    try:
        admin = create_key(tmp_path / "keys", "alice", "admin")
        config = base_config(tmp_path, dynamic_registration=True)
        config["storage"]["database_url"] = url
        a = start_gateway(config, tmp_path)
        b = start_gateway(config, tmp_path)
        try:
            a.wait_backend("fx")
            b.wait_backend("fx")
            assert _version(a, admin) == _version(b, admin) == 1
            for round_, name in enumerate(("one", "two", "three"), start=2):
                entry = stdio_fixture("crashy")
                status, _, changed = call(
                    a,
                    "PUT",
                    f"/admin/v1/backends/{name}",
                    admin,
                    entry,
                    {"If-Match": f'"v{round_ - 1}"'},
                )
                assert (status, changed["version"]) == (200, round_)
                took = wait_for(
                    lambda n=round_: _version(b, admin) == n, 5.0, f"b at version {round_}"
                )
                assert took < 1.0, f"b took {took:.2f}s to apply version {round_}"
                status, _, row = call(b, "GET", f"/admin/v1/backends/{name}", admin)
                assert status == 200 and row["name"] == name
            # A change made on b reaches a the same way.
            status, _, _ = call(
                b, "DELETE", "/admin/v1/backends/one", admin, headers={"If-Match": '"v4"'}
            )
            assert status == 200
            took = wait_for(lambda: _version(a, admin) == 5, 5.0, "a at version 5")
            assert took < 1.0
            assert call(a, "GET", "/admin/v1/backends/one", admin)[0] == 404
        finally:
            a.stop()
            b.stop()
    finally:
        asyncio.run(_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_no_mcp_request_fails_while_backends_come_and_go_through_the_api(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    admin = create_key(keys, "carol", "admin")
    callers = {"alice": create_key(keys, "alice", "user"), "bob": create_key(keys, "bob", "user")}
    config = base_config(tmp_path, dynamic_registration=True)
    config["servers"]["fx"] = stdio_fixture("crashy", isolation="shared")
    gw = start_gateway(config, tmp_path)
    failures: list[Any] = []
    answered = {"alice": 0, "bob": 0}
    stop = asyncio.Event()

    async def caller(who: str, http: aiohttp.ClientSession) -> None:
        client = await RawClient(
            gw.url, http, extra_headers={"Authorization": f"Bearer {callers[who]}"}
        ).open()
        deadline = time.monotonic() + 90
        for i in range(5000):  # bounded in count and in time
            if stop.is_set() or time.monotonic() > deadline:
                return
            text = f"{who}-{i}"
            resp = await client.request(
                "tools/call", {"name": "fx_echo", "arguments": {"text": text}}, i
            )
            body = resp.json if resp.status == 200 else None
            content = (body or {}).get("result", {}).get("content", [{}])
            if resp.status != 200 or content[0].get("text") != text:
                failures.append((who, resp.status, resp.body[:300]))
            answered[who] += 1

    async def admin_call(method: str, path: str, body: Any, etag: str) -> dict[str, Any]:
        status, _, answer = await asyncio.to_thread(
            call, gw, method, path, admin, body, {"If-Match": etag}
        )
        assert status == 200, answer
        return answer  # type: ignore[no-any-return]

    try:
        gw.wait_backend("fx")
        async with aiohttp.ClientSession() as http:
            load = [asyncio.create_task(caller(who, http)) for who in callers]
            try:
                version = 1
                for round_ in range(3):
                    while sum(answered.values()) < 20 * (round_ + 1):
                        assert not any(t.done() for t in load), [t.exception() for t in load]
                        await asyncio.sleep(0.01)
                    entry = stdio_fixture("crashy")
                    added = await admin_call(
                        "PUT", f"/admin/v1/backends/extra{round_}", entry, f'"v{version}"'
                    )
                    version = added["version"]
                    removed = await admin_call(
                        "DELETE", f"/admin/v1/backends/extra{round_}", None, f'"v{version}"'
                    )
                    version = removed["version"]
                    assert removed["removed"] == [f"extra{round_}"]
                target = sum(answered.values()) + 20
                while sum(answered.values()) < target:
                    assert not any(t.done() for t in load), [t.exception() for t in load]
                    await asyncio.sleep(0.01)
            finally:
                stop.set()
                await asyncio.gather(*load)
        assert failures == []
        assert answered["alice"] > 20 and answered["bob"] > 20
        assert version == 7
    finally:
        gw.stop()
