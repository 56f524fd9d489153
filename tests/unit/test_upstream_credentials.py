"""Backend credentials against the real test authorization server (a subprocess on loopback).

Token requests are counted by a small recording relay (aiohttp, in-process) that forwards
them to the AS unchanged: the AS itself does not count token requests. The relay can also
delay, fail, or answer in ways no well-behaved AS would, for the error paths.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from switchyard.upstream.credentials import (
    ACCESS_TOKEN_TYPE,
    TOKEN_EXCHANGE_GRANT,
    ClientCredentials,
    Credential,
    CredentialError,
    StaticHeaders,
    TokenExchange,
    token_session,
)
from switchyard.upstream.outbound import Caller
from tests.harness import FIXTURES, PYTHON, start_port_fixture

pytestmark = pytest.mark.anyio

SECRET = "gw-s3cret-never-shown"
CLIENTS: list[dict[str, Any]] = [
    {"id": "gateway", "secret": SECRET, "scopes": ["mcp:read", "mcp:write"], "roles": ["ops"]},
    {"id": "alice", "secret": "alice-secret", "scopes": ["mcp:read"], "roles": ["viewer"]},
    {"id": "bob", "secret": "bob-secret", "scopes": ["mcp:read"]},
    {"id": "carol", "secret": "carol-secret", "scopes": ["mcp:read"]},
]
GATEWAY = "http://127.0.0.1:18080/mcp"
BACKEND = "http://127.0.0.1:18081/mcp"


def start_as(name: str, *extra: str) -> Iterator[str]:
    args = [PYTHON, str(FIXTURES / "auth_server.py"), "--port", "0", *extra]
    for client in CLIENTS:
        args += ["--client", json.dumps(client)]
    proc, port = start_port_fixture(args, name)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    yield from start_as("creds-as")


@pytest.fixture(scope="module")
def short_issuer() -> Iterator[str]:
    """Tokens live 2 s, so expiry and refresh happen within a test."""
    yield from start_as("creds-as-short", "--token-ttl", "2")


@dataclass
class Relay:
    """Forwards POST /token to the AS, recording each request; can delay, fail or redirect."""

    upstream: str
    http: aiohttp.ClientSession
    base: str = ""
    forms: list[list[tuple[str, str]]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    delay_s: float = 0.0
    canned: tuple[int, bytes] | None = None  # answer this instead of asking the AS

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    @property
    def count(self) -> int:
        return len(self.forms)

    async def token(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.forms.append(parse_qsl(body.decode(), keep_blank_values=True))
        self.authorizations.append(request.headers.get("Authorization"))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.canned is not None:
            status, payload = self.canned
            return web.Response(status=status, body=payload, content_type="application/json")
        headers = {"Content-Type": request.headers.get("Content-Type", "")}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        async with self.http.post(
            f"{self.upstream}/token", data=body, headers=headers, allow_redirects=False
        ) as resp:
            return web.Response(
                status=resp.status, body=await resp.read(), content_type="application/json"
            )


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with token_session() as session:
        yield session


async def make_relay(upstream: str) -> AsyncIterator[Relay]:
    async with aiohttp.ClientSession() as forwarder:
        relay = Relay(upstream, forwarder)
        app = web.Application()
        app.router.add_post("/token", relay.token)
        runner, relay.base = await serve(app)
        try:
            yield relay
        finally:
            await runner.cleanup()


@pytest.fixture
async def relay(issuer: str) -> AsyncIterator[Relay]:
    async for r in make_relay(issuer):
        yield r


@pytest.fixture
async def short_relay(short_issuer: str) -> AsyncIterator[Relay]:
    async for r in make_relay(short_issuer):
        yield r


async def caller_token(http: aiohttp.ClientSession, issuer: str, client: str) -> str:
    """A caller's access token for the gateway, straight from the AS (not through a relay)."""
    secret = next(c["secret"] for c in CLIENTS if c["id"] == client)
    form = [("grant_type", "client_credentials"), ("resource", GATEWAY)]
    auth = {"Authorization": aiohttp.encode_basic_auth(client, secret)}
    async with http.post(f"{issuer}/token", data=form, headers=auth, allow_redirects=False) as resp:
        assert resp.status == 200
        token: str = (await resp.json())["access_token"]
        return token


def cc(relay: Relay, http: aiohttp.ClientSession, **kw: Any) -> ClientCredentials:
    secret = kw.pop("secret", SECRET)
    return ClientCredentials(relay.token_url, "gateway", secret, BACKEND, "mcp:read", http, **kw)


def te(relay: Relay, http: aiohttp.ClientSession, **kw: Any) -> TokenExchange:
    kw.setdefault("resource", BACKEND)
    return TokenExchange(relay.token_url, "gateway", SECRET, http=http, **kw)


def assert_clean(text: str, *secrets: str) -> None:
    for secret in (SECRET, *secrets):
        assert secret not in text


# -- client credentials --------------------------------------------------------------------


async def test_one_token_request_serves_many_calls(
    relay: Relay, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="switchyard")
    cred = cc(relay, http)
    first = await cred.header()
    assert first.startswith("Bearer ")
    for _ in range(10):
        assert await cred.header() == first
    assert await cred.headers(None) == {"Authorization": first}
    assert relay.count == 1
    # Client authentication is HTTP Basic; the secret is never in the form.
    assert relay.authorizations[0] == aiohttp.encode_basic_auth("gateway", SECRET)
    assert dict(relay.forms[0]) == {
        "grant_type": "client_credentials",
        "resource": BACKEND,
        "scope": "mcp:read",
    }
    assert isinstance(cred, Credential)
    assert_clean(caplog.text + repr(cred), first.removeprefix("Bearer "))


async def test_refreshes_before_expiry(short_relay: Relay, http: aiohttp.ClientSession) -> None:
    # 2 s tokens, refreshed 0.5 s early: the first token serves about 1.5 s.
    cred = cc(short_relay, http, refresh_margin_s=0.5)
    first = await cred.header()
    await asyncio.sleep(0.5)
    assert await cred.header() == first
    assert short_relay.count == 1
    await asyncio.sleep(1.2)
    second = await cred.header()
    assert second != first
    assert short_relay.count == 2
    assert await cred.header() == second
    assert short_relay.count == 2


async def test_token_shorter_than_the_margin_is_renewed_halfway(
    short_relay: Relay, http: aiohttp.ClientSession
) -> None:
    cred = cc(short_relay, http)  # margin 30 s > the 2 s lifetime
    first = await cred.header()
    assert await cred.header() == first
    await asyncio.sleep(1.1)
    assert await cred.header() != first
    assert short_relay.count == 2


async def test_concurrent_callers_share_one_fetch(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    relay.delay_s = 0.3  # every caller arrives while the one fetch is still under way
    cred = cc(relay, http)
    headers = await asyncio.gather(*(cred.header() for _ in range(20)))
    assert len(set(headers)) == 1
    assert relay.count == 1


async def test_a_cancelled_caller_does_not_abort_the_shared_fetch(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    relay.delay_s = 0.3
    cred = cc(relay, http)
    quitter = asyncio.create_task(cred.header())
    stayer = asyncio.create_task(cred.header())
    await asyncio.sleep(0.1)
    quitter.cancel()
    assert (await stayer).startswith("Bearer ")
    assert quitter.cancelled()
    assert relay.count == 1


async def test_wrong_secret_error_names_the_endpoint_not_the_secret(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    wrong = "wrong-s3cret-do-not-print"
    cred = cc(relay, http, secret=wrong, failure_backoff_s=0.3)
    with pytest.raises(CredentialError) as caught:
        await cred.header()
    err = caught.value
    assert relay.token_url in str(err)
    assert err.status == 401
    assert err.error == "invalid_client"
    assert not err.temporary
    assert err.__cause__ is None
    assert_clean(f"{err} {err!r} {cred!r}", wrong, aiohttp.encode_basic_auth("gateway", wrong))
    # Within the backoff the failure is replayed without asking the AS again.
    with pytest.raises(CredentialError, match="invalid_client"):
        await cred.header()
    assert relay.count == 1
    await asyncio.sleep(0.35)
    with pytest.raises(CredentialError):
        await cred.header()
    assert relay.count == 2


@pytest.mark.parametrize("status", [302, 307])
async def test_redirects_are_not_followed(
    relay: Relay, http: aiohttp.ClientSession, status: int
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": relay.token_url})

    app = web.Application()
    app.router.add_post("/token", handler)
    runner, base = await serve(app)
    try:
        cred = ClientCredentials(f"{base}/token", "gateway", SECRET, BACKEND, None, http)
        with pytest.raises(CredentialError, match="redirects are not followed") as caught:
            await cred.header()
        assert caught.value.status == status
        assert f"{base}/token" in str(caught.value)
        assert_clean(str(caught.value))
        assert relay.count == 0  # the secret never reached where the redirect pointed
    finally:
        await runner.cleanup()


async def test_a_valid_token_keeps_serving_while_refresh_fails(
    short_relay: Relay, http: aiohttp.ClientSession
) -> None:
    # 2 s tokens with a 1.5 s margin: refresh is due after 1 s, expiry after 2 s.
    cred = cc(short_relay, http, refresh_margin_s=1.5, failure_backoff_s=0.0)
    first = await cred.header()
    await asyncio.sleep(1.1)
    short_relay.canned = (503, b'{"error": "temporarily_unavailable"}')
    assert await cred.header() == first  # refresh failed, old token still valid
    assert short_relay.count == 2
    await asyncio.sleep(1.0)
    with pytest.raises(CredentialError) as caught:
        await cred.header()
    assert caught.value.temporary
    assert caught.value.status == 503
    short_relay.canned = None
    assert await cred.header() != first


async def test_invalidate_forces_a_new_token(relay: Relay, http: aiohttp.ClientSession) -> None:
    cred = cc(relay, http)
    first = await cred.header()
    cred.invalidate()
    assert await cred.header() != first
    assert relay.count == 2


async def test_slow_endpoint_times_out(relay: Relay, http: aiohttp.ClientSession) -> None:
    relay.delay_s = 2.0
    cred = cc(relay, http, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(CredentialError, match="no answer in time") as caught:
        await cred.header()
    assert time.monotonic() - started < 1.5
    assert caught.value.temporary


async def test_unreachable_endpoint(http: aiohttp.ClientSession) -> None:
    runner, base = await serve(web.Application())
    await runner.cleanup()  # a port nothing listens on any more
    cred = ClientCredentials(f"{base}/token", "gateway", SECRET, BACKEND, None, http)
    with pytest.raises(CredentialError, match="unreachable") as caught:
        await cred.header()
    assert caught.value.temporary
    assert_clean(str(caught.value))


@pytest.mark.parametrize(
    ("canned", "message"),
    [
        ((200, b"<html>"), "not JSON"),
        ((200, b'{"token_type": "Bearer"}'), "no usable access_token"),
        ((200, b'{"access_token": "a\\r\\nX-Evil: 1", "token_type": "Bearer"}'), "no usable"),
        ((200, b'{"access_token": "abc.def", "token_type": "DPoP"}'), "is not Bearer"),
        ((200, b'{"access_token": "abc", "token_type": "bearer", "expires_in": -5}'), "expires"),
        ((200, b'{"access_token": "' + b"a" * 70_000 + b'"}'), "larger than 64 KiB"),
        (
            (400, b'{"error": "invalid_scope", "error_description": "' + SECRET.encode() + b'"}'),
            "invalid_scope",
        ),
    ],
)
async def test_unusable_answers_are_refused(
    relay: Relay, http: aiohttp.ClientSession, canned: tuple[int, bytes], message: str
) -> None:
    relay.canned = canned
    cred = cc(relay, http)
    with pytest.raises(CredentialError, match=message) as caught:
        await cred.header()
    assert_clean(str(caught.value))


async def test_expires_in_is_optional(relay: Relay, http: aiohttp.ClientSession) -> None:
    relay.canned = (200, b'{"access_token": "opaque-token_1", "token_type": "bearer"}')
    cred = cc(relay, http)
    assert await cred.header() == "Bearer opaque-token_1"
    assert await cred.header() == "Bearer opaque-token_1"
    assert relay.count == 1


def test_token_url_must_be_https_or_loopback() -> None:
    async def never() -> None:
        raise AssertionError

    session: Any = object()  # never used: construction fails first
    for url in ("http://as.example.com/token", "ftp://127.0.0.1/token", "token"):
        with pytest.raises(ValueError, match="https"):
            ClientCredentials(url, "gateway", SECRET, BACKEND, None, session)
    with pytest.raises(ValueError, match="must not carry credentials") as caught:
        ClientCredentials("https://u:pw-in-url@as.example.com/t", "g", SECRET, None, None, session)
    assert "pw-in-url" not in str(caught.value)
    ClientCredentials("https://as.example.com/token", "gateway", SECRET, BACKEND, None, session)
    with pytest.raises(ValueError, match="client_secret"):
        ClientCredentials("https://as.example.com/token", "gateway", "", BACKEND, None, session)


# -- token exchange ------------------------------------------------------------------------


async def test_exchange_is_cached_per_caller(
    issuer: str, relay: Relay, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="switchyard")
    alice = await caller_token(http, issuer, "alice")
    bob = await caller_token(http, issuer, "bob")
    cred = te(relay, http)
    a1 = await cred.header(alice)
    assert await cred.header(alice) == a1
    assert relay.count == 1
    form = dict(relay.forms[0])
    assert form == {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": alice,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "resource": BACKEND,
    }
    assert relay.authorizations[0] == aiohttp.encode_basic_auth("gateway", SECRET)
    b1 = (await cred.headers(Caller("bob", bob)))["Authorization"]
    assert b1 != a1
    assert relay.count == 2
    assert cred.cached == 2
    assert_clean(caplog.text + repr(cred), alice, bob, a1[7:], b1[7:])


async def test_exchange_single_flight_per_caller(
    issuer: str, relay: Relay, http: aiohttp.ClientSession
) -> None:
    alice = await caller_token(http, issuer, "alice")
    bob = await caller_token(http, issuer, "bob")
    relay.delay_s = 0.3
    cred = te(relay, http)
    calls = [cred.header(alice) for _ in range(20)] + [cred.header(bob) for _ in range(20)]
    results = await asyncio.gather(*calls)
    assert len(set(results[:20])) == 1
    assert len(set(results[20:])) == 1
    assert results[0] != results[20]
    assert relay.count == 2


async def test_exchange_cache_is_capped(
    issuer: str, relay: Relay, http: aiohttp.ClientSession
) -> None:
    alice = await caller_token(http, issuer, "alice")
    cred = te(relay, http, cache_ttl_cap_s=0.5, refresh_margin_s=0.0)  # the AS says 300 s
    first = await cred.header(alice)
    assert await cred.header(alice) == first
    await asyncio.sleep(0.6)
    assert await cred.header(alice) != first
    assert relay.count == 2


async def test_exchange_cache_is_bounded(
    issuer: str, relay: Relay, http: aiohttp.ClientSession
) -> None:
    callers = [await caller_token(http, issuer, c) for c in ("alice", "bob", "carol")]
    cred = te(relay, http, max_entries=2)
    for token in callers:
        await cred.header(token)
    assert cred.cached == 2
    await cred.header(callers[2])  # most recent: still cached
    assert relay.count == 3
    await cred.header(callers[0])  # least recent: evicted, exchanged again
    assert relay.count == 4
    cred.invalidate(callers[0])
    await cred.header(callers[0])
    assert relay.count == 5


async def test_exchange_errors_carry_no_tokens(
    issuer: str, relay: Relay, http: aiohttp.ClientSession
) -> None:
    alice = await caller_token(http, issuer, "alice")
    forged = alice[:-8] + ("A" * 8 if not alice.endswith("A" * 8) else "B" * 8)
    cred = te(relay, http)
    with pytest.raises(CredentialError) as caught:
        await cred.header(forged)
    assert caught.value.error == "invalid_request"
    assert caught.value.status == 400
    assert relay.token_url in str(caught.value)
    assert_clean(f"{caught.value} {caught.value!r}", forged, alice)
    # An AS that echoes the subject token back in its description is redacted too.
    relay.canned = (400, json.dumps({"error": "x", "error_description": alice}).encode())
    with pytest.raises(CredentialError, match="redacted") as caught:
        await cred.header(alice)
    assert_clean(str(caught.value), alice)


async def test_exchange_needs_the_callers_token(relay: Relay, http: aiohttp.ClientSession) -> None:
    cred = te(relay, http)
    with pytest.raises(CredentialError, match="caller's OAuth access token"):
        await cred.headers(None)
    # A caller who proved who it is without a token (an API key) has nothing to exchange.
    with pytest.raises(CredentialError, match="authenticated without one"):
        await cred.headers(Caller("alice", None))
    assert relay.count == 0


async def test_exchange_refuses_a_scope_the_caller_lacks(
    issuer: str, relay: Relay, http: aiohttp.ClientSession
) -> None:
    alice = await caller_token(http, issuer, "alice")  # mcp:read only
    cred = te(relay, http, scope="mcp:write")
    with pytest.raises(CredentialError) as caught:
        await cred.header(alice)
    assert caught.value.error == "invalid_scope"


def test_exchange_needs_a_target() -> None:
    session: Any = object()
    with pytest.raises(ValueError, match="resource or an audience"):
        TokenExchange("https://as.example.com/token", "gateway", SECRET, http=session)
    TokenExchange("https://as.example.com/token", "g", SECRET, http=session, audience="backend")


# -- static headers ------------------------------------------------------------------------


async def test_static_headers() -> None:
    static = StaticHeaders({"X-Api-Key": "k-123", "Authorization": "Bearer svc"})
    got = await static.headers(None)
    assert got == {"X-Api-Key": "k-123", "Authorization": "Bearer svc"}
    got["X-Api-Key"] = "changed"
    assert (await static.headers(Caller("x", "ignored")))["X-Api-Key"] == "k-123"
    assert isinstance(static, Credential)
    assert "k-123" not in repr(static)
    with pytest.raises(ValueError, match="line break") as caught:
        StaticHeaders({"X-Api-Key": "secret\r\nX-Evil: 1"})
    assert "secret" not in str(caught.value).replace("X-Api-Key", "")
    with pytest.raises(ValueError, match="invalid header name"):
        StaticHeaders({"Bad Name": "v"})


@pytest.mark.parametrize(
    ("token", "outcome"),
    [
        (b"t" * 1000, "ok"),  # a server may compress although asked not to: still readable
        (b"t" * (48 * 1024 * 1024), "larger than 64 KiB"),  # 48 MiB of token in ~50 KB of gzip
    ],
)
async def test_token_answers_are_bounded_after_decompression(
    http: aiohttp.ClientSession, token: bytes, outcome: str
) -> None:
    seen: list[str | None] = []
    body = gzip.compress(b'{"access_token": "' + token + b'", "token_type": "Bearer"}')

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding"))
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_post("/token", handler)
    runner, base = await serve(app)
    try:
        cred = ClientCredentials(f"{base}/token", "gateway", SECRET, BACKEND, "mcp:read", http)
        if outcome == "ok":
            assert await cred.header() == "Bearer " + token.decode()
        else:
            with pytest.raises(CredentialError, match=outcome):
                await cred.header()
    finally:
        await runner.cleanup()
    assert seen == ["identity"]
