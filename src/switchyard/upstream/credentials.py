"""Credentials the gateway presents to HTTP backends: its own, never the client's.

Three kinds, one interface (`Credential.headers`), computed per request:

* `StaticHeaders`: configured headers (API keys from secrets), the same on every request.
* `ClientCredentials`: an OAuth 2.0 client_credentials token for the backend's resource URI
  (RFC 8707), cached and refreshed before it expires.
* `TokenExchange`: RFC 8693, the caller's own verified access token traded for one whose
  audience is the backend, so the backend sees the caller's identity as the authorization
  server asserts it, never as a client-supplied header. Cached per caller token.

Token requests go only to the configured token URL: redirects are refused (a 307 would replay
the client secret to wherever it points), the URL must be https or loopback, and every request
has a deadline. Error messages name the token endpoint but never carry the client secret, the
caller's token or an issued token: they end up in logs and in JSON-RPC errors sent to clients.

Token fetches are single-flight: one request per cache entry however many callers wait, and
the fetch runs in its own task so a caller cancelling does not abort it for the others. After
a failure the error is replayed for `failure_backoff_s` instead of hitting the authorization
server once per backend request; if the token being replaced is still valid it keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from switchyard.upstream import decoded_body
from switchyard.upstream.outbound import Caller
from switchyard.wire.sse import TooLarge

log = logging.getLogger("switchyard.upstream.credentials")

TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"

MAX_RESPONSE_BYTES: Final = 64 * 1024
MAX_TOKEN_BYTES: Final = 16 * 1024
# RFC 6749 leaves expires_in optional; without it, assume a short life so a token the AS has
# since revoked is not reused for long.
DEFAULT_LIFETIME_S: Final = 60.0

# RFC 6750 §2.1 b64token: what can follow "Bearer " in a header without escaping.
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 6749 §5.2: the characters an `error` code may use.
_ERROR_CODE: Final = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


class CredentialError(Exception):
    """No usable backend credential could be obtained.

    ``temporary`` is True when the token endpoint was unreachable or failed (worth a retry,
    503-like); False when it refused the request (misconfiguration, 502-like).
    """

    def __init__(
        self,
        message: str,
        *,
        token_url: str | None = None,
        status: int | None = None,
        error: str | None = None,
        temporary: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.token_url = token_url
        self.status = status
        self.error = error  # the OAuth error code (RFC 6749 §5.2), when the AS gave one
        self.temporary = temporary

    def again(self) -> CredentialError:
        # A stored error is re-raised as a fresh instance: raising one instance repeatedly
        # would grow its traceback with every caller.
        return CredentialError(
            self.message,
            token_url=self.token_url,
            status=self.status,
            error=self.error,
            temporary=self.temporary,
        )


@runtime_checkable
class Credential(Protocol):
    """What the HTTP upstream asks, per request, for the headers that authenticate it."""

    async def headers(self, caller: Caller | None) -> dict[str, str]:
        """Headers to add to one backend request.

        ``caller`` is whoever the request is made for (its ``token`` is the caller's own
        access token, already verified by the gateway, or None when the caller proved who it
        is without one); None only for the gateway's own connection-level traffic.
        """
        ...

    def invalidate(self, subject_token: str | None = None) -> None:
        """Forget a cached token, e.g. after the backend answered 401 to it."""
        ...

    async def aclose(self) -> None:
        """Stop token fetches still under way."""
        ...


class StaticHeaders:
    """Configured headers (secrets already resolved from the environment), sent as they are."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if any(c in value for c in "\r\n\0"):
                # The value is a secret: say which header, never what it holds.
                raise ValueError(f"header {name!r} has a line break or NUL in its value")
        self._headers = dict(headers)

    async def headers(self, caller: Caller | None = None) -> dict[str, str]:
        return dict(self._headers)

    def invalidate(self, subject_token: str | None = None) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticHeaders({sorted(self._headers)!r})"


# -- token cache ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Issued:
    token: str
    lifetime_s: float


class _Slot:
    """One cached token, its refresh point, and the fetch or failure that concerns it."""

    __slots__ = ("error", "expires_at", "inflight", "refresh_at", "retry_at", "token")

    def __init__(self) -> None:
        self.token: str | None = None
        self.refresh_at = 0.0
        self.expires_at = 0.0
        self.error: CredentialError | None = None
        self.retry_at = 0.0
        self.inflight: asyncio.Task[None] | None = None

    def usable(self, now: float) -> str | None:
        return self.token if self.token is not None and now < self.expires_at else None


class _TokenCache:
    """Single-flight fetches into slots, with refresh margins, caps and failure backoff."""

    def __init__(
        self,
        *,
        refresh_margin_s: float,
        failure_backoff_s: float,
        ttl_cap_s: float = math.inf,
    ) -> None:
        if refresh_margin_s < 0 or failure_backoff_s < 0 or ttl_cap_s <= 0:
            raise ValueError("refresh_margin_s and failure_backoff_s must be >= 0, caps > 0")
        self.refresh_margin_s = refresh_margin_s
        self.failure_backoff_s = failure_backoff_s
        self.ttl_cap_s = ttl_cap_s
        self.tasks: set[asyncio.Task[None]] = set()

    async def get(self, slot: _Slot, fetch: Callable[[], Awaitable[_Issued]]) -> str:
        now = time.monotonic()
        if slot.token is not None and now < slot.refresh_at:
            return slot.token
        if slot.inflight is None and slot.error is not None and now < slot.retry_at:
            current = slot.usable(now)
            if current is not None:
                return current
            raise slot.error.again()
        if slot.inflight is None:
            slot.inflight = asyncio.create_task(self._fill(slot, fetch))
            self.tasks.add(slot.inflight)
            slot.inflight.add_done_callback(_settle)
            slot.inflight.add_done_callback(self.tasks.discard)
        # Shielded: a caller that gives up must not cancel the fetch the others wait on.
        await asyncio.shield(slot.inflight)
        current = slot.usable(time.monotonic())
        if current is not None:
            return current
        if slot.error is not None:
            raise slot.error.again()
        raise CredentialError("the token fetch ended without a token")

    async def _fill(self, slot: _Slot, fetch: Callable[[], Awaitable[_Issued]]) -> None:
        started = time.monotonic()
        try:
            issued = await fetch()
        except CredentialError as exc:
            slot.error = exc
            slot.retry_at = time.monotonic() + self.failure_backoff_s
            if slot.usable(time.monotonic()) is not None:
                log.warning("%s; still using the current token until it expires", exc.message)
            return
        finally:
            slot.inflight = None
        lifetime = min(issued.lifetime_s, self.ttl_cap_s)
        # Refresh `margin` early; a token too short-lived for the margin is renewed halfway.
        # Lifetimes count from before the request was sent, so they err on the short side.
        slot.token = issued.token
        slot.refresh_at = started + max(lifetime - self.refresh_margin_s, lifetime / 2)
        slot.expires_at = started + lifetime
        slot.error = None

    async def aclose(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _settle(task: asyncio.Task[None]) -> None:
    # Marks an unexpected exception as retrieved; the callers awaiting the task re-raise it.
    if not task.cancelled():
        task.exception()


# -- the token endpoint --------------------------------------------------------------------


def check_token_url(url: str) -> str:
    """``url`` if a client secret may be sent there, else ValueError (for config checks too)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError("token_url must not carry credentials; use client_id/client_secret")
    if parts.scheme == "https" and parts.hostname:
        return url
    # Plain HTTP would send the client secret in clear text; only loopback (a local AS, tests)
    # is exempt, and only because the operator named this URL in config.
    if parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS:
        return url
    raise ValueError(f"token_url must be https (or http on loopback): {_display_url(url)!r}")


def _display_url(url: str) -> str:
    """The URL without userinfo, query or fragment: safe to put in messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _basic_auth(client_id: str, client_secret: str) -> str:
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Base64, so a ':' in the id or
    # non-ASCII in the secret survives.
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class _Endpoint:
    """POSTs token requests to one token URL as one client, and reads the answers strictly."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        http: aiohttp.ClientSession,
        timeout_s: float,
    ) -> None:
        if not client_id:
            raise ValueError("client_id is empty")
        if not client_secret:
            raise ValueError("client_secret is empty")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.url = check_token_url(token_url)
        self.shown = _display_url(token_url)
        self.client_id = client_id
        self._authorization = _basic_auth(client_id, client_secret)
        self._secret = client_secret
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        return f"<token endpoint {self.shown} client {self.client_id!r}>"

    def _fail(
        self,
        what: str,
        *,
        status: int | None = None,
        error: str | None = None,
        temporary: bool = False,
        hide: tuple[str, ...] = (),
    ) -> CredentialError:
        message = self._redact(f"token endpoint {self.shown}: {what}", hide)
        return CredentialError(
            message, token_url=self.shown, status=status, error=error, temporary=temporary
        )

    def _redact(self, text: str, hide: tuple[str, ...]) -> str:
        for secret in (self._secret, self._authorization.split(" ", 1)[1], *hide):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    async def request(self, form: list[tuple[str, str]], *, hide: tuple[str, ...]) -> _Issued:
        headers = {
            "Authorization": self._authorization,
            "Accept": "application/json",
            "Accept-Encoding": decoded_body.ACCEPT_ENCODING,
        }
        try:
            async with self._http.post(
                self.url,
                data=form,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
                auto_decompress=False,
            ) as resp:
                status = resp.status
                body = await decoded_body.read(resp, MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise self._fail("no answer in time", temporary=True) from None
        except TooLarge:
            raise self._fail("answer larger than 64 KiB", temporary=True) from None
        except ValueError:
            raise self._fail("answer with an undecodable body", temporary=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Only the exception's type: its text may echo request details.
            raise self._fail(f"unreachable ({type(exc).__name__})", temporary=True) from None
        if 300 <= status < 400:
            raise self._fail(f"answered HTTP {status}; redirects are not followed", status=status)
        if status != 200:
            raise self._refused(status, body, hide)
        return self._issued(body, hide)

    def _refused(self, status: int, body: bytes, hide: tuple[str, ...]) -> CredentialError:
        error: str | None = None
        detail = ""
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            doc = json.loads(body)
            if isinstance(doc, dict):
                code = doc.get("error")
                if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
                    error = code
                    detail = f" {code}"
                desc = doc.get("error_description")
                if isinstance(desc, str) and desc:
                    # Redacted before it is cut short: a cut would leave a prefix of a secret
                    # that no longer matches it.
                    text = self._redact(desc[:MAX_RESPONSE_BYTES], hide)[:200]
                    text = "".join(c if c.isprintable() else " " for c in text)
                    detail += f" ({text})"
        return self._fail(
            f"refused the token request: HTTP {status}{detail}",
            status=status,
            error=error,
            temporary=status >= 500 or status == 429,
            hide=hide,
        )

    def _issued(self, body: bytes, hide: tuple[str, ...]) -> _Issued:
        try:
            doc: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise self._fail("token response is not JSON", temporary=True) from None
        if not isinstance(doc, dict):
            raise self._fail("token response is not a JSON object", temporary=True)
        token = doc.get("access_token")
        if (
            not isinstance(token, str)
            or len(token) > MAX_TOKEN_BYTES
            or not _B64TOKEN.fullmatch(token)
        ):
            raise self._fail("token response has no usable access_token")
        token_type = doc.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            # Only bearer tokens are presented; a DPoP-bound or N_A token would need more.
            shown = token_type if isinstance(token_type, str) else type(token_type).__name__
            raise self._fail(f"token_type {shown[:32]!r} is not Bearer", hide=(token, *hide))
        issued_type = doc.get("issued_token_type")
        if issued_type is not None and issued_type not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
            raise self._fail("issued_token_type is not an access token", hide=(token, *hide))
        lifetime = _lifetime(doc.get("expires_in"))
        if lifetime is None:
            raise self._fail("expires_in is not a positive number", hide=(token, *hide))
        return _Issued(token, lifetime)


def _lifetime(value: Any) -> float | None:
    if value is None:
        return DEFAULT_LIFETIME_S
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # some servers send it as a string
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def token_session(*, limit: int = 16) -> aiohttp.ClientSession:
    """An aiohttp session fit for token requests: no cookies kept, no environment proxies.

    A cookie set by the AS must not ride along on later requests, and the session's own
    timeouts are unbounded because each token request carries its own.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
        auto_decompress=False,
    )


# -- the credentials -----------------------------------------------------------------------


class ClientCredentials:
    """The gateway's own token for one backend (OAuth 2.0 client_credentials grant).

    ``resource`` is the backend's URL, sent as the RFC 8707 resource so the token is good only
    there; ``scope`` is optional. The token is shared by every caller of the backend.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        resource: str | None,
        scope: str | None,
        http: aiohttp.ClientSession,
        refresh_margin_s: float = 30.0,
        *,
        timeout_s: float = 10.0,
        failure_backoff_s: float = 1.0,
    ) -> None:
        self._endpoint = _Endpoint(token_url, client_id, client_secret, http, timeout_s)
        self._cache = _TokenCache(
            refresh_margin_s=refresh_margin_s, failure_backoff_s=failure_backoff_s
        )
        self._form: list[tuple[str, str]] = [("grant_type", "client_credentials")]
        if resource:
            self._form.append(("resource", resource))
        if scope:
            self._form.append(("scope", scope))
        self.resource = resource
        self._slot = _Slot()

    def __repr__(self) -> str:
        return f"ClientCredentials({self._endpoint!r}, resource={self.resource!r})"

    async def header(self) -> str:
        """``Bearer <token>``, fetched once and reused until shortly before it expires."""
        return "Bearer " + await self._cache.get(self._slot, self._fetch)

    async def headers(self, caller: Caller | None = None) -> dict[str, str]:
        return {"Authorization": await self.header()}

    def invalidate(self, subject_token: str | None = None) -> None:
        # The next call fetches anew; a fetch under way still completes and is used.
        self._slot.token = None
        self._slot.refresh_at = self._slot.expires_at = 0.0

    async def aclose(self) -> None:
        await self._cache.aclose()

    async def _fetch(self) -> _Issued:
        issued = await self._endpoint.request(self._form, hide=())
        log.info(
            "obtained a client_credentials token from %s for %s (expires in %.0fs)",
            self._endpoint.shown,
            self.resource or "(no resource)",
            issued.lifetime_s,
        )
        return issued


class TokenExchange:
    """The caller's identity carried to a backend (RFC 8693 token exchange).

    The caller's verified access token is the subject token; the AS answers with a token for
    the backend's ``resource`` (RFC 8707 URI) and/or logical ``audience``, keeping the caller
    as ``sub``. Cached per caller token, keyed by its SHA-256 (the raw token is never a key),
    for the token's lifetime but at most ``cache_ttl_cap_s`` so a change at the AS (roles,
    revocation) reaches the backend within that bound.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: aiohttp.ClientSession,
        resource: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
        cache_ttl_cap_s: float = 300.0,
        refresh_margin_s: float = 30.0,
        timeout_s: float = 10.0,
        failure_backoff_s: float = 1.0,
        max_entries: int = 10_000,
    ) -> None:
        if not resource and not audience:
            # Without a target the AS may hand back a token for the gateway itself, which the
            # backend would then be accepting on the caller's behalf.
            raise ValueError("token exchange needs a resource or an audience")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._endpoint = _Endpoint(token_url, client_id, client_secret, http, timeout_s)
        self._cache = _TokenCache(
            refresh_margin_s=refresh_margin_s,
            failure_backoff_s=failure_backoff_s,
            ttl_cap_s=cache_ttl_cap_s,
        )
        self._target: list[tuple[str, str]] = []
        if resource:
            self._target.append(("resource", resource))
        if audience:
            self._target.append(("audience", audience))
        if scope:
            self._target.append(("scope", scope))
        self.resource = resource
        self.audience = audience
        self._max_entries = max_entries
        self._slots: OrderedDict[bytes, _Slot] = OrderedDict()

    def __repr__(self) -> str:
        target = self.resource or self.audience
        return f"TokenExchange({self._endpoint!r}, target={target!r})"

    async def header(self, subject_token: str) -> str:
        """``Bearer <token>`` for the backend, on behalf of the caller of ``subject_token``."""
        if not subject_token:
            raise CredentialError(
                "this backend acts on the caller's identity and needs the caller's access "
                "token; the request carried none",
                token_url=self._endpoint.shown,
            )
        slot = self._slot(subject_token)

        async def fetch() -> _Issued:
            return await self._fetch(subject_token)

        return "Bearer " + await self._cache.get(slot, fetch)

    async def headers(self, caller: Caller | None) -> dict[str, str]:
        if caller is None or not caller.token:
            # An API-key caller has no token an authorization server could exchange, and the
            # gateway's own identity must never stand in for a caller's.
            raise CredentialError(
                "this backend acts on the caller's identity and needs the caller's OAuth "
                "access token; "
                + (
                    "the caller authenticated without one"
                    if caller is not None
                    else "no caller to act for"
                ),
                token_url=self._endpoint.shown,
            )
        return {"Authorization": await self.header(caller.token)}

    def invalidate(self, subject_token: str | None = None) -> None:
        if subject_token is None:
            self._slots.clear()
        else:
            self._slots.pop(_key(subject_token), None)

    async def aclose(self) -> None:
        await self._cache.aclose()

    @property
    def cached(self) -> int:
        return len(self._slots)

    def _slot(self, subject_token: str) -> _Slot:
        key = _key(subject_token)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            return slot
        slot = self._slots[key] = _Slot()
        # Evicting a slot whose fetch is under way is harmless: its waiters hold the slot.
        while len(self._slots) > self._max_entries:
            self._slots.popitem(last=False)
        return slot

    async def _fetch(self, subject_token: str) -> _Issued:
        form = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            *self._target,
        ]
        issued = await self._endpoint.request(form, hide=(subject_token,))
        log.debug(
            "exchanged a caller token at %s for %s (expires in %.0fs)",
            self._endpoint.shown,
            self.resource or self.audience,
            issued.lifetime_s,
        )
        return issued


def _key(subject_token: str) -> bytes:
    return hashlib.sha256(subject_token.encode()).digest()


class CallerAssertion:
    """Token exchange for requests made on a caller's behalf; the gateway's own credentials
    (client credentials of the same client) for its connection-level traffic, which has no
    caller: the handshake, listings, subscriptions. Which is which is said explicitly by the
    request (`Outbound.caller`), never inferred from a missing token: a caller without an
    exchangeable token is refused, not served as the gateway."""

    def __init__(self, own: ClientCredentials, exchange: TokenExchange) -> None:
        self._own = own
        self._exchange = exchange

    async def headers(self, caller: Caller | None) -> dict[str, str]:
        if caller is None:
            return await self._own.headers(None)
        return await self._exchange.headers(caller)

    def invalidate(self, subject_token: str | None = None) -> None:
        if subject_token is None:
            self._own.invalidate()
        else:
            self._exchange.invalidate(subject_token)

    async def aclose(self) -> None:
        await self._own.aclose()
        await self._exchange.aclose()


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    """A backend's configured credentials, built into a `Credential` inside the event loop."""

    kind: str  # "client_credentials" | "token_exchange"
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    resource: str | None = None
    audience: str | None = None
    scope: str | None = None
    lists_max_principals: int = 1000
    """token_exchange: principals whose own lists one backend keeps (least recently used
    forgotten first; see caller_lists.py)."""
    lists_idle_s: float = 900.0
    """token_exchange: a principal's own lists are forgotten after this long unused."""

    def build(self, http: aiohttp.ClientSession) -> Credential:
        own = ClientCredentials(
            self.token_url, self.client_id, self.client_secret, self.resource, self.scope, http
        )
        if self.kind == "client_credentials":
            return own
        exchange = TokenExchange(
            self.token_url,
            self.client_id,
            self.client_secret,
            http=http,
            resource=self.resource,
            audience=self.audience,
            scope=self.scope,
        )
        return CallerAssertion(own, exchange)
