"""Console sign-in for a gateway of several processes: sessions in the shared PostgreSQL
database (a cookie made on one process works on the other, signing out or revoking the key
ends it on both), the sign-in form's login token, the bounds on sessions, and sign-in with the
OAuth issuer (authorization code with PKCE) against a real authorization server
(tests/fixtures/servers/auth_server.py) over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.databases import PG_BASE
from tests.e2e.test_admin import call
from tests.e2e.test_console import (
    fetch,
    login_form,
    set_cookies,
    sign_in_over_http,
    start_console_issuer,
    with_console_issuer,
)
from tests.harness import (
    Gateway,
    create_key,
    free_port,
    start_gateway,
    stdio_fixture,
)

pytestmark = pytest.mark.e2e

CSRF = re.compile(r"name=csrf value='([^']+)'")
CONSOLE = "/admin/console"
TABLE = "switchyard_console_sessions"


def _config(tmp: Path, database_url: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "auth": {
            "enabled": True,
            "data_dir": str(tmp / "keys"),
            "rules": [{"effect": "allow", "roles": ["admin", "admin-read", "probe"]}],
        },
        "storage": {"data_dir": str(tmp / "db")},
        "servers": {"fx": stdio_fixture("crashy")},
    }
    if database_url is not None:
        config["storage"]["database_url"] = database_url
    return config


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A schema of its own in the shared PostgreSQL, for this test's gateway processes."""
    schema = f"sy_console_{secrets.token_hex(6)}"
    asyncio.run(_sql(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?search_path={schema}"
    finally:
        asyncio.run(_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


async def _sql(statement: str, url: str = PG_BASE) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(statement)]
    finally:
        await conn.close()


def _rows(url: str) -> list[tuple[Any, ...]]:
    schema = parse_qs(urlsplit(url).query)["search_path"][0]
    return asyncio.run(_sql(f'SELECT * FROM "{schema}".{TABLE} ORDER BY created'))


def _page(gw: Gateway, path: str, cookie: str) -> tuple[int, str, str]:
    """A console page: the status, where a redirect leads, and the body."""
    status, headers, body = fetch(gw.base + CONSOLE + path, cookie)
    return status, (headers.get("location") or [""])[0], body


def _csrf(body: str) -> str:
    found = CSRF.search(body)
    assert found is not None, body
    return found.group(1)


def _signed_out_within(gws: list[Gateway], cookie: str, seconds: float) -> float:
    """Seconds until every gateway sends `cookie` to the sign-in page (polled, bounded)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if all(_page(gw, "/", cookie)[:2] == (303, CONSOLE + "/login") for gw in gws):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"still signed in after {seconds}s")


@pytest.mark.timeout(180)
def test_sessions_are_shared_by_two_gateways_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    alice = create_key(tmp_path / "keys", "alice", "admin")
    rita = create_key(tmp_path / "keys", "rita", "admin-read")
    config = _config(tmp_path, pg_url)
    a = start_gateway(config, tmp_path)
    b = start_gateway(config, tmp_path)
    try:
        # Alice signs in on a; b knows her session: its pages and a CSRF-checked write.
        alice_cookie = sign_in_over_http(a.base, alice)
        status, _, page = _page(b, "/keys", alice_cookie)
        assert status == 200 and "Sign out alice" in page and "Sign out rita" not in page
        alice_csrf = _csrf(page)
        status, _, created = fetch(
            b.base + CONSOLE + "/keys",
            alice_cookie,
            {"csrf": alice_csrf, "principal": "carol", "roles": "user", "etag": _etag(page)},
        )
        assert status == 200 and "Copy the key now" in created, created
        # Rita signs in on b at the same time; each sees only herself, on either process.
        rita_cookie = sign_in_over_http(b.base, rita)
        status, _, page = _page(a, "/", rita_cookie)
        assert status == 200 and "Sign out rita" in page and "Sign out alice" not in page
        rita_csrf = _csrf(page)
        assert rita_csrf != alice_csrf and alice_csrf not in page
        # Neither's CSRF token works with the other's cookie.
        for cookie, csrf in ((alice_cookie, rita_csrf), (rita_cookie, alice_csrf)):
            status, _, refused = fetch(a.base + CONSOLE + "/logout", cookie, {"csrf": csrf})
            assert status == 403 and "Bad CSRF token." in refused
        assert _page(b, "/", alice_cookie)[0] == _page(b, "/", rita_cookie)[0] == 200
        # The table keeps digests of the ids, and no key.
        rows = _rows(pg_url)
        assert len(rows) == 2
        stored = json.dumps([[str(v) for v in row] for row in rows])
        for cookie in (alice_cookie, rita_cookie):
            sid = cookie.split("=", 1)[1]
            assert sid not in stored
            assert hashlib.sha256(sid.encode()).hexdigest() in stored
        for key in (alice, rita):
            assert key not in stored and key.split("_", 2)[2] not in stored  # the secret

        # Alice signs out on b: a refuses her cookie at once; rita stays signed in.
        status, headers, _ = fetch(b.base + CONSOLE + "/logout", alice_cookie, {"csrf": alice_csrf})
        assert status == 303 and headers["location"] == [CONSOLE + "/login"]
        assert _page(a, "/", alice_cookie)[:2] == (303, CONSOLE + "/login")
        assert _page(a, "/", rita_cookie)[0] == 200
        assert len(_rows(pg_url)) == 1

        # Rita's key is revoked (through the admin API on a): her session ends on both.
        prefix = rita.split("_")[1]
        status, _, _ = call(
            a,
            "DELETE",
            f"/admin/v1/keys/{prefix}",
            alice,
            None,
            {"If-Match": f'"k-{prefix}-active"'},
        )
        assert status == 200
        # Within the key cache's promise (5 s), and the row goes with it.
        assert _signed_out_within([a, b], rita_cookie, 6.0) < 5.0
        assert _rows(pg_url) == []

        # A restart signs nobody out: alice signs in again, a restarts, the cookie still works.
        alice_cookie = sign_in_over_http(b.base, alice)
        a.stop()
        a = start_gateway(config, tmp_path, port=a.port)
        status, _, page = _page(a, "/", alice_cookie)
        assert status == 200 and "Sign out alice" in page
    finally:
        a.stop()
        b.stop()


def _etag(page: str) -> str:
    """The ETag the keys page's "New key" form carries (its last form)."""
    found = re.findall(r"name=etag value='([^']+)'", page)
    assert found, page
    return str(found[-1]).replace("&quot;", '"')


@pytest.mark.timeout(120)
def test_a_sign_in_without_the_forms_login_token_is_refused(tmp_path: Path) -> None:
    alice = create_key(tmp_path / "keys", "alice", "admin")
    gw = start_gateway(_config(tmp_path), tmp_path)
    try:
        pre, token = login_form(gw.base)
        _, other_token = login_form(gw.base)
        assert token != other_token
        attempts = [
            ("", {"key": alice}),  # a cross-site form: no pre-session, no token
            (pre, {"key": alice}),  # the pre-session but no token
            (pre, {"key": alice, "login_token": "forged"}),
            (pre, {"key": alice, "login_token": other_token}),  # another browser's token
            ("", {"key": alice, "login_token": token}),  # a token without its pre-session
            (
                pre.replace("sy_console_login=", "sy_console_login=x"),
                {"key": alice, "login_token": token},
            ),
        ]
        for cookie, form in attempts:
            status, headers, body = fetch(gw.base + CONSOLE + "/login", cookie, form)
            assert status == 403, (cookie, form, body)
            assert (
                "The sign-in form&#x27;s token is missing, expired or not this browser&#x27;s."
                in body
            )
            assert "sy_console" not in set_cookies(headers)
            csp = headers["content-security-policy"][0]
            assert csp.startswith("default-src 'none'") and "script-src" not in csp
        # The same form with its own token signs in; a wrong key is still just a wrong key.
        wrong = alice[:-1] + ("A" if alice[-1] != "A" else "B")  # never the key itself
        status, _, body = fetch(
            gw.base + CONSOLE + "/login", pre, {"key": wrong, "login_token": token}
        )
        assert status == 200 and "That key is not valid." in body
        status, headers, _ = fetch(
            gw.base + CONSOLE + "/login", pre, {"key": alice, "login_token": token}
        )
        assert status == 303 and "sy_console" in set_cookies(headers)
    finally:
        gw.stop()


@pytest.mark.timeout(120)
def test_sessions_are_bounded_per_principal(tmp_path: Path) -> None:
    alice = create_key(tmp_path / "keys", "alice", "admin")
    rita = create_key(tmp_path / "keys", "rita", "admin-read")
    gw = start_gateway(_config(tmp_path), tmp_path)
    try:
        rita_cookie = sign_in_over_http(gw.base, rita)
        cookies = [sign_in_over_http(gw.base, alice) for _ in range(11)]
        # Ten per principal: the oldest of alice's went; rita's, another principal's, stayed.
        assert _page(gw, "/", cookies[0])[:2] == (303, CONSOLE + "/login")
        for cookie in cookies[1:]:
            assert _page(gw, "/", cookie)[0] == 200
        assert _page(gw, "/", rita_cookie)[0] == 200
    finally:
        gw.stop()


# -- sign-in with the OAuth issuer -----------------------------------------------------------

USERS = [
    {"sub": "olivia", "roles": ["admin"]},
    {"sub": "uma", "roles": ["user"]},
    {"sub": "eve", "roles": ["admin"], "audience": "http://127.0.0.1:1/elsewhere/mcp"},
]


def _authorize(gw: Gateway, user: str) -> tuple[str, dict[str, str]]:
    """Start a sign-in with the issuer on `gw` and let `user` sign in there: the pre-session
    cookie, and the query the issuer sends the browser back with."""
    pre, token = login_form(gw.base)
    status, headers, body = fetch(gw.base + CONSOLE + "/login/oauth", pre, {"login_token": token})
    assert status == 303, body
    to_issuer = headers["location"][0]
    status, headers, body = fetch(to_issuer + "&" + urlencode({"login_hint": user}))
    assert status == 302, body
    back = urlsplit(headers["location"][0])
    return pre, {k: v[0] for k, v in parse_qs(back.query).items()}


@pytest.mark.timeout(180)
def test_sign_in_with_the_oauth_issuer_across_two_gateways(tmp_path: Path, pg_url: str) -> None:
    port_a, port_b = free_port(), free_port()
    public = f"http://127.0.0.1:{port_a}"  # both behind one address, as behind a balancer
    issuer_proc, issuer, secret = start_console_issuer(public + CONSOLE + "/oauth/callback", USERS)
    alice = create_key(tmp_path / "keys", "alice", "admin")
    config = _config(tmp_path, pg_url)
    config["auth"]["public_url"] = public
    with_console_issuer(config, issuer)
    os.environ["CONSOLE_OAUTH_SECRET"] = secret
    a = b = None
    try:
        a = start_gateway(config, tmp_path, port=port_a)
        b = start_gateway(config, tmp_path, port=port_b)
        # The sign-in page offers the issuer, and its CSP lets the button's answer go there.
        status, headers, page = fetch(a.base + CONSOLE + "/login")
        assert f"Sign in with {issuer}</button>" in page
        assert f"form-action 'self' {issuer};" in headers["content-security-policy"][0]

        # Started on a, back from the issuer on b (any process may take any request).
        pre, back = _authorize(a, "olivia")
        assert set(back) == {"code", "state"}
        status, headers, body = fetch(b.base + CONSOLE + "/oauth/callback?" + urlencode(back), pre)
        assert status == 200 and "Signed in as olivia." in body, body
        assert f"url={CONSOLE}/" in body  # moves on by itself, without script
        cookies = set_cookies(headers)
        assert cookies["sy_console_login"] == ""
        olivia = f"sy_console={cookies['sy_console']}"
        status, _, page = _page(a, "/keys", olivia)
        assert status == 200 and "Sign out olivia" in page
        # A write, CSRF-checked, on the other process, as olivia.
        status, _, created = fetch(
            b.base + CONSOLE + "/keys",
            olivia,
            {"csrf": _csrf(page), "principal": "dora", "roles": "user", "etag": _etag(page)},
        )
        assert status == 200 and "Copy the key now" in created
        # An API-key admin signed in at the same time sees only herself.
        alice_cookie = sign_in_over_http(b.base, alice)
        page = _page(a, "/", alice_cookie)[2]
        assert "Sign out alice" in page and "olivia" not in page
        # The session ends with the token (300 s here), not after the console's 8 hours; the
        # row holds the identity, not the token.
        rows = {row[1]: row for row in _rows(pg_url)}
        token_row = rows[f"{issuer}#olivia"]
        assert token_row[2] == "jwt" and token_row[4] is None
        assert 250_000 < token_row[8] - token_row[7] // 1_000_000 <= 300_000
        assert "eyJ" not in json.dumps([str(v) for v in token_row])
        claims = json.loads(token_row[6])
        assert claims["name"] == "olivia" and claims["roles"] == ["admin"]
        # The code was redeemed once; handing the same answer in again fails at the issuer.
        status, _, body = fetch(a.base + CONSOLE + "/oauth/callback?" + urlencode(back), pre)
        assert status == 403 and "The issuer refused the code: invalid_grant." in body

        # A state that is not this sign-in's.
        pre, back = _authorize(a, "olivia")
        forged = {**back, "state": back["state"][:-2] + "xx"}
        status, headers, body = fetch(
            a.base + CONSOLE + "/oauth/callback?" + urlencode(forged), pre
        )
        assert status == 403 and "does not belong to this sign-in" in body
        assert "sy_console" not in set_cookies(headers)
        # A code obtained in another sign-in (its PKCE verifier is not this one's), handed to
        # this browser's sign-in with this browser's state: the issuer refuses the exchange.
        _, theirs = _authorize(a, "olivia")
        mine_pre, mine = _authorize(a, "olivia")
        injected = {"code": theirs["code"], "state": mine["state"]}
        status, headers, body = fetch(
            a.base + CONSOLE + "/oauth/callback?" + urlencode(injected), mine_pre
        )
        assert status == 403 and "The issuer refused the code: invalid_grant." in body
        assert "sy_console" not in set_cookies(headers)
        # No pre-session at all.
        status, _, body = fetch(a.base + CONSOLE + "/oauth/callback?" + urlencode(mine))
        assert status == 403 and "Sign in again." in body
        # A token for another audience, verified as /mcp verifies it.
        pre, back = _authorize(a, "eve")
        status, headers, body = fetch(a.base + CONSOLE + "/oauth/callback?" + urlencode(back), pre)
        assert status == 403, body
        assert (
            "The issuer&#x27;s token is not valid here: token is not intended for this resource"
            in body
        )
        assert "sy_console" not in set_cookies(headers)
        # A user the issuer vouches for, without an admin role or scope.
        pre, back = _authorize(b, "uma")
        status, headers, body = fetch(b.base + CONSOLE + "/oauth/callback?" + urlencode(back), pre)
        assert status == 403 and "the admin API needs an admin role or scope" in body
        assert "sy_console" not in set_cookies(headers)
        # Starting without the login token is refused before the issuer is involved.
        pre, _ = login_form(a.base)
        status, headers, body = fetch(a.base + CONSOLE + "/login/oauth", pre, {"login_token": "x"})
        assert status == 403 and "location" not in headers
        assert {f"{issuer}#olivia", "api_key#alice"} == {r[1] for r in _rows(pg_url)}
    finally:
        os.environ.pop("CONSOLE_OAUTH_SECRET", None)
        for gw in (a, b):
            if gw is not None:
                gw.stop()
        issuer_proc.stop()
