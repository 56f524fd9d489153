"""JWT bearer validation (R-A2, R-A3) and RFC 9728 metadata, against real keys and a real JWKS
server on 127.0.0.1 that counts every request it gets."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from switchyard.auth.jwt_verifier import (
    AuthError,
    IssuerConfig,
    JwtVerifier,
    TokenPrincipal,
    extract_bearer,
    require_scopes,
    required_scopes_error,
)
from switchyard.auth.resource_metadata import (
    ProtectedResource,
    metadata_url,
    protected_resource_metadata,
    resource_uri,
    well_known_path,
    www_authenticate,
)

pytestmark = pytest.mark.anyio

ISS = "https://as.example"  # served by the local key server below
STATIC_ISS = "https://static.example"
AUD = "http://127.0.0.1:8080/mcp"
OTHER_AUD = "http://127.0.0.1:8080/admin"

RSA1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STATIC_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC1 = ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", **extra}


def pem(key: Any) -> str:
    public = key.public_key()
    encoded: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded.decode()


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "alice",
        "aud": AUD,
        "exp": now + 300,
        "iat": now,
        "scope": "mcp:read mcp:write",
        "roles": ["admin", "ops"],
        "email": "alice@example.com",
        "client_id": "cli",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    body: dict[str, Any],
    key: Any = RSA1,
    *,
    alg: str = "RS256",
    kid: str | None = "k1",
    headers: dict[str, Any] | None = None,
) -> str:
    header = {"kid": kid} if kid else {}
    header.update(headers or {})
    return jwt.encode(body, key, algorithm=alg, headers=header)


def hs256_with(secret: bytes, body: dict[str, Any], kid: str = "k1") -> str:
    """An HS256 token made by hand: PyJWT itself refuses to HMAC with a PEM key."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64(body)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


class KeyServer:
    """A JWKS host on 127.0.0.1 that records each request by path."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self.gzipped: dict[str, bytes] = {}
        """Served gzip'd whatever the request asked for, as a careless server would."""
        self.encodings: list[str | None] = []
        self.hits: Counter[str] = Counter()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        self.encodings.append(request.headers.get("Accept-Encoding"))
        if name in self.gzipped:
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            return web.Response(body=gzip.compress(self.gzipped[name]), headers=headers)
        if name == "redirect":
            raise web.HTTPFound("/jwks")
        if name not in self.docs:
            raise web.HTTPNotFound()
        return web.json_response(self.docs[name])


@pytest.fixture
async def keys() -> AsyncIterator[KeyServer]:
    server = KeyServer()
    server.docs["jwks"] = {"keys": [public_jwk(RSA1, "k1"), public_jwk(EC1, "e1")]}
    server.docs["evil"] = {"keys": [public_jwk(ATTACKER, "evil")]}
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


MakeVerifier = Callable[..., JwtVerifier]


@pytest.fixture
async def make_verifier(
    keys: KeyServer, http: aiohttp.ClientSession
) -> AsyncIterator[MakeVerifier]:
    made: list[JwtVerifier] = []

    def make(*, monotonic: Callable[[], float] = time.monotonic, **issuer: Any) -> JwtVerifier:
        settings: dict[str, Any] = {"jwks_uri": keys.url("jwks"), **issuer}
        configs = [
            IssuerConfig(ISS, **settings),
            IssuerConfig(STATIC_ISS, static_keys=[pem(STATIC_RSA)]),
        ]
        verifier = JwtVerifier(configs, http, monotonic=monotonic)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.aclose()


# -- the table ---------------------------------------------------------------------------------


def alg_none() -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."


def alg_none_signed() -> str:
    # `none` with a junk signature: still unsigned, however it is dressed.
    return f"{b64({'alg': 'None', 'kid': 'k1'})}.{b64(claims())}.{b64(b'x')}"


def hs_confusion() -> str:
    # The classic: HMAC keyed with the bytes of the RSA *public* key everyone can fetch.
    return hs256_with(pem(RSA1).encode(), claims())


def hs_confusion_rs_header() -> str:
    # The same MAC under an RS256 header, in case a verifier trusted the key, not the header.
    token = hs_confusion()
    _, body, sig = token.split(".")
    return f"{b64({'alg': 'RS256', 'kid': 'k1'})}.{body}.{sig}"


def raw_rs256(payload: bytes) -> str:
    return f"{b64({'alg': 'RS256', 'kid': 'k1'})}.{b64(payload)}.{b64(b'sig')}"


def duplicate_claim() -> str:
    head = b64({"alg": "RS256", "kid": "k1"})
    body = b64(
        json.dumps(claims()).replace('"sub": "alice"', '"sub": "alice", "sub": "root"').encode()
    )
    signing_input = f"{head}.{body}".encode()
    sig = RSA1.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64(sig)}"


CASES: list[tuple[str, Callable[[], str], str | None]] = [
    ("valid", lambda: sign(claims()), None),
    ("valid ES256 from the same JWKS", lambda: sign(claims(), EC1, alg="ES256", kid="e1"), None),
    ("aud list containing the endpoint", lambda: sign(claims(aud=[OTHER_AUD, AUD])), None),
    ("wrong aud", lambda: sign(claims(aud=OTHER_AUD)), "not intended for this resource"),
    ("aud list without the endpoint", lambda: sign(claims(aud=[OTHER_AUD])), "not intended"),
    ("aud prefix is not a match", lambda: sign(claims(aud=AUD + "/x")), "not intended"),
    ("no aud", lambda: sign(claims(aud=None)), "no valid audience"),
    ("aud of wrong type", lambda: sign(claims(aud=[AUD, 7])), "no valid audience"),
    ("unknown issuer", lambda: sign(claims(iss="https://evil.example")), "not trusted"),
    ("issuer differs by a slash", lambda: sign(claims(iss=ISS + "/")), "not trusted"),
    ("no issuer", lambda: sign(claims(iss=None)), "no issuer"),
    # Signed by ISS's key but claiming the static issuer: that issuer's keys do not verify it.
    ("wrong iss for the key", lambda: sign(claims(iss=STATIC_ISS)), "signature is invalid"),
    ("expired", lambda: sign(claims(exp=int(time.time()) - 120)), "expired"),
    ("expired within leeway", lambda: sign(claims(exp=int(time.time()) - 5)), None),
    ("nbf in the future", lambda: sign(claims(nbf=int(time.time()) + 600)), "not yet valid"),
    ("nbf within leeway", lambda: sign(claims(nbf=int(time.time()) + 5)), None),
    ("iat in the future", lambda: sign(claims(iat=int(time.time()) + 600)), "from the future"),
    ("missing exp", lambda: sign(claims(exp=None)), "no expiry"),
    ("exp as a string", lambda: sign(claims(exp=str(int(time.time()) + 300))), "malformed exp"),
    ("exp as a bool", lambda: sign(claims(exp=True)), "malformed exp"),
    ("exp too large for a float", lambda: sign(claims(exp=10**400)), "malformed exp"),
    ("missing sub", lambda: sign(claims(sub=None)), "no subject"),
    ("alg none", alg_none, "unsigned"),
    ("alg None with a signature", alg_none_signed, "unsigned"),
    ("HS256 keyed with the RSA public key", hs_confusion, "algorithm is not accepted"),
    ("HMAC signature under an RS256 header", hs_confusion_rs_header, "signature is invalid"),
    ("alg outside the pinned list", lambda: sign(claims(), alg="RS384"), "not accepted"),
    ("PS256 not pinned", lambda: sign(claims(), alg="PS256"), "not accepted"),
    (
        "ES256 header on an RSA kid",
        lambda: sign(claims(), EC1, alg="ES256", kid="k1"),
        "no signing",
    ),
    ("signed by an unknown key", lambda: sign(claims(), ATTACKER, kid="k1"), "signature"),
    ("tampered payload", lambda: tamper(sign(claims())), "signature is invalid"),
    ("crit header", lambda: sign(claims(), headers={"crit": ["exp"], "exp": 1}), "extensions"),
    ("five segments (JWE)", lambda: "a.b.c.d.e", "not a signed JWT"),
    ("garbage", lambda: "not-a-token", "not a signed JWT"),
    ("bad base64", lambda: "e30.e30.%%%", "malformed"),
    ("duplicate claim", duplicate_claim, "malformed"),
    ("deeply nested claims", lambda: raw_rs256(b"[" * 5000), "malformed"),
    ("payload not UTF-8", lambda: raw_rs256(b"\xff\xfe"), "malformed"),
    ("scope of wrong type", lambda: sign(claims(scope=5)), "malformed scope"),
    ("oversized", lambda: "a." + "b" * 40000 + ".c", "too large"),
]


def tamper(token: str) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{b64(claims(sub='root'))}.{sig}"


@pytest.mark.parametrize(("make_token", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_table(
    make_verifier: MakeVerifier, make_token: Callable[[], str], error: str | None
) -> None:
    verifier = make_verifier()
    token = make_token()
    if error is None:
        principal = await verifier.verify(token, AUD)
        assert principal.subject == "alice"
        assert principal.audience == AUD
        return
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token, AUD)
    assert caught.value.kind == "invalid_token"
    assert caught.value.status == 401
    assert error in caught.value.description


# -- principal contents --------------------------------------------------------------------


async def test_principal_carries_scopes_roles_attributes(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier()
    principal = await verifier.verify(sign(claims(tenant="acme")), AUD)
    assert isinstance(principal, TokenPrincipal)
    assert principal.issuer == ISS
    assert principal.scopes == frozenset({"mcp:read", "mcp:write"})
    assert principal.roles == ("admin", "ops")
    assert principal.client_id == "cli"
    assert principal.attributes["email"] == "alice@example.com"
    assert principal.attributes["tenant"] == "acme"
    for registered in ("iss", "sub", "aud", "exp", "scope", "roles"):
        assert registered not in principal.attributes
    with pytest.raises(TypeError):
        principal.attributes["email"] = "x"  # type: ignore[index]


async def test_scp_list_nested_roles_and_selected_attributes(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(
        roles_claim="realm_access.roles", attribute_claims=["email", "org.id"], scope_claims=["scp"]
    )
    body = claims(
        scope=None,
        roles=None,
        scp=["tools:call", "resources:read"],
        realm_access={"roles": ["viewer"]},
        org={"id": "o-1"},
    )
    principal = await verifier.verify(sign(body), AUD)
    assert principal.scopes == frozenset({"tools:call", "resources:read"})
    assert principal.roles == ("viewer",)
    assert dict(principal.attributes) == {"email": "alice@example.com", "org.id": "o-1"}


async def test_required_typ(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(required_typ="at+jwt")
    principal = await verifier.verify(sign(claims(), headers={"typ": "application/AT+JWT"}), AUD)
    assert principal.subject == "alice"
    with pytest.raises(AuthError, match="token type"):
        await verifier.verify(sign(claims()), AUD)  # typ JWT: an ID token, say


# -- where keys may come from (never from the token) -------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda ks: {"jku": ks.url("evil")}, id="jku"),
        pytest.param(lambda ks: {"x5u": ks.url("evil")}, id="x5u"),
        pytest.param(lambda ks: {"jwk": public_jwk(ATTACKER, "evil")}, id="embedded jwk"),
    ],
)
async def test_token_cannot_choose_its_keys(
    make_verifier: MakeVerifier, keys: KeyServer, header: Callable[[KeyServer], dict[str, Any]]
) -> None:
    verifier = make_verifier()
    await verifier.verify(sign(claims()), AUD)  # keys cached, so "evil" is an unknown kid
    token = sign(claims(), ATTACKER, kid="evil", headers=header(keys))
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token, AUD)
    assert caught.value.kind == "invalid_token"
    assert keys.hits["evil"] == 0
    # Only the configured JWKS was consulted: the first fetch plus one unknown-kid refetch.
    assert keys.hits["jwks"] == 2
    # The same header on a token the issuer really signed changes nothing either way.
    principal = await verifier.verify(sign(claims(), headers=header(keys)), AUD)
    assert principal.subject == "alice"
    assert keys.hits["evil"] == 0


async def test_unknown_issuer_costs_no_fetch(make_verifier: MakeVerifier, keys: KeyServer) -> None:
    verifier = make_verifier()
    token = sign(claims(iss=keys.url("evil")), ATTACKER, kid="evil")
    with pytest.raises(AuthError, match="not trusted"):
        await verifier.verify(token, AUD)
    assert sum(keys.hits.values()) == 0


# -- rotation and refetch limits -----------------------------------------------------------


async def test_kid_rotation_refetches_once(make_verifier: MakeVerifier, keys: KeyServer) -> None:
    verifier = make_verifier()
    await verifier.verify(sign(claims()), AUD)
    assert keys.hits["jwks"] == 1
    keys.docs["jwks"] = {"keys": [public_jwk(RSA1, "k1"), public_jwk(RSA2, "k2")]}
    principal = await verifier.verify(sign(claims(), RSA2, kid="k2"), AUD)
    assert principal.subject == "alice"
    assert keys.hits["jwks"] == 2
    # Both keys are now cached: no more fetches.
    await verifier.verify(sign(claims(), RSA1, kid="k1"), AUD)
    await verifier.verify(sign(claims(), RSA2, kid="k2"), AUD)
    assert keys.hits["jwks"] == 2


async def test_unknown_kids_are_rate_limited(make_verifier: MakeVerifier, keys: KeyServer) -> None:
    clock = Clock()
    verifier = make_verifier(monotonic=clock, refetch_interval_s=60.0)
    await verifier.verify(sign(claims()), AUD)
    assert keys.hits["jwks"] == 1
    for i in range(20):
        with pytest.raises(AuthError, match="no signing key"):
            await verifier.verify(sign(claims(), ATTACKER, kid=f"made-up-{i}"), AUD)
    assert keys.hits["jwks"] == 2
    # Concurrent strangers share the limit too.
    results = await asyncio.gather(
        *(verifier.verify(sign(claims(), ATTACKER, kid=f"c{i}"), AUD) for i in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(r, AuthError) for r in results)
    assert keys.hits["jwks"] == 2
    # A real rotation inside the window is not seen until the window has passed.
    keys.docs["jwks"] = {"keys": [public_jwk(RSA2, "k2")]}
    with pytest.raises(AuthError):
        await verifier.verify(sign(claims(), RSA2, kid="k2"), AUD)
    clock.now += 61
    assert (await verifier.verify(sign(claims(), RSA2, kid="k2"), AUD)).subject == "alice"
    assert keys.hits["jwks"] == 3


async def test_concurrent_rotation_fetches_once(
    make_verifier: MakeVerifier, keys: KeyServer
) -> None:
    verifier = make_verifier()
    await verifier.verify(sign(claims()), AUD)
    keys.docs["jwks"] = {"keys": [public_jwk(RSA2, "k2")]}
    token = sign(claims(), RSA2, kid="k2")
    principals = await asyncio.gather(*(verifier.verify(token, AUD) for _ in range(25)))
    assert {p.subject for p in principals} == {"alice"}
    assert keys.hits["jwks"] == 2


async def test_ttl_refresh_in_background(make_verifier: MakeVerifier, keys: KeyServer) -> None:
    clock = Clock()
    verifier = make_verifier(monotonic=clock, jwks_ttl_s=300.0)
    await verifier.verify(sign(claims()), AUD)
    clock.now += 299
    await verifier.verify(sign(claims()), AUD)
    assert keys.hits["jwks"] == 1
    clock.now += 2
    # Stale keys keep serving while the refresh runs.
    await verifier.verify(sign(claims()), AUD)
    await wait_for(lambda: verifier.fetch_count(ISS) == 2)
    assert keys.hits["jwks"] == 2


async def test_unreachable_jwks_is_temporary(http: aiohttp.ClientSession) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    config = IssuerConfig(ISS, jwks_uri=f"http://127.0.0.1:{port}/jwks", fetch_timeout_s=2.0)
    verifier = JwtVerifier([config], http)
    with pytest.raises(AuthError) as caught:
        await verifier.verify(sign(claims()), AUD)
    assert caught.value.temporary
    assert caught.value.kind == "invalid_token"


async def test_redirects_are_not_followed(keys: KeyServer, http: aiohttp.ClientSession) -> None:
    verifier = JwtVerifier([IssuerConfig(ISS, jwks_uri=keys.url("redirect"))], http)
    with pytest.raises(AuthError):
        await verifier.verify(sign(claims()), AUD)
    assert keys.hits["redirect"] >= 1
    assert keys.hits["jwks"] == 0


async def test_jwks_skips_unusable_keys(keys: KeyServer, http: aiohttp.ClientSession) -> None:
    keys.docs["mixed"] = {
        "keys": [
            {"kty": "oct", "k": b64(b"s" * 32), "kid": "k1"},  # symmetric from a URL: never
            {**public_jwk(RSA2, "k1"), "use": "enc"},
            {**public_jwk(RSA2, "k1"), "d": "AAAA"},  # private material published by mistake
            {"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"},  # far too short
            "not a key",
            public_jwk(RSA1, "k1"),
        ]
    }
    verifier = JwtVerifier([IssuerConfig(ISS, jwks_uri=keys.url("mixed"))], http)
    assert (await verifier.verify(sign(claims()), AUD)).subject == "alice"
    with pytest.raises(AuthError):
        await verifier.verify(hs256_with(b"s" * 32, claims()), AUD)
    await verifier.aclose()


async def test_jwks_is_bounded_after_decompression(
    keys: KeyServer, http: aiohttp.ClientSession
) -> None:
    document = json.dumps({"keys": [public_jwk(RSA1, "k1")]}).encode()
    keys.gzipped["small"] = document
    # 48 MiB of padding inflated from ~50 KB on the wire: refused, not read whole.
    keys.gzipped["bomb"] = document[:-1] + b', "pad": "' + b"x" * (48 * 1024 * 1024) + b'"}'
    small = JwtVerifier([IssuerConfig(ISS, jwks_uri=keys.url("small"))], http)
    assert (await small.verify(sign(claims()), AUD)).subject == "alice"
    bomb = JwtVerifier([IssuerConfig(ISS, jwks_uri=keys.url("bomb"))], http)
    with pytest.raises(AuthError) as caught:
        await bomb.verify(sign(claims()), AUD)
    assert caught.value.temporary
    assert keys.hits["bomb"] >= 1
    assert set(keys.encodings) == {"identity"}


async def test_prefetch_and_own_session(keys: KeyServer) -> None:
    verifier = JwtVerifier([IssuerConfig(ISS, jwks_uri=keys.url("jwks"))])
    try:
        await verifier.prefetch()
        assert keys.hits["jwks"] == 1
        await verifier.verify(sign(claims()), AUD)
        assert keys.hits["jwks"] == 1
    finally:
        await verifier.aclose()


# -- static keys ---------------------------------------------------------------------------


async def test_static_pem_issuer(make_verifier: MakeVerifier, keys: KeyServer) -> None:
    verifier = make_verifier()
    token = sign(claims(iss=STATIC_ISS), STATIC_RSA, kid=None)
    assert (await verifier.verify(token, AUD)).issuer == STATIC_ISS
    # A kid the static set does not name still finds the kid-less key, with nothing to fetch.
    token = sign(claims(iss=STATIC_ISS), STATIC_RSA, kid="whatever")
    assert (await verifier.verify(token, AUD)).issuer == STATIC_ISS
    assert sum(keys.hits.values()) == 0


async def test_static_jwk_and_ec_keys() -> None:
    configs = [
        IssuerConfig(
            ISS,
            static_keys=[public_jwk(RSA1, "r"), public_jwk(EC1, "e")],
            algorithms=["RS256", "ES256"],
        )
    ]
    verifier = JwtVerifier(configs)
    assert (await verifier.verify(sign(claims(), RSA1, kid="r"), AUD)).subject == "alice"
    assert (await verifier.verify(sign(claims(), EC1, alg="ES256", kid="e"), AUD)).subject
    with pytest.raises(AuthError, match="signature"):
        await verifier.verify(sign(claims(), RSA2, kid="r"), AUD)


async def test_static_hmac_issuer() -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    config = IssuerConfig(ISS, static_keys=[{"kty": "oct", "k": b64(secret)}], algorithms=["HS256"])
    verifier = JwtVerifier([config])
    assert (await verifier.verify(hs256_with(secret, claims()), AUD)).subject == "alice"
    with pytest.raises(AuthError, match="signature"):
        await verifier.verify(hs256_with(b"x" * 32, claims()), AUD)
    with pytest.raises(AuthError, match="algorithm"):
        await verifier.verify(sign(claims()), AUD)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs jwks_uri or static_keys"),
        ({"jwks_uri": "https://a/jwks", "algorithms": ["none"]}, "unsupported"),
        ({"jwks_uri": "https://a/jwks", "algorithms": []}, "must not be empty"),
        ({"static_keys": ["x"], "algorithms": ["RS256", "HS256"]}, "do not mix"),
        ({"jwks_uri": "https://a/jwks", "algorithms": ["HS256"]}, "cannot come from a JWKS"),
        ({"jwks_uri": "http://as.example/jwks"}, "must be https"),
        ({"jwks_uri": "ftp://127.0.0.1/jwks"}, "must be https"),
        ({"jwks_uri": "https://a/jwks", "leeway_s": -1}, "durations"),
    ],
)
def test_issuer_config_is_checked(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IssuerConfig(ISS, **settings)


def test_bad_static_keys_and_duplicate_issuers() -> None:
    private_pem = STATIC_RSA.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(ValueError, match="private key"):
        JwtVerifier([IssuerConfig(ISS, static_keys=[private_pem])])
    config = IssuerConfig(ISS, static_keys=[pem(RSA1)])
    with pytest.raises(ValueError, match="twice"):
        JwtVerifier([config, config])


async def test_short_hmac_secret_never_verifies() -> None:
    short = b"short"
    config = IssuerConfig(ISS, static_keys=[{"kty": "oct", "k": b64(short)}], algorithms=["HS256"])
    with pytest.raises(AuthError, match="no signing key"):
        await JwtVerifier([config]).verify(hs256_with(short, claims()), AUD)


# -- scopes and challenges -----------------------------------------------------------------


async def test_insufficient_scope(make_verifier: MakeVerifier) -> None:
    principal = await make_verifier().verify(sign(claims()), AUD)
    require_scopes(principal, ["mcp:read"])
    with pytest.raises(AuthError) as caught:
        require_scopes(principal, ["mcp:read", "mcp:admin"])
    error = caught.value
    assert (error.kind, error.status, error.scopes) == (
        "insufficient_scope",
        403,
        ("mcp:read", "mcp:admin"),
    )
    header = error.www_authenticate("https://gw/.well-known/oauth-protected-resource/mcp")
    assert 'error="insufficient_scope"' in header
    assert 'scope="mcp:read mcp:admin"' in header
    status, value = required_scopes_error(["tools:call"], "https://gw/.well-known/x")
    assert status == 403
    assert value == (
        'Bearer resource_metadata="https://gw/.well-known/x", error="insufficient_scope", '
        'error_description="this operation requires scope tools:call", scope="tools:call"'
    )


@pytest.mark.parametrize(
    ("headers", "query", "token", "error"),
    [
        ([], (), None, None),
        (["Bearer abc.def-_~+/ghi=="], (), "abc.def-_~+/ghi==", None),
        (["bearer   tok"], (), "tok", None),
        (["Basic dXNlcjpwYXNz"], (), None, None),
        (["Bearer a", "Bearer b"], (), None, "more than one"),
        (["Bearer "], (), None, "empty"),
        (["Bearer a b"], (), None, "malformed"),
        (["Bearer a,Bearer b"], (), None, "malformed"),
        (["Bearer tok"], ("access_token",), None, "only in the Authorization header"),
        ([], ("access_token",), None, "only in the Authorization header"),
    ],
)
def test_extract_bearer(
    headers: list[str], query: tuple[str, ...], token: str | None, error: str | None
) -> None:
    if error is None:
        assert extract_bearer(headers, query_params=query) == token
        return
    with pytest.raises(AuthError) as caught:
        extract_bearer(headers, query_params=query)
    assert caught.value.kind == "invalid_request"
    assert caught.value.status == 400
    assert error in caught.value.description


# -- RFC 9728 metadata and WWW-Authenticate --------------------------------------------------


def test_well_known_paths() -> None:
    assert well_known_path("/mcp") == "/.well-known/oauth-protected-resource/mcp"
    assert well_known_path("/") == "/.well-known/oauth-protected-resource"
    assert well_known_path("team/a/mcp") == "/.well-known/oauth-protected-resource/team/a/mcp"
    assert (
        metadata_url("https://gw.example:8443/mcp")
        == "https://gw.example:8443/.well-known/oauth-protected-resource/mcp"
    )
    assert metadata_url("https://gw.example") == (
        "https://gw.example/.well-known/oauth-protected-resource"
    )
    assert resource_uri("https://gw.example/", "/mcp") == "https://gw.example/mcp"
    assert resource_uri("https://gw.example/tools", "mcp") == "https://gw.example/tools/mcp"
    for bad in ("https://gw.example/mcp#frag", "/mcp", "urn:x:y"):
        with pytest.raises(ValueError):
            metadata_url(bad)


def test_metadata_document() -> None:
    doc = protected_resource_metadata(
        "https://gw.example/mcp",
        ["https://as.example"],
        scopes_supported=["mcp:read", "mcp:write"],
        resource_name="Switchyard",
    )
    assert doc == {
        "resource": "https://gw.example/mcp",
        "authorization_servers": ["https://as.example"],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["mcp:read", "mcp:write"],
        "resource_name": "Switchyard",
    }
    resource = ProtectedResource("https://gw.example/mcp", ("https://as.example",))
    assert resource.path == "/mcp"
    assert resource.well_known_path == "/.well-known/oauth-protected-resource/mcp"
    assert resource.metadata()["resource"] == "https://gw.example/mcp"
    assert resource.challenge() == (
        'Bearer resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcp"'
    )
    with pytest.raises(ValueError):
        protected_resource_metadata("https://gw/mcp", [], scopes_supported=['bad"scope'])
    with pytest.raises(ValueError):
        protected_resource_metadata("https://gw/mcp", [], extra={"resource": "https://x"})


def test_www_authenticate_quoting() -> None:
    assert www_authenticate() == "Bearer"
    header = www_authenticate(
        "invalid_token",
        'bad "quote" \\ and\r\nInjected: yes \u2603',
        'https://gw/.well-known/oauth-protected-resource/mcp?a="b"',
    )
    assert "\r" not in header and "\n" not in header
    assert "error_description=\"bad 'quote' / and??Injected: yes ?\"" in header
    assert 'resource_metadata="https://gw/.well-known/oauth-protected-resource/mcp?a=\\"b\\""' in (
        header
    )
    assert www_authenticate(realm="gw") == 'Bearer realm="gw"'
    with pytest.raises(ValueError):
        www_authenticate('bad"code')
    with pytest.raises(ValueError):
        www_authenticate("insufficient_scope", scope=["two words"])
    with pytest.raises(ValueError):
        www_authenticate("invalid_token", resource_metadata_url="https://gw/\r\nX: y")


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
