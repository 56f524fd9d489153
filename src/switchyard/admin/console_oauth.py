"""The web console as an OAuth client of the issuer it offers sign-in with: the issuer's
metadata (RFC 8414, else OpenID discovery), the authorization request's URL, and the code
exchanged for an access token (RFC 6749 §4.1, with the PKCE verifier of RFC 7636). What the
token says is decided elsewhere, by the verifier `/mcp` uses."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import aiohttp

from switchyard.auth.authenticator import Authenticator
from switchyard.config.schema import ConsoleOAuthConfig

log = logging.getLogger("switchyard.admin.console")

CALLBACK: Final = "/admin/console/oauth/callback"
MAX_REPLY: Final = 256 * 1024
TIMEOUT_S: Final = 5.0
METADATA_TTL_S: Final = 300.0
WELL_KNOWN: Final = ("oauth-authorization-server", "openid-configuration")
LOOPBACK: Final = ("localhost", "127.0.0.1", "::1")
_HOST: Final = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


class SignInRefused(Exception):
    """A sign-in step refused: the status and the sentence the page shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def redirect_uri(settings: ConsoleOAuthConfig, authenticator: Authenticator) -> str:
    """Where the issuer sends the browser back: configured, or beside `/mcp`'s resource URI
    (`auth.public_url`), the same on every replica."""
    if settings.redirect_uri:
        return settings.redirect_uri
    return authenticator.resource.resource.removesuffix("/mcp") + CALLBACK


def origin(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, or None. It goes into a CSP header and the
    URL into `Location`, so anything but a plain host and port is refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not _HOST.fullmatch(parts.netloc):
        return None
    if not url.isprintable() or " " in url:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def trusted_endpoint(url: str) -> bool:
    """What the gateway itself calls at the issuer: https, or http on loopback (a local
    issuer, tests) — the rule `jwks_uri` follows."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK


class IssuerClient:
    def __init__(self) -> None:
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def authorization_origin(self, issuer: str) -> str | None:
        """Where the sign-in button's answer sends the browser; the page's CSP must allow it
        (`form-action` covers the redirect after a form). The issuer's own origin when its
        metadata cannot be read now (the button then explains why)."""
        try:
            endpoint = (await self.metadata(issuer)).get("authorization_endpoint")
        except SignInRefused:
            endpoint = None
        return origin(endpoint if isinstance(endpoint, str) else issuer)

    async def authorization_url(self, issuer: str, params: dict[str, str]) -> str:
        endpoint = (await self.metadata(issuer)).get("authorization_endpoint")
        if not isinstance(endpoint, str) or origin(endpoint) is None:
            raise SignInRefused(502, "The issuer publishes no authorization endpoint.")
        joiner = "&" if urlsplit(endpoint).query else "?"
        return endpoint + joiner + urlencode(params)

    async def exchange(
        self,
        settings: ConsoleOAuthConfig,
        issuer: str,
        code: str,
        verifier: str,
        redirect: str,
    ) -> str:
        """The access token the issuer gives for `code` and this sign-in's PKCE verifier."""
        endpoint = (await self.metadata(issuer)).get("token_endpoint")
        if not isinstance(endpoint, str) or not trusted_endpoint(endpoint):
            raise SignInRefused(502, "The issuer publishes no usable token endpoint.")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "code_verifier": verifier,
            "client_id": settings.client_id,
        }
        auth = None
        if settings.client_secret_env:
            secret = os.environ.get(settings.client_secret_env)
            if not secret:
                log.error("console OAuth: %s is not set", settings.client_secret_env)
                raise SignInRefused(503, "The console's OAuth client secret is not set.")
            auth = aiohttp.BasicAuth(settings.client_id, secret)
        try:
            status, body = await self._post(endpoint, form, auth)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise SignInRefused(502, "The issuer could not be reached.") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if status != 200 or not isinstance(token, str):
            error = body.get("error") if isinstance(body, dict) else None
            raise SignInRefused(403, f"The issuer refused the code: {error or status}.")
        return token

    async def metadata(self, issuer: str) -> dict[str, Any]:
        """RFC 8414 metadata (or OpenID discovery's), naming exactly this issuer; cached."""
        cached = self._metadata.get(issuer)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        for name in WELL_KNOWN:
            url = issuer.rstrip("/") + "/.well-known/" + name
            if not trusted_endpoint(url):
                break
            try:
                status, document = await self._get(url)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            if status == 200 and isinstance(document, dict) and document.get("issuer") == issuer:
                self._metadata[issuer] = (time.monotonic() + METADATA_TTL_S, document)
                return document
        raise SignInRefused(502, "The issuer's metadata could not be read.")

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8), trust_env=False
            )
        return self._http

    async def _get(self, url: str) -> tuple[int, Any]:
        async with self._client().get(
            url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
        ) as resp:
            return resp.status, await _json(resp)

    async def _post(
        self, url: str, form: dict[str, str], auth: aiohttp.BasicAuth | None
    ) -> tuple[int, Any]:
        async with self._client().post(
            url,
            data=form,
            auth=auth,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            headers={"Accept": "application/json"},
        ) as resp:
            return resp.status, await _json(resp)


async def _json(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.content.read(MAX_REPLY + 1)
    if len(raw) > MAX_REPLY:
        raise ValueError("reply too large")
    return json.loads(raw) if raw else None
