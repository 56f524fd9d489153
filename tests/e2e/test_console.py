"""The web console in a real browser: Debian's chromium, headless, driven by Playwright, against
a running gateway with a real backend; an admin and a read-only admin signed in at once.
Screenshots of each page are kept with the test logs (console-*.png)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_admin import admin_config, hmac_env  # noqa: F401 (a fixture)
from tests.harness import (
    FIXTURES,
    LOG_DIR,
    PYTHON,
    Proc,
    create_key,
    free_port,
    register_secret,
    start_gateway,
    start_port_fixture,
    stdio_fixture,
)

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        # `make test` installs it; a console never checked in a browser is not a pass.
        pytest.fail("Debian's chromium is not installed (make test installs it with apt)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


NO_REDIRECT = urllib.request.build_opener(NoRedirect)
LOGIN_TOKEN = re.compile(r"name=login_token value='([^']+)'")


def fetch(
    url: str, cookie: str = "", form: dict[str, str] | None = None
) -> tuple[int, dict[str, list[str]], str]:
    """One request as a browser without script makes it, redirects not followed: the status,
    the headers (every `set-cookie` kept) and the body."""
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(form).encode() if form is not None else None,
        headers={"Cookie": cookie} if cookie else {},
    )
    try:
        with NO_REDIRECT.open(request, timeout=15) as resp:
            status, headers, body = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read()
    found: dict[str, list[str]] = {}
    for name, value in headers.items():
        found.setdefault(name.lower(), []).append(value)
    return status, found, body.decode()


def set_cookies(headers: dict[str, list[str]]) -> dict[str, str]:
    """The cookies an answer sets (name -> value; an empty value clears)."""
    out = {}
    for line in headers.get("set-cookie", []):
        name, _, value = line.split(";")[0].partition("=")
        out[name.strip()] = value
    return out


def login_form(base: str) -> tuple[str, str]:
    """The sign-in page's pre-session cookie and the form's login token."""
    status, headers, body = fetch(base + "/admin/console/login")
    assert status == 200, body
    pre = set_cookies(headers)["sy_console_login"]
    found = LOGIN_TOKEN.search(body)
    assert found is not None, body
    return f"sy_console_login={pre}", found.group(1)


def sign_in_over_http(base: str, key: str) -> str:
    """Sign in with an API key as the form does; the session's `Cookie` header."""
    pre, token = login_form(base)
    status, headers, body = fetch(
        base + "/admin/console/login", pre, {"key": key, "login_token": token}
    )
    assert status == 303 and headers["location"] == ["/admin/console/"], (status, body)
    cookies = set_cookies(headers)
    assert cookies["sy_console_login"] == ""  # the pre-session is spent
    return f"sy_console={cookies['sy_console']}"


CONSOLE_CLIENT = "switchyard-console"
SECRET_ENV = "CONSOLE_OAUTH_SECRET"


def start_console_issuer(redirect_uri: str, users: list[dict[str, Any]]) -> tuple[Proc, str, str]:
    """A real authorization server (tests/fixtures/servers/auth_server.py) where the console
    is a confidential client and `users` may sign in: the process, the issuer, the secret."""
    secret = register_secret(f"console-client-{secrets.token_hex(8)}")
    client = {
        "id": CONSOLE_CLIENT,
        "secret": secret,
        "scopes": ["mcp:read"],
        "redirect_uris": [redirect_uri],
    }
    args = [PYTHON, str(FIXTURES / "auth_server.py"), "--port", "0", "--client", json.dumps(client)]
    for user in users:
        args += ["--user", json.dumps(user)]
    proc, port = start_port_fixture(args, "console-issuer")
    return proc, f"http://127.0.0.1:{port}", secret


def with_console_issuer(config: dict[str, Any], issuer: str) -> None:
    """`config` trusting `issuer` for /mcp and offering console sign-in with it (the client
    secret in $CONSOLE_OAUTH_SECRET)."""
    config["auth"]["issuers"] = [
        {"issuer": issuer, "jwks_uri": issuer + "/jwks", "algorithms": ["RS256"]}
    ]
    config["auth"]["rules"].append({"effect": "allow", "issuers": [issuer]})
    config["admin"] = {
        "console_oauth": {
            "client_id": CONSOLE_CLIENT,
            "client_secret_env": SECRET_ENV,
            "scopes": ["mcp:read"],
        }
    }


def _shot(page: Any, name: str) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(LOG_DIR / f"console-{name}.png"), full_page=True)


def _sign_in(browser: Any, base: str, key: str) -> tuple[Any, list[str]]:
    context = browser.new_context()
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Security Policy" in m.text else None)
    page.goto(base + "/admin/console/")
    assert page.url.endswith("/admin/console/login")
    # The form carries its login token, bound to the pre-session cookie set with the page.
    assert len(page.input_value("input[name=login_token]")) == 43
    assert [c["name"] for c in context.cookies()] == ["sy_console_login"]
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/admin/console/")
    return page, violations


@pytest.mark.timeout(300)
def test_console_in_chromium_with_an_admin_and_a_read_only_admin(
    tmp_path: Path,
    browser: Any,
    hmac_env: None,  # noqa: F811
) -> None:
    data = tmp_path / "keys"
    admin_key = create_key(data, "alice", "admin")
    reader_key = create_key(data, "rita", "admin-read")
    user_key = create_key(data, "bob", "user")
    gw = start_gateway(admin_config(tmp_path, dynamic_registration=True), tmp_path)
    try:
        gw.wait_backend("fx")
        base = gw.base
        # A plain user cannot sign in.
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/admin/console/login")
        page.fill("input[name=key]", user_key)
        page.click("button[type=submit]")
        assert "the admin API needs an admin role or scope" in page.inner_text("main")
        context.close()

        admin, admin_csp = _sign_in(browser, base, admin_key)
        reader, reader_csp = _sign_in(browser, base, reader_key)
        assert "fx" in admin.inner_text("table") and "up" in admin.inner_text("table")
        # Register a backend from the console; its tools show once it is up and checked.
        admin.fill("input[type=text][name=name]", "more")
        admin.fill("textarea[name=entry]", json.dumps(stdio_fixture("crashy")))
        admin.click("button:has-text('Register')")
        assert "Version 2 applied." in admin.inner_text("main")
        for _ in range(100):
            row = admin.locator("tr", has_text="more").inner_text().split("\t")
            if row[1:2] == ["up"] and row[3:4] not in (["0"], [""]):
                break
            admin.wait_for_timeout(100)
            admin.goto(base + "/admin/console/")
        assert row[:2] == ["more", "up"] and int(row[3]) > 0, row
        _shot(admin, "overview")
        reader.goto(base + "/admin/console/")
        reader.fill("input[type=text][name=name]", "evil")
        reader.fill("textarea[name=entry]", json.dumps(stdio_fixture("crashy")))
        reader.click("button:has-text('Register')")
        assert "403: read-only: this change needs an admin role" in reader.inner_text("main")
        assert "evil" not in reader.inner_text("table")

        admin.goto(base + "/admin/console/keys")
        admin.fill("input[name=principal]", "carol")
        admin.fill("input[name=roles]", "user")
        admin.click("text=Create")
        created = register_secret(admin.inner_text("#new-key"))
        assert created.startswith("sy_")
        # The read-only admin sees the new key's record, never the key, and cannot create one.
        reader.goto(base + "/admin/console/keys")
        assert "carol" in reader.inner_text("table")
        assert created not in reader.content()
        reader.fill("input[name=principal]", "mallory")
        reader.click("text=Create")
        assert "403: read-only: this change needs an admin role" in reader.inner_text("main")
        assert "mallory" not in reader.inner_text("table")
        # The admin revokes it; the page's ETag goes with the form.
        admin.goto(base + "/admin/console/keys")
        row = admin.locator("tr", has_text="carol")
        row.locator("text=Revoke").click()
        assert "Revoked" in admin.inner_text("main")
        assert "revoked" in admin.locator("tr", has_text="carol").inner_text()
        _shot(admin, "keys")  # after the revocation: the page no longer shows the key

        admin.goto(base + "/admin/console/access")
        admin.fill("input[name=principal]", "bob")
        admin.fill("input[name=roles]", "user")
        admin.fill("input[name=tool]", "fx_echo")
        admin.click("text=Simulate")
        assert admin.inner_text("#decision") == (
            "api_key#bob may not call fx_echo: denied by access rule 1 (deny)"
        )
        _shot(admin, "access")

        # The playground: a form from the tool's input schema, called as the signed-in admin.
        admin.goto(base + "/admin/console/playground")
        admin.click("a:text-is('fx_echo')")
        admin.fill("input[name='arg.text']", "hello from the console")
        admin.click("button:has-text('Call')")
        result = json.loads(admin.inner_text("#result"))
        assert result["content"][0]["text"] == "hello from the console"
        assert "ms)" in admin.inner_text("h2")
        _shot(admin, "playground")

        admin.goto(base + "/admin/console/pins")
        assert "Nothing waits for review." in admin.inner_text("main")
        _shot(admin, "pins")

        admin.goto(base + "/admin/console/audit?event=admin")
        text = admin.inner_text("table")
        deadline_reload = 0
        while "revokeKey" not in text and deadline_reload < 50:
            admin.wait_for_timeout(100)
            admin.reload()
            text = admin.inner_text("table")
            deadline_reload += 1
        assert "createKey" in text and "revokeKey" in text and "api_key#alice" in text
        assert "putBackend" in text  # the backend registered from the overview
        # The playground's call is a decision like any other, under the signed-in admin.
        admin.goto(base + "/admin/console/audit?event=decision&principal=api_key%23alice")
        row = admin.locator("tr", has_text="fx_echo").first.inner_text().split("\t")
        assert row[1:] == ["decision", "api_key#alice", "tools/call", "allow ok", "fx_echo"], row
        admin.goto(base + "/admin/console/audit?event=admin")
        _shot(admin, "audit")
        assert created not in admin.content()

        # A form posted without the session's CSRF token is refused, cookie or not.
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in admin.context.cookies())
        request = urllib.request.Request(
            base + "/admin/console/keys",
            data=b"principal=eve&roles=admin&csrf=forged",
            method="POST",
            headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        csp = refused.value.headers["content-security-policy"]
        assert csp.startswith("default-src 'none'") and "script-src" not in csp
        reader.goto(base + "/admin/console/keys")
        assert "eve" not in reader.inner_text("table")
        assert admin_csp == [] and reader_csp == []
    finally:
        gw.stop()


@pytest.mark.timeout(300)
def test_console_approves_a_waiting_call(
    tmp_path: Path,
    browser: Any,
    hmac_env: None,  # noqa: F811
) -> None:
    from tests.e2e.test_admin import call
    from tests.harness import keys_cli

    data = tmp_path / "keys"
    alice = keys_cli(
        "create", "--principal", "alice", "--role", "admin", "--role", "approver",
        "--data-dir", str(data),
    )  # fmt: skip
    bob = create_key(data, "bob", "user")
    config = admin_config(tmp_path)
    config["approvals"] = {
        "enabled": True,
        "secret": register_secret("console-approval-secret-" + str(time.monotonic_ns())),
        "rules": [{"name": "floods", "tools": ["flood"], "approver": "approver"}],
    }
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("fx")
        proposed = {
            "name": "fx_flood",
            "arguments": {"count": 0, "size": 0, "done_file": str(tmp_path / "done")},
        }
        status, _, waiting = call(gw, "POST", "/v1/tools/call", bob, proposed)
        assert status == 202 and waiting["status"] == "approval_required"
        ticket = waiting["approval"]["id"]
        page, violations = _sign_in(browser, gw.base, alice)
        page.goto(gw.base + "/admin/console/approvals")
        row = page.locator("tr", has_text=ticket)
        assert "api_key#bob" in row.inner_text() and "fx_flood" in row.inner_text()
        _shot(page, "approvals")
        row.locator("button[value=approve]").click()
        assert f"{ticket}: approved." in page.inner_text("main")
        assert "No call waits for a decision." in page.inner_text("main")
        status, _, done = call(gw, "POST", "/v1/tools/call", bob, proposed)
        assert status == 200 and done["status"] == "completed"
        assert done["result"]["content"][0]["text"] == "flooded 0"
        # The approval is in the audit trail, under the caller whose call it was.
        for _ in range(100):
            page.goto(gw.base + "/admin/console/audit?event=approval")
            if "approved" in page.inner_text("main"):
                break
            page.wait_for_timeout(100)
        row = page.locator("tr", has_text="approved").first.inner_text().split("\t")
        assert row[1:4] == ["approval", "api_key#bob", "approved"], row
        assert violations == []
    finally:
        gw.stop()


@pytest.mark.timeout(300)
def test_console_reviews_and_approves_a_drifted_pin(
    tmp_path: Path,
    browser: Any,
    hmac_env: None,  # noqa: F811
) -> None:
    from tests.e2e.test_admin import HMAC_ENV
    from tests.e2e.test_pins import LISTER, REPORT, _gateway, _write

    data = tmp_path / "keys"
    admin = create_key(data, "alice", "admin")
    auth = {
        "enabled": True,
        "data_dir": str(data),
        "rules": [{"effect": "allow", "roles": ["admin", "probe"]}],
    }
    audit = {"enabled": True, "hmac_key": "${" + HMAC_ENV + "}", "keys_dir": str(tmp_path / "ak")}
    with _gateway(tmp_path, [REPORT, LISTER], {}, auth, audit) as (gw, defs):
        _write(defs, [dict(REPORT, annotations={"destructiveHint": True}), LISTER])
        page, violations = _sign_in(browser, gw.base, admin)
        for _ in range(150):
            page.goto(gw.base + "/admin/console/pins")
            if "files/tool/send_report" in page.inner_text("main"):
                break
            page.wait_for_timeout(100)
        text = page.inner_text("main")
        assert "files/tool/send_report" in text and "destructiveHint false -> true" in text
        _shot(page, "pin-diff")
        page.goto(gw.base + "/admin/console/playground")
        assert "files_send_report" not in page.inner_text("main")  # held back until approved
        page.goto(gw.base + "/admin/console/pins")
        page.click("button:has-text('Approve')")
        assert "files/tool/send_report: done." in page.inner_text("main")
        assert "Nothing waits for review." in page.inner_text("main")
        for _ in range(150):
            page.goto(gw.base + "/admin/console/playground")
            if "files_send_report" in page.inner_text("main"):
                break
            page.wait_for_timeout(100)
        assert "files_send_report" in page.inner_text("main")
        # The decision is in the audit trail: the pin event, and the admin operation.
        for _ in range(100):
            page.goto(gw.base + "/admin/console/audit?event=pin")
            if "files/tool/send_report" in page.inner_text("main"):
                break
            page.wait_for_timeout(100)
        actions = [row.split("\t")[3:6] for row in page.locator("tr").all_inner_texts()[1:]]
        assert ["approved", "", "files/tool/send_report"] in actions, actions
        assert violations == []


@pytest.mark.timeout(300)
def test_console_pages_stay_small_and_fast_with_5000_tools(tmp_path: Path) -> None:
    from tests.e2e.test_pins import _gateway

    tools = [
        {
            "name": f"tool_{i:04d}",
            "description": f"Tool number {i}.",
            "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}},
        }
        for i in range(5000)
    ]
    data = tmp_path / "keys"
    admin = create_key(data, "alice", "admin")
    auth = {
        "enabled": True,
        "data_dir": str(data),
        "rules": [{"effect": "allow", "roles": ["admin", "probe"]}],
    }
    with _gateway(tmp_path, tools, {"mode": "off"}, auth) as (gw, _):
        cookie = sign_in_over_http(gw.base, admin)
        pages = [
            "/",
            "/catalog",
            "/catalog?kind=tool&q=tool_49",
            "/keys",
            "/access?principal=alice&roles=admin&tool=files_tool_0001",
            "/pins",
            "/audit",
            "/approvals",
            "/playground",
            "/playground?tool=files_tool_4999",
        ]
        for path in pages:
            best, size = 10.0, 0
            for _ in range(3):  # the best of three: the machine is shared
                request = urllib.request.Request(
                    gw.base + "/admin/console" + path, headers={"Cookie": cookie}
                )
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=10) as resp:
                    body = resp.read()
                best = min(best, time.perf_counter() - started)
                size = len(body)
            if path.startswith("/playground"):
                assert b"<p>5000 tools</p>" in body and b"4800 more" in body
            if path == "/catalog":
                assert b"<p>5000 items</p>" in body and b"4800 more" in body
            print(f"{path}: {size} bytes, {best * 1000:.1f} ms")
            assert size < 150 * 1024, (path, size)
            assert best < 0.100, (path, best)


@pytest.mark.timeout(300)
def test_console_sign_in_with_the_oauth_issuer_in_chromium(
    tmp_path: Path,
    browser: Any,
    hmac_env: None,  # noqa: F811
) -> None:
    """The browser's part of the OAuth sign-in: the button's redirect to the issuer passes the
    page's CSP, the pre-session cookie comes back with the issuer's redirect, and the session
    cookie (SameSite=Strict) is in use on the page the console moves on to."""
    port = free_port()
    users = [{"sub": "olivia", "roles": ["admin"]}]
    callback = f"http://127.0.0.1:{port}/admin/console/oauth/callback"
    issuer_proc, issuer, secret = start_console_issuer(callback, users)
    config = admin_config(tmp_path)
    with_console_issuer(config, issuer)
    os.environ[SECRET_ENV] = secret
    try:
        gw = start_gateway(config, tmp_path, port=port)
        try:
            context = browser.new_context()
            page = context.new_page()
            violations: list[str] = []
            page.on(
                "console",
                lambda m: violations.append(m.text) if "Security Policy" in m.text else None,
            )
            page.goto(gw.base + "/admin/console/")
            assert page.url.endswith("/admin/console/login")
            page.click("#oauth")
            page.wait_for_url(issuer + "/authorize?*")
            page.click("a:text-is('olivia')")  # the issuer's sign-in page
            page.wait_for_url(gw.base + "/admin/console/")
            assert "Sign out olivia" in page.inner_text("nav")
            assert "fx" in page.inner_text("table")
            names = {c["name"]: c for c in context.cookies()}
            assert names["sy_console"]["sameSite"] == "Strict" and names["sy_console"]["httpOnly"]
            assert "sy_console_login" not in names
            page.click("button:has-text('Sign out olivia')")
            page.wait_for_url(gw.base + "/admin/console/login")
            page.goto(gw.base + "/admin/console/keys")
            assert page.url.endswith("/admin/console/login")
            assert violations == []
        finally:
            gw.stop()
    finally:
        os.environ.pop(SECRET_ENV, None)
        issuer_proc.stop()
