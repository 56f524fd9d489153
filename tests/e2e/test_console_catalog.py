"""The catalog and the audit feed: the admin API's `/admin/v1/catalog` (every item served, its
pin state and the access rules that name it) and `order=newest` audit queries, and the console
pages built on them — in Debian's chromium, an admin and a read-only admin signed in at once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_admin import admin_config, call, hmac_env  # noqa: F401 (a fixture)
from tests.e2e.test_console import _shot, _sign_in, browser  # noqa: F401 (a fixture)
from tests.harness import create_key, start_gateway

pytestmark = pytest.mark.e2e

ECHO_RULES = [
    {
        "rule": 0,
        "effect": "allow",
        "principals": None,
        "roles": ["user", "admin", "probe"],
        "issuers": None,
    },
    {"rule": 1, "effect": "deny", "principals": ["bob"], "roles": None, "issuers": None},
]


@pytest.mark.timeout(300)
def test_catalog_and_audit_feed_through_the_api_and_in_chromium(
    tmp_path: Path,
    browser: Any,  # noqa: F811
    hmac_env: None,  # noqa: F811
) -> None:
    data = tmp_path / "keys"
    admin = create_key(data, "alice", "admin")
    reader = create_key(data, "rita", "admin-read")
    user = create_key(data, "bob", "user")
    config = admin_config(tmp_path)
    config["pinning"] = {"mode": "tofu"}
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("fx")
        # The API: the item, its pin (trusted on first use) and the two rules that name it.
        status, _, body = call(gw, "GET", "/admin/v1/catalog?kind=tool&q=echo", admin)
        assert status == 200, body
        assert body["total"] == 1 and body["pinning"] and body["access_rules"]
        assert body["items"] == [
            {
                "kind": "tool",
                "name": "fx_echo",
                "backend": "fx",
                "original": "echo",
                "pin": "pinned",
                "rules": ECHO_RULES,
            }
        ]
        status, _, everything = call(gw, "GET", "/admin/v1/catalog?limit=2", reader)
        assert status == 200 and len(everything["items"]) == 2 and everything["total"] > 2
        assert call(gw, "GET", "/admin/v1/catalog", user)[0] == 403
        assert call(gw, "GET", "/admin/v1/catalog?kind=widget", admin)[0] == 400

        # Two callers leave records; the feed is newest first, filtered by principal.
        for key in (user, admin):
            call(gw, "POST", "/v1/tools/call", key, {"name": "fx_echo", "arguments": {"text": "x"}})
        deadline = time.monotonic() + 10
        feed: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            status, _, found = call(
                gw, "GET", "/admin/v1/audit/records?order=newest&limit=5&method=tools/call", admin
            )
            feed = found["records"]
            if len(feed) >= 2:
                break
            time.sleep(0.1)
        assert [r["principal"] for r in feed[:2]] == ["api_key#alice", "api_key#bob"]
        # The overview's figures: bob's call was refused (denied), alice's answered.
        status, _, fx = call(gw, "GET", "/admin/v1/backends/fx", reader)
        assert status == 200 and (fx["requests"], fx["errors"]) == (2, 1), fx
        status, _, replica = call(gw, "GET", "/admin/v1/status", reader)
        assert (replica["sessions"], replica["in_flight"]) == (0, 0), replica
        assert feed[0]["id"] > feed[1]["id"]
        _, _, older = call(
            gw,
            "GET",
            f"/admin/v1/audit/records?order=newest&before={feed[0]['id']}&method=tools/call",
            admin,
        )
        assert older["records"][0]["id"] == feed[1]["id"]

        # The console: both admins see the catalog; the row says who may use the tool.
        page, violations = _sign_in(browser, gw.base, admin)
        second, second_violations = _sign_in(browser, gw.base, reader)
        for p in (page, second):
            p.goto(gw.base + "/admin/console/catalog?kind=tool&q=echo")
            row = p.locator("tr", has_text="fx_echo").inner_text().split("\t")
            assert row[:5] == ["tool", "fx_echo", "fx", "echo", "pinned"], row
            assert "rule 0: allow roles user, admin, probe" in row[5]
            assert "rule 1: deny principals bob" in row[5]
        _shot(page, "catalog")
        page.goto(gw.base + "/admin/console/")
        assert "Clients: 0 open sessions, 0 requests in flight" in page.inner_text("main")
        row = page.locator("tr", has_text="fx").first.inner_text().split("\t")
        assert row[:2] == ["fx", "up"] and row[4:6] == ["2", "1 (50.0 %)"], row

        # The audit page follows the trail without a script: a new record shows by itself.
        page.goto(gw.base + "/admin/console/audit?principal=api_key%23bob&follow=1")
        assert "reloaded every 5 s" in page.inner_text("main")
        before = page.locator("tr").count()
        call(gw, "POST", "/v1/tools/call", user, {"name": "fx_echo", "arguments": {"text": "y"}})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and page.locator("tr").count() <= before:
            page.wait_for_timeout(250)
        assert page.locator("tr").count() == before + 1
        assert "api_key#alice" not in page.inner_text("table")
        page.click("button:has-text('Verify the trail')")
        assert "no break." in page.inner_text("main") and "Verified:" in page.inner_text("main")
        _shot(page, "audit")
        assert violations == [] and second_violations == []
    finally:
        gw.stop()
