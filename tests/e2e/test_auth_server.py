"""Real tokens from a real authorization server (tests/fixtures/servers/auth_server.py),
verified by JwtVerifier against that server's JWKS on loopback, named in config."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from switchyard.auth.jwt_verifier import AuthError, IssuerConfig, JwtVerifier, require_scopes
from tests.harness import FIXTURES, PYTHON, Proc, register_secret, start_port_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

# Resource URIs of gateway endpoints; nothing needs to listen there, they are only audiences.
MCP = "http://127.0.0.1:18080/mcp"
ADMIN = "http://127.0.0.1:18080/admin"
UPSTREAM = "http://127.0.0.1:18081/mcp"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
CLIENTS: list[dict[str, Any]] = [
    {
        "id": "gateway",
        "secret": "gateway-secret",
        "scopes": ["mcp:read", "mcp:write", "mcp:admin"],
        "roles": ["ops"],
        "claims": {"tenant": "acme"},
    },
    {"id": "reader", "secret": "reader-secret", "scopes": ["mcp:read"], "roles": ["viewer"]},
]
SECRETS = {c["id"]: c["secret"] for c in CLIENTS}
for _secret in SECRETS.values():
    register_secret(_secret)


@dataclass
class AuthServer:
    proc: Proc
    issuer: str

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"


def start_auth_server(name: str) -> AuthServer:
    args = [PYTHON, str(FIXTURES / "auth_server.py"), "--port", "0"]
    for client in CLIENTS:
        args += ["--client", json.dumps(client)]
    proc, port = start_port_fixture(args, name)
    return AuthServer(proc, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def auth_server() -> Iterator[AuthServer]:
    server = start_auth_server("auth-server")
    try:
        yield server
    finally:
        server.proc.stop()


@pytest.fixture
def own_auth_server() -> Iterator[AuthServer]:
    """A private server, for tests that change its keys."""
    server = start_auth_server("auth-server-own")
    try:
        yield server
    finally:
        server.proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def make_verifier(server: AuthServer, http: aiohttp.ClientSession, **settings: Any) -> JwtVerifier:
    config = IssuerConfig(
        server.issuer,
        jwks_uri=server.jwks_uri,
        algorithms=["RS256"],
        required_typ="at+jwt",
        **settings,
    )
    return JwtVerifier([config], http)


async def request_token(
    http: aiohttp.ClientSession,
    server: AuthServer,
    client: str,
    form: list[tuple[str, str]],
    *,
    expect: int = 200,
) -> dict[str, Any]:
    auth = {"Authorization": aiohttp.encode_basic_auth(client, SECRETS[client])}
    async with http.post(
        f"{server.issuer}/token", data=form, headers=auth, allow_redirects=False
    ) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == expect, body
        if expect == 200:
            assert resp.headers["Cache-Control"] == "no-store"
        return body


async def client_token(
    http: aiohttp.ClientSession, server: AuthServer, client: str, *resources: str, scope: str = ""
) -> str:
    form = [("grant_type", "client_credentials"), *(("resource", r) for r in resources)]
    if scope:
        form.append(("scope", scope))
    body = await request_token(http, server, client, form)
    assert body["token_type"] == "Bearer"
    token: str = register_secret(body["access_token"])
    return token


async def exchange(
    http: aiohttp.ClientSession,
    server: AuthServer,
    subject_token: str,
    *extra: tuple[str, str],
    expect: int = 200,
) -> dict[str, Any]:
    form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN),
        *extra,
    ]
    return await request_token(http, server, "gateway", form, expect=expect)


async def get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json(content_type=None)
        return body


async def test_metadata_names_the_issuer_and_jwks(
    auth_server: AuthServer, http: aiohttp.ClientSession
) -> None:
    meta = await get_json(http, f"{auth_server.issuer}/.well-known/oauth-authorization-server")
    assert meta["issuer"] == auth_server.issuer
    assert meta["jwks_uri"] == auth_server.jwks_uri
    assert meta["token_endpoint"] == f"{auth_server.issuer}/token"
    assert TOKEN_EXCHANGE in meta["grant_types_supported"]
    assert "client_credentials" in meta["grant_types_supported"]


async def test_client_credentials_token_verifies_at_its_resource(
    auth_server: AuthServer, http: aiohttp.ClientSession
) -> None:
    verifier = make_verifier(auth_server, http)
    token = await client_token(http, auth_server, "gateway", MCP, scope="mcp:read mcp:write")
    principal = await verifier.verify(token, MCP)
    assert principal.subject == "gateway"
    assert principal.issuer == auth_server.issuer
    assert principal.audience == MCP
    assert principal.scopes == frozenset({"mcp:read", "mcp:write"})
    assert principal.roles == ("ops",)
    assert principal.client_id == "gateway"
    assert principal.attributes["tenant"] == "acme"
    require_scopes(principal, ["mcp:read"])
    with pytest.raises(AuthError) as caught:
        require_scopes(principal, ["mcp:admin"])
    assert caught.value.status == 403
    assert caught.value.scopes == ("mcp:admin",)
    # The same token at another endpoint, a different protected resource, is refused.
    with pytest.raises(AuthError, match="not intended for this resource"):
        await verifier.verify(token, ADMIN)
    assert verifier.fetch_count(auth_server.issuer) == 1


async def test_several_resources_in_one_token(
    auth_server: AuthServer, http: aiohttp.ClientSession
) -> None:
    verifier = make_verifier(auth_server, http)
    token = await client_token(http, auth_server, "reader", MCP, ADMIN)
    assert (await verifier.verify(token, MCP)).scopes == frozenset({"mcp:read"})
    assert (await verifier.verify(token, ADMIN)).roles == ("viewer",)
    with pytest.raises(AuthError):
        await verifier.verify(token, UPSTREAM)


async def test_token_exchange_moves_the_audience(
    auth_server: AuthServer, http: aiohttp.ClientSession
) -> None:
    verifier = make_verifier(auth_server, http)
    inbound = await client_token(http, auth_server, "reader", MCP)
    body = await exchange(http, auth_server, inbound, ("resource", UPSTREAM))
    assert body["issued_token_type"] == ACCESS_TOKEN
    outbound = body["access_token"]
    principal = await verifier.verify(outbound, UPSTREAM)
    assert principal.subject == "reader"  # still the original caller
    assert principal.client_id == "gateway"  # obtained by the gateway
    assert principal.scopes == frozenset({"mcp:read"})
    assert principal.roles == ("viewer",)
    # Each token is good only at its own audience.
    with pytest.raises(AuthError, match="not intended"):
        await verifier.verify(outbound, MCP)
    with pytest.raises(AuthError, match="not intended"):
        await verifier.verify(inbound, UPSTREAM)


async def test_token_exchange_with_actor_and_narrowed_scope(
    auth_server: AuthServer, http: aiohttp.ClientSession
) -> None:
    verifier = make_verifier(auth_server, http)
    inbound = await client_token(http, auth_server, "gateway", MCP)
    actor = await client_token(http, auth_server, "reader", MCP)
    body = await exchange(
        http,
        auth_server,
        inbound,
        ("audience", UPSTREAM),
        ("scope", "mcp:read"),
        ("actor_token", actor),
        ("actor_token_type", ACCESS_TOKEN),
    )
    principal = await verifier.verify(body["access_token"], UPSTREAM)
    assert principal.scopes == frozenset({"mcp:read"})
    assert principal.attributes["act"] == {"sub": "reader"}
    assert principal.attributes["tenant"] == "acme"


async def test_token_exchange_refusals(
    auth_server: AuthServer, http: aiohttp.ClientSession
) -> None:
    inbound = await client_token(http, auth_server, "reader", MCP)
    escalate = await exchange(
        http, auth_server, inbound, ("resource", UPSTREAM), ("scope", "mcp:admin"), expect=400
    )
    assert escalate["error"] == "invalid_scope"
    forged = inbound[:-8] + ("A" * 8 if not inbound.endswith("A" * 8) else "B" * 8)
    bad = await exchange(http, auth_server, forged, ("resource", UPSTREAM), expect=400)
    assert bad["error"] == "invalid_request"
    target = await exchange(http, auth_server, inbound, ("resource", "not-a-uri"), expect=400)
    assert target["error"] == "invalid_target"


async def test_issuer_not_in_config_is_refused_without_fetch(
    auth_server: AuthServer, http: aiohttp.ClientSession
) -> None:
    before = (await get_json(http, f"{auth_server.issuer}/stats"))["jwks_hits"]
    # Configured for a different issuer URL; the token's issuer is unknown to this verifier.
    other = IssuerConfig("https://as.other.example", jwks_uri="https://as.other.example/jwks")
    verifier = JwtVerifier([other], http)
    token = await client_token(http, auth_server, "reader", MCP)
    with pytest.raises(AuthError, match="not trusted"):
        await verifier.verify(token, MCP)
    assert (await get_json(http, f"{auth_server.issuer}/stats"))["jwks_hits"] == before


async def test_rotation_needs_one_refetch(
    own_auth_server: AuthServer, http: aiohttp.ClientSession
) -> None:
    server = own_auth_server
    verifier = make_verifier(server, http)
    old = await client_token(http, server, "gateway", MCP)
    await verifier.verify(old, MCP)
    stats = await get_json(http, f"{server.issuer}/stats")
    assert stats["jwks_hits"] == 1

    async with http.post(f"{server.issuer}/rotate", allow_redirects=False) as resp:
        assert resp.status == 200
        new_kid = (await resp.json())["kid"]
    new = await client_token(http, server, "gateway", MCP)
    assert json.loads(_segment(new))["kid"] == new_kid
    principal = await verifier.verify(new, MCP)
    assert principal.subject == "gateway"
    assert verifier.fetch_count(server.issuer) == 2
    # Old and new tokens both verify from the cache now; the AS saw exactly one refetch.
    await verifier.verify(old, MCP)
    await verifier.verify(new, MCP)
    assert (await get_json(http, f"{server.issuer}/stats"))["jwks_hits"] == 2

    # Retiring the old key: tokens it signed stop verifying once the keys are refetched.
    async with http.post(f"{server.issuer}/rotate?retire=1", allow_redirects=False) as resp:
        assert resp.status == 200
    newest = await client_token(http, server, "gateway", MCP)
    verifier2 = make_verifier(server, http)
    assert (await verifier2.verify(newest, MCP)).subject == "gateway"
    with pytest.raises(AuthError):
        await verifier2.verify(old, MCP)


def _segment(token: str) -> str:
    head = token.split(".")[0]
    return base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode()
