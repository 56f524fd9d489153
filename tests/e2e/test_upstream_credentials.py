"""Backend credentials end to end: tokens obtained from the real test authorization server
(tests/fixtures/servers/auth_server.py) are what a backend's resource server would accept,
checked with the gateway's own JwtVerifier against that server's JWKS.

A small aiohttp backend on loopback plays the resource server: it accepts only tokens for
its own URL and reports whom each request speaks for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from switchyard.auth.jwt_verifier import AuthError
from switchyard.upstream.credentials import (
    ClientCredentials,
    Credential,
    CredentialError,
    StaticHeaders,
    TokenExchange,
    token_session,
)
from switchyard.upstream.outbound import Caller
from tests.e2e.test_auth_server import (
    MCP,
    SECRETS,
    UPSTREAM,
    AuthServer,
    client_token,
    make_verifier,
    start_auth_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def server() -> Iterator[AuthServer]:
    started = start_auth_server("creds-e2e-as")
    try:
        yield started
    finally:
        started.proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with token_session() as session:
        yield session


def gateway_cc(server: AuthServer, http: aiohttp.ClientSession, resource: str) -> ClientCredentials:
    return ClientCredentials(
        f"{server.issuer}/token", "gateway", SECRETS["gateway"], resource, "mcp:read", http
    )


def gateway_te(
    server: AuthServer,
    http: aiohttp.ClientSession,
    *,
    resource: str | None = None,
    audience: str | None = None,
    scope: str | None = None,
) -> TokenExchange:
    return TokenExchange(
        f"{server.issuer}/token",
        "gateway",
        SECRETS["gateway"],
        http=http,
        resource=resource,
        audience=audience,
        scope=scope,
    )


def bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    assert scheme == "Bearer"
    return token


async def test_client_credentials_token_verifies_for_the_backend(
    server: AuthServer, http: aiohttp.ClientSession
) -> None:
    verifier = make_verifier(server, http)
    cred = gateway_cc(server, http, UPSTREAM)
    token = bearer(await cred.header())
    principal = await verifier.verify(token, UPSTREAM)
    assert principal.subject == "gateway"
    assert principal.client_id == "gateway"
    assert principal.audience == UPSTREAM
    assert principal.scopes == frozenset({"mcp:read"})
    # Good only at the backend it was obtained for, not at the gateway or another backend.
    with pytest.raises(AuthError, match="not intended"):
        await verifier.verify(token, MCP)


async def test_token_exchange_carries_the_callers_identity(
    server: AuthServer, http: aiohttp.ClientSession
) -> None:
    verifier = make_verifier(server, http)
    inbound = await client_token(http, server, "reader", MCP)  # the caller's token for us
    assert (await verifier.verify(inbound, MCP)).subject == "reader"
    cred = gateway_te(server, http, resource=UPSTREAM)
    outbound = bearer(await cred.header(inbound))
    assert outbound != inbound
    principal = await verifier.verify(outbound, UPSTREAM)
    assert principal.subject == "reader"  # the caller, as the AS asserts it
    assert principal.client_id == "gateway"  # obtained by the gateway
    assert principal.audience == UPSTREAM
    assert principal.roles == ("viewer",)
    with pytest.raises(AuthError, match="not intended"):
        await verifier.verify(outbound, MCP)
    # The caller's own token is no good at the backend: forwarding it would not even work.
    with pytest.raises(AuthError, match="not intended"):
        await verifier.verify(inbound, UPSTREAM)


async def test_token_exchange_by_logical_audience(
    server: AuthServer, http: aiohttp.ClientSession
) -> None:
    verifier = make_verifier(server, http)
    inbound = await client_token(http, server, "gateway", MCP, scope="mcp:read mcp:write")
    cred = gateway_te(server, http, audience=UPSTREAM, scope="mcp:read")
    principal = await verifier.verify(bearer(await cred.header(inbound)), UPSTREAM)
    assert principal.scopes == frozenset({"mcp:read"})  # narrowed for this backend
    assert principal.attributes["tenant"] == "acme"


async def test_a_backend_accepts_each_kind_of_credential(
    server: AuthServer, http: aiohttp.ClientSession
) -> None:
    verifier = make_verifier(server, http)
    # The backend's URL is only known once it listens; it verifies against its own URL.
    holder: dict[str, str] = {}

    async def mcp(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        try:
            principal = await verifier.verify(header.removeprefix("Bearer "), holder["url"])
        except AuthError as exc:
            return web.json_response({"error": exc.description}, status=401)
        return web.json_response({"sub": principal.subject, "client": principal.client_id})

    app = web.Application()
    app.router.add_post("/mcp", mcp)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = holder["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/mcp"
    try:
        caller = await client_token(http, server, "reader", MCP)

        async def call(cred: Credential, subject: str | None) -> tuple[int, dict[str, str]]:
            headers = await cred.headers(Caller("caller", subject) if subject else None)
            async with http.post(url, json={}, headers=headers, allow_redirects=False) as resp:
                return resp.status, await resp.json()

        credentials: list[tuple[Credential, str]] = [
            (gateway_cc(server, http, url), "gateway"),
            (gateway_te(server, http, resource=url), "reader"),
        ]
        for cred, subject in credentials:
            status, body = await call(cred, caller)
            assert status == 200, body
            assert body == {"sub": subject, "client": "gateway"}
        # The caller's token itself, passed through as a static header, is refused.
        status, _ = await call(StaticHeaders({"Authorization": f"Bearer {caller}"}), None)
        assert status == 401
        # A token exchange without the caller's token fails before any request is sent.
        with pytest.raises(CredentialError):
            await call(gateway_te(server, http, resource=url), None)
    finally:
        await runner.cleanup()
