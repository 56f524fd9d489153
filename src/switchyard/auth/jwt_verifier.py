"""JWT bearer tokens for an OAuth 2.1 resource server: signature, issuer, audience, lifetime.

Trust comes only from configuration. The token's ``iss`` selects one configured issuer, and
its keys come from that issuer's configured JWKS URL or static keys; the token's own ``jku``,
``x5u``, ``jwk`` and ``x5c`` headers are never consulted, so a token cannot point us at keys
(security rule R-A2). Algorithms are pinned per issuer and every key is bound to the key type
its algorithm needs, so ``none`` and HS256-signed-with-the-RSA-public-key both fail.

The audience is per call: each MCP endpoint is its own protected resource, and a token is
accepted only at an endpoint whose resource URI is in its ``aud``.

JWKS documents are cached (TTL, refreshed in the background while the old keys keep serving).
A token whose ``kid`` is unknown forces one refetch, but forced refetches are rate-limited per
issuer: a stream of made-up ``kid`` values costs at most one fetch per ``refetch_interval_s``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

from switchyard.auth.resource_metadata import www_authenticate
from switchyard.upstream import decoded_body
from switchyard.wire.sse import TooLarge

log = logging.getLogger("switchyard.auth.jwt")

AuthErrorKind = Literal["invalid_token", "insufficient_scope", "invalid_request"]

# Algorithm → (key type, curve or None for any). Anything not listed is never accepted.
_ALG_KEYS: Final[Mapping[str, tuple[str, str | None]]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
    "HS256": ("oct", None),
    "HS384": ("oct", None),
    "HS512": ("oct", None),
}
SUPPORTED_ALGORITHMS: Final = frozenset(_ALG_KEYS)
_HMAC_MIN_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}

MAX_TOKEN_BYTES: Final = 32 * 1024
MAX_JWKS_BYTES: Final = 512 * 1024
MAX_JWKS_KEYS: Final = 100
# A kid-less token against a kid-less key set tries each fitting key; this caps the CPU a
# single request can spend on signature checks.
MAX_SIGNATURE_ATTEMPTS: Final = 8
MIN_RSA_BITS: Final = 2048

_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_TOKEN68: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_REGISTERED_CLAIMS: Final = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})
_JWS: Final = jwt.PyJWS()


class AuthError(Exception):
    """A request's credentials were refused; ``kind`` is the RFC 6750 error code."""

    def __init__(
        self,
        kind: AuthErrorKind,
        description: str,
        *,
        scopes: Sequence[str] = (),
        temporary: bool = False,
    ) -> None:
        super().__init__(f"{kind}: {description}")
        self.kind: AuthErrorKind = kind
        self.description = description
        # For insufficient_scope: the scopes the refused operation needs.
        self.scopes = tuple(scopes)
        # The token may be fine but its issuer's keys could not be fetched; a caller may
        # prefer 503 over 401 so clients retry instead of re-authenticating.
        self.temporary = temporary

    @property
    def status(self) -> int:
        return {"invalid_token": 401, "insufficient_scope": 403, "invalid_request": 400}[self.kind]

    def www_authenticate(self, resource_metadata_url: str | None) -> str:
        return www_authenticate(
            self.kind, self.description, resource_metadata_url, self.scopes or None
        )


@dataclass(frozen=True, slots=True)
class TokenPrincipal:
    """Who a verified token speaks for, at which resource, with what grants."""

    subject: str
    issuer: str
    scopes: frozenset[str]
    roles: tuple[str, ...]
    attributes: Mapping[str, Any]
    audience: str  # the resource URI the token was accepted for
    expires_at: float
    client_id: str | None = None

    def has_scopes(self, needed: Collection[str]) -> bool:
        return self.scopes.issuperset(needed)


StaticKey = str | Mapping[str, Any]  # PEM public key / certificate, or a JWK


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted token issuer (an authorization server) and how to read its tokens."""

    issuer: str  # compared exactly with the token's `iss`
    jwks_uri: str | None = None
    static_keys: Sequence[StaticKey] = ()
    algorithms: Sequence[str] = ("RS256", "ES256")
    leeway_s: float = 30.0
    subject_claim: str = "sub"
    roles_claim: str | None = "roles"  # dotted path allowed, e.g. "realm_access.roles"
    scope_claims: Sequence[str] = ("scope", "scp")  # first one present wins
    # Claims copied into the principal's attributes; None copies every non-registered claim.
    attribute_claims: Sequence[str] | None = None
    required_typ: str | None = None  # e.g. "at+jwt" (RFC 9068); None accepts any typ
    jwks_ttl_s: float = 300.0
    refetch_interval_s: float = 30.0  # minimum spacing of unknown-kid refetches
    jwks_retry_s: float = 5.0  # after a failed fetch, wait this long before the next
    fetch_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        # Normalise sequences so a config built from YAML lists stays hashable and immutable.
        for name in ("static_keys", "algorithms", "scope_claims"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.attribute_claims is not None:
            object.__setattr__(self, "attribute_claims", tuple(self.attribute_claims))
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        if self.jwks_uri is None and not self.static_keys:
            raise ValueError(f"issuer {self.issuer}: needs jwks_uri or static_keys")
        if not self.algorithms:
            raise ValueError(f"issuer {self.issuer}: algorithms must not be empty")
        unknown = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ValueError(f"issuer {self.issuer}: unsupported algorithms {unknown}")
        symmetric = {a for a in self.algorithms if a.startswith("HS")}
        if symmetric and symmetric != set(self.algorithms):
            # One issuer mixing HMAC and public-key algorithms is the shape of the classic
            # confusion attack; refuse the configuration outright.
            raise ValueError(f"issuer {self.issuer}: do not mix HS* with public-key algorithms")
        if symmetric and self.jwks_uri is not None:
            raise ValueError(f"issuer {self.issuer}: HS* keys cannot come from a JWKS URL")
        if self.jwks_uri is not None:
            _check_jwks_uri(self.jwks_uri)
        for value in (self.leeway_s, self.jwks_ttl_s, self.refetch_interval_s, self.jwks_retry_s):
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"issuer {self.issuer}: durations must be finite and >= 0")
        if self.fetch_timeout_s <= 0:
            raise ValueError(f"issuer {self.issuer}: fetch_timeout_s must be > 0")


def _check_jwks_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return
    # Plain HTTP lets anyone on the path substitute keys; only loopback (a local AS, tests)
    # is exempt, and only because the operator named this URL in config.
    if parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS:
        return
    raise ValueError(f"jwks_uri must be https (or http on loopback): {uri!r}")


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own `alg`, if it pins one
    key: Any  # a cryptography public key, or bytes for oct

    def fits(self, alg: str) -> bool:
        kty, crv = _ALG_KEYS[alg]
        if self.kty != kty or (crv is not None and self.crv != crv):
            return False
        if self.alg is not None and self.alg != alg:
            return False
        return not (kty == "oct" and len(self.key) < _HMAC_MIN_BYTES[alg])


def _key_from_jwk(jwk: Any, *, allow_symmetric: bool) -> _Key:
    if not isinstance(jwk, Mapping):
        raise ValueError("JWK is not an object")
    data = dict(jwk)
    kty = data.get("kty")
    kid = data.get("kid")
    alg = data.get("alg")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("JWK kid is not a string")
    if alg is not None and alg not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"JWK alg {alg!r} is not supported")
    use = data.get("use")
    if use is not None and use != "sig":
        raise ValueError("JWK is not a signing key")
    ops = data.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise ValueError("JWK key_ops does not allow verify")
    try:
        if kty == "RSA":
            if "d" in data:
                raise ValueError("JWK holds private key material")
            rsa_key = RSAAlgorithm.from_jwk(data)
            if not isinstance(rsa_key, rsa.RSAPublicKey):
                raise ValueError("not an RSA public key")
            if rsa_key.key_size < MIN_RSA_BITS:
                raise ValueError(f"RSA key shorter than {MIN_RSA_BITS} bits")
            return _Key(kid, "RSA", None, alg, rsa_key)
        if kty == "EC":
            if "d" in data:
                raise ValueError("JWK holds private key material")
            ec_key = ECAlgorithm.from_jwk(data)
            if not isinstance(ec_key, ec.EllipticCurvePublicKey):
                raise ValueError("not an EC public key")
            return _Key(kid, "EC", _curve_name(ec_key), alg, ec_key)
        if kty == "OKP":
            if "d" in data:
                raise ValueError("JWK holds private key material")
            okp_key = OKPAlgorithm.from_jwk(data)
            if not isinstance(okp_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                raise ValueError("not an EdDSA public key")
            return _Key(kid, "OKP", str(data.get("crv")), alg, okp_key)
        if kty == "oct":
            if not allow_symmetric:
                raise ValueError("symmetric keys are accepted only as static keys")
            return _Key(kid, "oct", None, alg, HMACAlgorithm.from_jwk(data))
    except jwt.InvalidKeyError as exc:
        raise ValueError(f"unusable JWK: {exc}") from None
    raise ValueError(f"unsupported JWK kty {kty!r}")


def _curve_name(key: ec.EllipticCurvePublicKey) -> str | None:
    return {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name)


def _key_from_pem(pem: str) -> _Key:
    data = pem.encode()
    public: Any
    if b"PRIVATE KEY" in data:
        raise ValueError("static key is a private key; configure the public key")
    if b"CERTIFICATE" in data:
        public = x509.load_pem_x509_certificate(data).public_key()
    else:
        public = serialization.load_pem_public_key(data)
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key shorter than {MIN_RSA_BITS} bits")
        return _Key(None, "RSA", None, None, public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _Key(None, "EC", _curve_name(public), None, public)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return _Key(None, "OKP", "Ed25519", None, public)
    if isinstance(public, ed448.Ed448PublicKey):
        return _Key(None, "OKP", "Ed448", None, public)
    raise ValueError(f"unsupported static key type {type(public).__name__}")


def _static_key(value: StaticKey) -> _Key:
    if isinstance(value, str):
        return _key_from_pem(value)
    return _key_from_jwk(value, allow_symmetric=True)


class _FetchError(Exception):
    pass


@dataclass(eq=False)
class _IssuerState:
    config: IssuerConfig
    static: tuple[_Key, ...]
    fetched: tuple[_Key, ...] = ()
    fetched_at: float | None = None  # monotonic time of the last successful fetch
    last_attempt: float | None = None
    last_forced: float | None = None
    fetches: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    background: asyncio.Task[bool] | None = None

    def all_keys(self) -> tuple[_Key, ...]:
        return self.static + self.fetched

    def retry_allowed(self, now: float) -> bool:
        return self.last_attempt is None or now - self.last_attempt >= self.config.jwks_retry_s

    def stale(self, now: float) -> bool:
        return self.fetched_at is None or now - self.fetched_at >= self.config.jwks_ttl_s


def _b64decode(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two parsers picking different duplicates is how claim smuggling works.
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _json_object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw, object_pairs_hook=_no_duplicates)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _numeric_date(value: Any) -> float | None:
    # bool is an int subclass, and PyJWT would even accept "123" strings; RFC 7519 wants a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer is valid JSON
        return None
    return number if math.isfinite(number) else None


def _claim_path(claims: Mapping[str, Any], path: str) -> Any:
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _string_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise AuthError("invalid_token", f"malformed {what} claim")


class JwtVerifier:
    """Verifies bearer JWTs against configured issuers; one instance per gateway."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        http: aiohttp.ClientSession | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._states: dict[str, _IssuerState] = {}
        for config in issuers:
            if config.issuer in self._states:
                raise ValueError(f"issuer configured twice: {config.issuer}")
            static = tuple(_static_key(k) for k in config.static_keys)
            self._states[config.issuer] = _IssuerState(config, static)
        self._http = http
        self._own_http: aiohttp.ClientSession | None = None
        self._clock = clock
        self._monotonic = monotonic

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._states)

    def fetch_count(self, issuer: str) -> int:
        """How many successful JWKS fetches this issuer has had (for metrics and tests)."""
        return self._states[issuer].fetches

    async def prefetch(self) -> None:
        """Fetch every JWKS now (at startup) so the first request does not wait for it."""
        states = [s for s in self._states.values() if s.config.jwks_uri is not None]
        await asyncio.gather(*(self._refresh(s, forced=False) for s in states))

    async def aclose(self) -> None:
        for state in self._states.values():
            if state.background is not None:
                state.background.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await state.background
        if self._own_http is not None:
            await self._own_http.close()
            self._own_http = None

    async def verify(self, token: str, audience: str) -> TokenPrincipal:
        """The principal for ``token`` at the resource ``audience``, or raise AuthError."""
        if not audience:
            raise ValueError("audience (the endpoint's resource URI) is required")
        header, claims = self._parse(token)
        issuer = claims.get("iss")
        if not isinstance(issuer, str):
            raise AuthError("invalid_token", "token has no issuer")
        state = self._states.get(issuer)
        if state is None:
            # No fetch, no lookup: an unconfigured issuer is refused before any I/O.
            raise AuthError("invalid_token", "token issuer is not trusted")
        config = state.config
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.algorithms:
            raise AuthError("invalid_token", "token algorithm is not accepted")
        if config.required_typ is not None:
            typ = header.get("typ")
            if not isinstance(typ, str) or _media_type(typ) != _media_type(config.required_typ):
                raise AuthError("invalid_token", "token type is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("invalid_token", "malformed kid header")
        keys = await self._keys_for(state, alg, kid)
        if not keys:
            raise AuthError(
                "invalid_token",
                "no signing key matches the token",
                temporary=not state.all_keys(),
            )
        self._check_signature(token, keys, alg)
        return self._principal(config, claims, audience)

    # -- parsing -------------------------------------------------------------------------

    def _parse(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(token, str) or not token:
            raise AuthError("invalid_token", "empty token")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("invalid_token", "token too large")
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthError("invalid_token", "token is not a signed JWT")
        try:
            header = _json_object(_b64decode(parts[0]))
            claims = _json_object(_b64decode(parts[1]))
            signature = _b64decode(parts[2])
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise AuthError("invalid_token", "malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or not signature:
            raise AuthError("invalid_token", "unsigned tokens are not accepted")
        if "crit" in header or "b64" in header:
            # We understand no JWS extensions; RFC 7515 §4.1.11 says refuse what is critical.
            raise AuthError("invalid_token", "token uses unsupported JWS extensions")
        return header, claims

    # -- keys ----------------------------------------------------------------------------

    async def _keys_for(self, state: _IssuerState, alg: str, kid: str | None) -> list[_Key]:
        fetched_now = False
        if state.config.jwks_uri is not None:
            now = self._monotonic()
            if state.fetched_at is None:
                if state.retry_allowed(now):
                    fetched_now = await self._refresh(state, forced=False)
            elif state.stale(now):
                self._refresh_in_background(state)
        keys, exact = self._pick(state, alg, kid)
        if kid is not None and not exact and state.config.jwks_uri is not None and not fetched_now:
            # An unknown kid usually means the issuer rotated keys; look once more, but never
            # more than once per refetch_interval_s however many strangers knock.
            await self._refresh(state, forced=True)
            keys, exact = self._pick(state, alg, kid)
        return keys

    @staticmethod
    def _pick(state: _IssuerState, alg: str, kid: str | None) -> tuple[list[_Key], bool]:
        fitting = [k for k in state.all_keys() if k.fits(alg)]
        if kid is None:
            return fitting, False
        exact = [k for k in fitting if k.kid == kid]
        if exact:
            return exact, True
        return [k for k in fitting if k.kid is None], False

    def _refresh_in_background(self, state: _IssuerState) -> None:
        if state.background is not None and not state.background.done():
            return
        if not state.retry_allowed(self._monotonic()):
            return
        state.background = asyncio.get_running_loop().create_task(
            self._refresh(state, forced=False), name=f"jwks-refresh {state.config.issuer}"
        )

    async def _refresh(self, state: _IssuerState, *, forced: bool) -> bool:
        """Fetch the issuer's JWKS unless someone just did; True if new keys were stored."""
        config = state.config
        assert config.jwks_uri is not None
        async with state.lock:
            now = self._monotonic()
            if forced:
                if state.last_forced is not None and now - state.last_forced < (
                    config.refetch_interval_s
                ):
                    return False
                state.last_forced = now
            elif not (state.stale(now) and state.retry_allowed(now)):
                return False  # another task refreshed (or failed) while we waited
            state.last_attempt = now
            try:
                keys = await self._fetch(config.jwks_uri, config.fetch_timeout_s)
            except _FetchError as exc:
                log.warning("JWKS fetch for issuer %s failed: %s", config.issuer, exc)
                return False
            state.fetched = keys
            state.fetched_at = self._monotonic()
            state.fetches += 1
            return True

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is not None:
            return self._http
        if self._own_http is None:
            self._own_http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8), trust_env=False
            )
        return self._own_http

    async def _fetch(self, uri: str, timeout_s: float) -> tuple[_Key, ...]:
        session = await self._session()
        try:
            async with session.get(
                uri,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                headers={
                    "Accept": "application/jwk-set+json, application/json",
                    "Accept-Encoding": decoded_body.ACCEPT_ENCODING,
                },
                auto_decompress=False,
            ) as resp:
                if resp.status != 200:
                    raise _FetchError(f"HTTP {resp.status}")
                body = await decoded_body.read(resp, MAX_JWKS_BYTES)
        except TooLarge:
            raise _FetchError("JWKS document too large") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _FetchError(f"{type(exc).__name__}: {exc}") from None
        try:
            document = _json_object(body)
        except (ValueError, RecursionError) as exc:
            raise _FetchError(f"JWKS is not a JSON object: {exc}") from None
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise _FetchError("JWKS has no keys array")
        keys: list[_Key] = []
        for entry in entries[:MAX_JWKS_KEYS]:
            try:
                keys.append(_key_from_jwk(entry, allow_symmetric=False))
            except ValueError as exc:
                log.info("JWKS %s: skipping a key: %s", uri, exc)
        if not keys:
            # Keep serving the previous keys rather than lock everyone out on a bad document.
            raise _FetchError("JWKS has no usable signing keys")
        return tuple(keys)

    # -- signature and claims ------------------------------------------------------------

    @staticmethod
    def _check_signature(token: str, keys: list[_Key], alg: str) -> None:
        for key in keys[:MAX_SIGNATURE_ATTEMPTS]:
            try:
                _JWS.decode_complete(
                    token,
                    key=key.key,
                    algorithms=[alg],
                    options={"verify_signature": True, "enforce_minimum_key_length": True},
                )
            except jwt.InvalidSignatureError:
                continue
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
            return
        raise AuthError("invalid_token", "token signature is invalid")

    def _principal(
        self, config: IssuerConfig, claims: dict[str, Any], audience: str
    ) -> TokenPrincipal:
        now = self._clock()
        leeway = config.leeway_s
        if "exp" not in claims:
            raise AuthError("invalid_token", "token has no expiry")
        exp = _numeric_date(claims["exp"])
        if exp is None:
            raise AuthError("invalid_token", "malformed exp claim")
        if now >= exp + leeway:
            raise AuthError("invalid_token", "token has expired")
        for name, message in (
            ("nbf", "token is not yet valid"),
            ("iat", "token is from the future"),
        ):
            if name in claims:
                value = _numeric_date(claims[name])
                if value is None:
                    raise AuthError("invalid_token", f"malformed {name} claim")
                if value > now + leeway:
                    raise AuthError("invalid_token", message)
        aud = claims.get("aud")
        audiences = (aud,) if isinstance(aud, str) else aud
        if not isinstance(audiences, tuple | list) or not all(
            isinstance(a, str) for a in audiences
        ):
            raise AuthError("invalid_token", "token has no valid audience")
        if audience not in audiences:
            raise AuthError("invalid_token", "token is not intended for this resource")
        subject = _claim_path(claims, config.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthError("invalid_token", "token has no subject")
        scopes: tuple[str, ...] = ()
        used: set[str] = set(_REGISTERED_CLAIMS)
        for claim in config.scope_claims:
            if claim in claims:
                scopes = _string_list(claims[claim], "scope")
                break
        used.update(config.scope_claims)
        roles: tuple[str, ...] = ()
        if config.roles_claim is not None:
            roles = _string_list(_claim_path(claims, config.roles_claim), "roles")
            used.add(config.roles_claim)
        if config.attribute_claims is None:
            attributes = {k: v for k, v in claims.items() if k not in used}
        else:
            attributes = {
                name: value
                for name in config.attribute_claims
                if (value := _claim_path(claims, name)) is not None
            }
        client_id = claims.get("client_id", claims.get("azp"))
        return TokenPrincipal(
            subject=subject,
            issuer=config.issuer,
            scopes=frozenset(scopes),
            roles=roles,
            attributes=MappingProxyType(attributes),
            audience=audience,
            expires_at=exp,
            client_id=client_id if isinstance(client_id, str) else None,
        )


def _media_type(typ: str) -> str:
    # RFC 7515 §4.1.9: "application/" may be omitted from typ, and media types are
    # case-insensitive.
    typ = typ.strip().lower()
    return typ.removeprefix("application/")


def require_scopes(principal: TokenPrincipal, needed: Sequence[str]) -> None:
    """Raise insufficient_scope (naming every scope ``needed``) unless the token has them all."""
    if not principal.has_scopes(needed):
        missing = sorted(set(needed) - principal.scopes)
        raise AuthError(
            "insufficient_scope",
            f"this operation requires scope {' '.join(missing)}",
            scopes=needed,
        )


def required_scopes_error(
    needed: Sequence[str], resource_metadata_url: str | None
) -> tuple[int, str]:
    """The HTTP status and ``WWW-Authenticate`` value for an operation lacking ``needed``."""
    description = f"this operation requires scope {' '.join(needed)}"
    return 403, www_authenticate("insufficient_scope", description, resource_metadata_url, needed)


def extract_bearer(
    authorization: Sequence[str],
    *,
    query_params: Collection[str] = (),
    form_params: Collection[str] = (),
) -> str | None:
    """The bearer token from a request's Authorization header values, or None if none is sent.

    Tokens are accepted only in the header (R-A3): an ``access_token`` in the query or form is
    refused rather than ignored, since it was probably meant as a credential and has already
    leaked into logs. More than one credential is ambiguous and refused (RFC 6750 §3.1).
    A header with another scheme (Basic, ...) is not a bearer token: None.
    """
    if "access_token" in query_params or "access_token" in form_params:
        raise AuthError(
            "invalid_request", "access tokens are accepted only in the Authorization header"
        )
    if not authorization:
        return None
    if len(authorization) > 1:
        raise AuthError("invalid_request", "more than one Authorization header")
    scheme, _, rest = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip(" ")
    if not token:
        raise AuthError("invalid_request", "empty bearer token")
    if not _TOKEN68.fullmatch(token):
        raise AuthError("invalid_request", "malformed bearer token")
    return token
