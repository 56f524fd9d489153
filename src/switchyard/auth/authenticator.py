"""One place that answers "who is this?" for every MCP endpoint: an API key or a JWT, both
presented as `Authorization: Bearer`, turned into the caller's Identity, or a refusal carrying
the status and `WWW-Authenticate` challenge to send."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import parse_qs

from switchyard.auth.jwt_verifier import AuthError, IssuerConfig, JwtVerifier, extract_bearer
from switchyard.auth.key_store import ApiKeyVerifier, KeyStore, open_key_store
from switchyard.auth.keys import KEY_TAG
from switchyard.auth.resource_metadata import ProtectedResource
from switchyard.call import Identity

log = logging.getLogger("switchyard.auth")


# Classes of operations that scopes can gate, by method.
OPERATION_CLASS: Final = {
    "tools/list": "list",
    "prompts/list": "list",
    "resources/list": "list",
    "resources/templates/list": "list",
    "resources/read": "read",
    "prompts/get": "read",
    "completion/complete": "read",
    "resources/subscribe": "read",
    "resources/unsubscribe": "read",
    "subscriptions/listen": "read",
    "tools/call": "call",
    "tasks/get": "call",
    "tasks/result": "call",
    "tasks/list": "call",
    "tasks/cancel": "call",
    "tasks/update": "call",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    challenge: str
    message: str


class Authenticator:
    def __init__(
        self,
        resource: ProtectedResource,
        keys: ApiKeyVerifier | None,
        tokens: JwtVerifier | None,
        key_store: KeyStore | None = None,
        scopes: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.resource = resource
        self.scopes = dict(scopes or {})
        self._views: dict[str, ProtectedResource] = {}
        self.keys = keys
        self.tokens = tokens
        self._key_store = key_store

    @property
    def key_store(self) -> KeyStore | None:
        """Where API keys live (None when API keys are off): the admin plane manages them."""
        return self._key_store

    def resource_for(self, view: str | None) -> ProtectedResource:
        """The protected resource behind an endpoint: `/mcp`, or a virtual server's own."""
        if view is None:
            return self.resource
        found = self._views.get(view)
        if found is None:
            base = self.resource.resource.removesuffix("/mcp")
            found = replace(
                self.resource,
                resource=f"{base}/servers/{view}/mcp",
                resource_name=f"Switchyard virtual server {view}",
            )
            self._views[view] = found
        return found

    async def authenticate(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        query: bytes,
        resource: ProtectedResource | None = None,
    ) -> Identity | Refusal:
        """Who is calling `resource` (default: `/mcp`), whose URI a token must name in `aud`."""
        resource = resource or self.resource
        authorization = [v.decode("latin-1") for k, v in headers if k == b"authorization"]
        params = parse_qs(query.decode("latin-1")) if query else {}
        try:
            token = extract_bearer(authorization, query_params=params.keys())
        except AuthError as exc:
            return Refusal(exc.status, exc.www_authenticate(resource.metadata_url), exc.description)
        if token is None:
            return Refusal(401, resource.challenge(), "Authentication required")
        if token.startswith(KEY_TAG + "_"):
            return await self._api_key(token, resource)
        return await self._jwt(token, resource)

    async def _api_key(self, token: str, resource: ProtectedResource) -> Identity | Refusal:
        if self.keys is None:
            return self._invalid(resource, "API keys are not accepted here")
        try:
            principal = await self.keys.verify(token)
        except Exception:  # the key store is down: not the caller's fault, and not a secret
            log.exception("API key store unavailable")
            return Refusal(503, resource.challenge(), "Authentication temporarily unavailable")
        if principal is None:
            return self._invalid(resource, "Invalid API key")
        return Identity(
            principal.name, principal.roles, dict(principal.attributes), None, "api_key"
        )

    async def identity_for_key(self, prefix: str, fingerprint: str) -> Identity | None:
        """The caller an API key stands for, named by its prefix and fingerprint instead of
        the key itself; None once it is revoked, expired or unknown. Raises when the key store
        is down (not the caller's fault)."""
        if self.keys is None:
            return None
        principal = await self.keys.principal_for(prefix, fingerprint)
        if principal is None:
            return None
        return Identity(
            principal.name, principal.roles, dict(principal.attributes), None, "api_key"
        )

    async def token_identity(self, token: str) -> tuple[Identity, float]:
        """The caller a bearer token stands for at `/mcp` — the verifier, issuers and audience
        `/mcp` uses — and when the token expires (epoch seconds); raises AuthError. For
        sign-ins that hold on to the identity but not the token."""
        if self.tokens is None:
            raise AuthError("invalid_token", "Bearer tokens are not accepted here")
        claims = await self.tokens.verify(token, self.resource.resource)
        who = Identity(
            claims.subject,
            claims.roles,
            dict(claims.attributes),
            claims.scopes,
            "jwt",
            issuer=claims.issuer,
        )
        return who, claims.expires_at

    async def _jwt(self, token: str, resource: ProtectedResource) -> Identity | Refusal:
        if self.tokens is None:
            return self._invalid(resource, "Bearer tokens are not accepted here")
        try:
            claims = await self.tokens.verify(token, resource.resource)
        except AuthError as exc:
            status = 503 if exc.temporary else exc.status
            return Refusal(status, exc.www_authenticate(resource.metadata_url), exc.description)
        return Identity(
            claims.subject,
            claims.roles,
            dict(claims.attributes),
            claims.scopes,
            "jwt",
            token,
            issuer=claims.issuer,
        )

    async def aclose(self) -> None:
        if self._key_store is not None:
            await self._key_store.aclose()
        if self.tokens is not None:
            await self.tokens.aclose()

    def scope_refusal(self, identity: Identity | None, method: str) -> Refusal | None:
        """403 insufficient_scope when a token lacks the scopes this class of operation needs.
        Credentials without scopes (API keys) are governed by access rules alone."""
        if identity is None or identity.scopes is None:
            return None
        needed = self.scopes.get(OPERATION_CLASS.get(method, ""), ())
        missing = [s for s in needed if s not in identity.scopes]
        if not missing:
            return None
        message = f"{method} needs scope {' '.join(needed)}"
        challenge = self.resource.challenge("insufficient_scope", message, list(needed))
        return Refusal(403, challenge, message)

    @staticmethod
    def _invalid(resource: ProtectedResource, message: str) -> Refusal:
        return Refusal(401, resource.challenge("invalid_token", message), message)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    resource: str
    """The `/mcp` endpoint's resource URI: tokens must name it in `aud`."""
    authorization_servers: tuple[str, ...] = ()
    api_keys: bool = True
    data_dir: str | None = None
    database_url: str | None = None
    issuers: tuple[IssuerConfig, ...] = ()
    scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Operation class (list, read, call) -> the scopes a token needs for it."""


async def open_authenticator(settings: AuthSettings) -> Authenticator:
    keys = store = None
    if settings.api_keys:
        store = await open_key_store(dsn=settings.database_url, data_dir=settings.data_dir)
        keys = ApiKeyVerifier(store)
    tokens = JwtVerifier(settings.issuers) if settings.issuers else None
    supported = sorted({scope for needed in settings.scopes.values() for scope in needed})
    resource = ProtectedResource(
        settings.resource,
        settings.authorization_servers or tuple(i.issuer for i in settings.issuers),
        scopes_supported=tuple(supported) or None,
        resource_name="Switchyard MCP gateway",
    )
    return Authenticator(resource, keys, tokens, store, settings.scopes)
