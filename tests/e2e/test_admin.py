"""The admin plane end to end: a real gateway with a real backend, API keys of three kinds of
caller (admin, read-only admin, plain user) used side by side, its OpenAPI document validated
and the API exercised from it by schemathesis."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.harness import (
    BIN,
    Gateway,
    create_key,
    free_port,
    register_secret,
    start_gateway,
    stdio_fixture,
)

pytestmark = pytest.mark.e2e

HMAC_ENV = "SWITCHYARD_ADMIN_TEST_HMAC"


def call(
    gw: Gateway | str,
    method: str,
    path: str,
    key: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    base = gw if isinstance(gw, str) else gw.base
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw, status, got = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, dict(exc.headers)
    text = raw.decode()
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return status, {k.lower(): v for k, v in got.items()}, parsed


def admin_config(tmp: Path, **admin: Any) -> dict[str, Any]:
    return {
        "auth": {
            "enabled": True,
            "data_dir": str(tmp / "keys"),
            "rules": [
                {"effect": "allow", "roles": ["user", "admin", "probe"]},
                {"effect": "deny", "principals": ["bob"], "names": ["echo"]},
            ],
        },
        "storage": {"data_dir": str(tmp / "db")},
        "audit": {
            "enabled": True,
            "hmac_key": "${" + HMAC_ENV + "}",
            "keys_dir": str(tmp / "audit-keys"),
            "checkpoint_every": 5,
        },
        "admin": admin,
        "servers": {"fx": stdio_fixture("crashy")},
    }


@pytest.fixture(scope="module")
def hmac_env() -> Iterator[None]:
    os.environ[HMAC_ENV] = register_secret(f"admin-hmac-{time.monotonic_ns()}-0123456789")
    try:
        yield
    finally:
        os.environ.pop(HMAC_ENV, None)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, hmac_env: None) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("admin")
    data = tmp / "keys"
    keys = {
        "admin": create_key(data, "alice", "admin"),
        "reader": create_key(data, "rita", "admin-read"),
        "user": create_key(data, "bob", "user"),
    }
    gw = start_gateway(admin_config(tmp, dynamic_registration=True), tmp)
    try:
        gw.wait_backend("fx")
        yield {"gw": gw, "keys": keys, "tmp": tmp}
    finally:
        gw.stop()


def _concrete(path: str) -> str:
    return path.replace("{", "x").replace("}", "")


def test_every_admin_operation_refuses_a_plain_user_and_no_credential_exactly(
    plane: dict[str, Any],
) -> None:
    gw, keys = plane["gw"], plane["keys"]
    status, _, doc = call(gw, "GET", "/admin/v1/openapi.json", keys["reader"])
    assert status == 200
    checked = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            access = op["x-switchyard-access"]
            if access == "caller":
                continue
            url = _concrete(path)
            body = {} if "requestBody" in op else None
            status, headers, answer = call(gw, method.upper(), url, keys["user"], body)
            assert (status, answer) == (
                403,
                {"error": "the admin API needs an admin role or scope"},
            )
            status, headers, answer = call(gw, method.upper(), url, None, body)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer")
            if access == "write":
                status, _, answer = call(gw, method.upper(), url, keys["reader"], body)
                assert (status, answer) == (
                    403,
                    {"error": "read-only: this change needs an admin role"},
                )
            checked += 1
    assert checked >= 25


def test_admin_and_read_only_at_once_keys_never_leak(plane: dict[str, Any]) -> None:
    gw, keys = plane["gw"], plane["keys"]
    status, headers, _ = call(gw, "GET", "/admin/v1/keys", keys["admin"])
    assert status == 200
    etag = headers["etag"]
    # Without If-Match: 428; with a stale one: 412; nothing is created either way.
    body = {"principal": "carol", "roles": ["user"]}
    assert call(gw, "POST", "/admin/v1/keys", keys["admin"], body)[0] == 428
    stale = call(gw, "POST", "/admin/v1/keys", keys["admin"], body, {"If-Match": '"k-0"'})
    assert stale[0] == 412

    def create() -> tuple[int, dict[str, str], Any]:
        return call(gw, "POST", "/admin/v1/keys", keys["admin"], body, {"If-Match": etag})

    def read() -> list[tuple[int, dict[str, str], Any]]:
        return [call(gw, "GET", "/admin/v1/keys", keys["reader"]) for _ in range(10)]

    with ThreadPoolExecutor(2) as pool:
        created_f, reads_f = pool.submit(create), pool.submit(read)
        created, reads = created_f.result(), reads_f.result()
    status, _, made = created
    assert status == 201 and made["principal"] == "carol" and made["roles"] == ["user"]
    plaintext = register_secret(made["key"])
    assert plaintext.startswith("sy_" + made["prefix"])
    for status, _, page in [*reads, call(gw, "GET", "/admin/v1/keys", keys["reader"])]:
        assert status == 200
        assert plaintext not in json.dumps(page)
        assert all(set(k) >= {"prefix", "principal"} and "key" not in k for k in page["keys"])
    # The new key works at once, and the plain user learns nothing about keys.
    assert call(gw, "GET", "/admin/v1/keys", plaintext)[0] == 403
    assert call(gw, "GET", "/admin/v1/keys", keys["user"])[0] == 403
    # Revoke with the key's ETag; the key stops authenticating.
    status, headers, one = call(gw, "GET", f"/admin/v1/keys/{made['prefix']}", keys["reader"])
    assert status == 200 and one["revoked"] is False
    assert call(gw, "DELETE", f"/admin/v1/keys/{made['prefix']}", keys["reader"])[0] == 403
    status, _, revoked = call(
        gw,
        "DELETE",
        f"/admin/v1/keys/{made['prefix']}",
        keys["admin"],
        headers={"If-Match": headers["etag"]},
    )
    assert status == 200 and revoked["revoked"] is True
    assert call(gw, "GET", "/admin/v1/keys", plaintext)[0] == 401
    # Both writes (and the refused attempts) are in the audit trail, without the key.
    records = _audit(gw, keys["reader"], "admin")
    actions = [(r["action"], r["principal"], r["outcome"]) for r in records]
    assert ("createKey", "api_key#alice", 201) in actions
    assert ("revokeKey", "api_key#alice", 200) in actions
    assert ("createKey", "api_key#alice", 428) in actions
    assert ("createKey", "api_key#alice", 412) in actions
    assert plaintext not in json.dumps(records)


def _audit(gw: Gateway, key: str, event: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The audit records of one kind, once the writer flushed the last write's."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found, after = [], 0
        for _ in range(100):
            query = f"/admin/v1/audit/records?event={event}&limit=50&after={after}"
            status, _, page = call(gw, "GET", query, key)
            assert status == 200
            found += page["records"]
            if page["next"] is None:
                break
            after = page["next"]
        if any((r.get("action"), r.get("outcome")) == ("revokeKey", 200) for r in found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"no audit record of the revocation: {found}")


def test_effective_permissions_name_the_deciding_rule(plane: dict[str, Any]) -> None:
    gw, keys = plane["gw"], plane["keys"]
    status, _, bob = call(
        gw, "GET", "/admin/v1/permissions?principal=bob&roles=user&tool=fx_echo", keys["reader"]
    )
    assert status == 200
    assert bob["decision"] == {
        "tool": "fx_echo",
        "backend": "fx",
        "allowed": False,
        "rule": 1,
        "reason": "denied by access rule 1 (deny)",
    }
    assert "echo" not in [t["tool"] for t in bob["tools"]] and bob["tools"]
    _, _, alice = call(
        gw, "GET", "/admin/v1/permissions?principal=alice&roles=user&tool=fx_echo", keys["reader"]
    )
    assert alice["decision"]["allowed"] is True and alice["decision"]["rule"] == 0
    assert "echo" in [t["tool"] for t in alice["tools"]]
    _, _, nobody = call(
        gw, "GET", "/admin/v1/permissions?principal=eve&tool=fx_echo", keys["reader"]
    )
    assert nobody["tools"] == []
    assert nobody["decision"]["reason"] == "no rule matches: denied by default"


def test_backends_and_their_tools(plane: dict[str, Any]) -> None:
    gw, keys = plane["gw"], plane["keys"]
    status, headers, listed = call(gw, "GET", "/admin/v1/backends", keys["reader"])
    assert status == 200 and headers["etag"].startswith('"v')
    [fx] = listed["backends"]
    assert fx["name"] == "fx" and fx["state"] == "up" and fx["tools"] > 0
    status, _, tools = call(gw, "GET", "/admin/v1/backends/fx/tools", keys["reader"])
    assert status == 200 and "fx_echo" in [t["name"] for t in tools["items"]]
    assert call(gw, "GET", "/admin/v1/backends/nope", keys["reader"])[0] == 404


def test_openapi_document_validates(plane: dict[str, Any]) -> None:
    status, _, doc = call(plane["gw"], "GET", "/admin/v1/openapi.json", plane["keys"]["admin"])
    assert status == 200 and doc["openapi"] == "3.1.0"
    validate(doc)
    assert "/admin/v1/approvals/{id}/approve" in doc["paths"]
    assert "/v1/tools" in doc["paths"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("who", ["admin", "reader"])
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(
    tmp_path: Path, hmac_env: None, who: str
) -> None:
    data = tmp_path / "keys"
    key = create_key(
        data, "alice" if who == "admin" else "rita", "admin" if who == "admin" else "admin-read"
    )
    gw = start_gateway(admin_config(tmp_path, dynamic_registration=True), tmp_path)
    try:
        gw.wait_backend("fx")
        status, _, doc = call(gw, "GET", "/admin/v1/openapi.json", key)
        assert status == 200
        spec = tmp_path / "openapi.json"
        spec.write_text(json.dumps(doc))
        run = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "run",
                str(spec),
                "--url",
                gw.base,
                "-H",
                f"Authorization: Bearer {key}",
                "--max-examples",
                "8",
                "--seed",
                "11",
                "--phases",
                "examples,coverage,fuzzing",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,"
                "content_type_conformance",
            ],
            capture_output=True,
            text=True,
            timeout=540,
            cwd=tmp_path,  # its example database lands there, not in the work tree
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert " passed" in run.stdout
        # The backend still runs: no generated request removed or broke it.
        assert call(gw, "GET", "/admin/v1/backends/fx", key)[2]["state"] == "up"
    finally:
        gw.stop()


def test_without_authentication_the_admin_api_is_refused_unless_local_is_allowed(
    tmp_path: Path,
) -> None:
    base = {
        "storage": {"data_dir": str(tmp_path / "db")},
        "servers": {"fx": stdio_fixture("crashy")},
    }
    gw = start_gateway(base, tmp_path)
    try:
        status, _, answer = call(gw, "GET", "/admin/v1/status")
        assert status == 403
        assert answer == {
            "error": "the admin API needs authentication (auth.enabled), or "
            "admin.local_unauthenticated for callers on this machine"
        }
    finally:
        gw.stop()
    gw = start_gateway({**base, "admin": {"local_unauthenticated": True}}, tmp_path)
    try:
        status, _, answer = call(gw, "GET", "/admin/v1/status")
        assert status == 200 and answer["source"] == "file" and answer["version"] >= 1
    finally:
        gw.stop()


def test_own_listener_serves_the_admin_api_and_the_mcp_port_does_not(
    tmp_path: Path, hmac_env: None
) -> None:
    key = create_key(tmp_path / "keys", "alice", "admin")
    admin_port = free_port()
    gw = start_gateway(admin_config(tmp_path, listen=f"127.0.0.1:{admin_port}"), tmp_path)
    try:
        admin = f"http://127.0.0.1:{admin_port}"
        status, _, answer = call(admin, "GET", "/admin/v1/status", key)
        assert status == 200 and answer["ready"] is True
        assert call(gw, "GET", "/admin/v1/status", key)[0] == 404
        assert call(admin, "GET", "/mcp", key)[0] == 404
        # Applications keep their REST on the MCP port.
        status, _, tools = call(gw, "GET", "/v1/tools", key)
        assert status == 200 and tools["tools"]
    finally:
        gw.stop()


def test_a_drifted_pin_is_reviewed_and_approved_through_the_api(tmp_path: Path) -> None:
    from tests.e2e.test_pins import LISTER, REPORT, _gateway, _write

    data = tmp_path / "keys"
    admin, reader = create_key(data, "alice", "admin"), create_key(data, "rita", "admin-read")
    auth = {
        "enabled": True,
        "data_dir": str(data),
        "rules": [{"effect": "allow", "roles": ["admin", "probe"]}],
    }
    with _gateway(tmp_path, [REPORT, LISTER], {}, auth) as (gw, defs):
        drifted = dict(REPORT, annotations={"destructiveHint": True})
        _write(defs, [drifted, LISTER])
        key = "/admin/v1/pins/files/tool/send_report"

        def tools() -> list[str]:
            page = call(gw, "GET", "/admin/v1/backends/files/tools", reader)[2]
            return sorted(t["name"] for t in page["items"])

        deadline = time.monotonic() + 15
        while tools() != ["files_list_reports"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tools() == ["files_list_reports"]
        status, _, pending = call(gw, "GET", "/admin/v1/pins?state=pending", reader)
        assert status == 200 and [p["key"] for p in pending["pins"]] == ["files/tool/send_report"]
        status, headers, pin = call(gw, "GET", key, reader)
        assert status == 200 and headers["etag"] == f'"{pin["candidate"]}"'
        assert {
            "category": "annotations",
            "summary": "destructiveHint false -> true",
            "detail": [],
        } in pin["changes"]
        assert (
            call(gw, "POST", key + "/approve", reader, headers={"If-Match": headers["etag"]})[0]
            == 403
        )
        assert call(gw, "POST", key + "/approve", admin, headers={"If-Match": '"0000"'})[0] == 412
        status, _, approved = call(
            gw, "POST", key + "/approve", admin, headers={"If-Match": headers["etag"]}
        )
        assert status == 200 and approved["state"] == "pinned"
        assert approved["approved_by"] == "api_key#alice"
        deadline = time.monotonic() + 15
        while len(tools()) != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tools() == ["files_list_reports", "files_send_report"]


def admin_cli(gw: Gateway, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "switchyard"), "admin", "--url", gw.base, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SWITCHYARD_API_KEY": key},
    )


def test_every_json_operation_is_a_cli_subcommand_and_they_work(plane: dict[str, Any]) -> None:
    from switchyard.admin.commands import command_name
    from switchyard.admin.table import ROUTES

    gw, keys = plane["gw"], plane["keys"]
    usage = admin_cli(gw, keys["reader"], "--help").stdout
    for op in ROUTES.operations:
        if op.media == "application/json":
            assert command_name(op) in usage
    listed = admin_cli(gw, keys["reader"], "list-backends")
    assert listed.returncode == 0, listed.stderr
    assert [b["name"] for b in json.loads(listed.stdout)["backends"]] == ["fx"]
    decided = admin_cli(
        gw, keys["reader"], "simulate-permissions", "--principal", "bob", "--roles", "user",
        "--tool", "fx_echo",
    )  # fmt: skip
    assert json.loads(decided.stdout)["decision"]["rule"] == 1
    # A write reads the ETag it needs, then changes; a read-only key is refused (exit 1).
    refused = admin_cli(gw, keys["reader"], "create-key", "--body", '{"principal": "dave"}')
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "switchyard admin: 403: read-only: this change needs an admin role"
    )
    made = admin_cli(gw, keys["admin"], "create-key", "--body", '{"principal": "dave"}')
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    register_secret(record["key"])
    revoked = admin_cli(gw, keys["admin"], "revoke-key", record["prefix"])
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked"] is True
    gone = admin_cli(gw, keys["admin"], "get-key", "nosuchkey")
    assert (gone.returncode, gone.stderr.strip()) == (1, "switchyard admin: 404: no key nosuchkey")


def test_tokens_are_authorised_by_scope_and_an_mcp_only_token_is_refused_everywhere(
    tmp_path: Path,
) -> None:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        signer.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    issuer = "https://idp.example"
    port = free_port()
    config = {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(tmp_path / "keys"),
            "issuers": [{"issuer": issuer, "static_keys": [pem], "algorithms": ["RS256"]}],
            "rules": [{"effect": "allow", "roles": ["probe"]}],
        },
        "storage": {"data_dir": str(tmp_path / "db")},
        "servers": {"fx": stdio_fixture("crashy")},
    }

    def token(sub: str, scope: str) -> str:
        claims = {
            "iss": issuer,
            "sub": sub,
            "aud": f"http://127.0.0.1:{port}/mcp",
            "exp": int(time.time()) + 600,
            "scope": scope,
        }
        return register_secret(jwt.encode(claims, signer, algorithm="RS256"))

    mcp_only, reader, admin = (
        token("mia", "mcp:call"),
        token("rex", "switchyard:admin.read"),
        token("ada", "switchyard:admin"),
    )
    gw = start_gateway(config, tmp_path, port=port)
    try:
        _, _, doc = call(gw, "GET", "/admin/v1/openapi.json", reader)
        for path, item in doc["paths"].items():
            for method, op in item.items():
                if op["x-switchyard-access"] == "caller":
                    continue
                body = {} if "requestBody" in op else None
                status, _, answer = call(gw, method.upper(), _concrete(path), mcp_only, body)
                assert (status, answer) == (
                    403,
                    {"error": "the admin API needs an admin role or scope"},
                ), (method, path)
        assert call(gw, "GET", "/admin/v1/status", reader)[0] == 200
        status, headers, _ = call(gw, "GET", "/admin/v1/keys", reader)
        create = {"principal": "zed"}
        refused = call(gw, "POST", "/admin/v1/keys", reader, create, {"If-Match": headers["etag"]})
        assert refused[:1] == (403,)
        status, _, made = call(
            gw, "POST", "/admin/v1/keys", admin, create, {"If-Match": headers["etag"]}
        )
        assert status == 201 and made["principal"] == "zed"
        register_secret(made["key"])
    finally:
        gw.stop()
