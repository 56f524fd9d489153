"""The web console at `/admin/console`: server-rendered pages, no script at all, each page a
client of the admin API's operations (the same handlers and the same authorisation).

Sign-in takes an API key or, with `admin.console_oauth`, goes to the configured OAuth issuer
(authorization code with PKCE). The session lives in the `storage:` database, so every gateway
process knows it (`storage.console_sessions`); its cookie (HttpOnly, SameSite=Strict, path
`/admin`) carries a random id the table keeps only a digest of. Every page checks the
credential again — an API key by its prefix and fingerprint against the key store, so a revoked
key signs the console out at once; a token's session ends when the token expires. The sign-in
form and the OAuth redirect are bound to a signed pre-session cookie (login CSRF). Every form
carries the session's CSRF token and, for a write, the ETag of what the page showed: a change
made meanwhile is refused (412), not overwritten. The Content-Security-Policy allows nothing
but this origin's stylesheet.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

from switchyard.admin.console_oauth import CALLBACK, IssuerClient, SignInRefused, redirect_uri
from switchyard.admin.context import Problem, Request
from switchyard.admin.routes import Answer, Operation
from switchyard.admin.table import ROUTES
from switchyard.auth import keys
from switchyard.auth.authenticator import Authenticator, Refusal
from switchyard.auth.jwt_verifier import AuthError
from switchyard.call import Identity, RequestContext
from switchyard.config.schema import ConsoleOAuthConfig
from switchyard.downstream.asgi import (
    BodyTooLarge,
    BodyTooSlow,
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
)
from switchyard.policies.approvals import ApprovalRefused
from switchyard.protocol import methods
from switchyard.protocol.versions import LATEST_MODERN, Era
from switchyard.routing import catalog
from switchyard.storage.console_sessions import ConsoleSession, ConsoleSessionStore
from switchyard.storage.database import StorageError
from switchyard.wire import frame

log = logging.getLogger("switchyard.admin.console")

ROOT: Final = "/admin/console"
COOKIE: Final = "sy_console"
LOGIN_COOKIE: Final = "sy_console_login"
"""The pre-session: binds the sign-in form's token and the OAuth state and PKCE verifier."""
SESSION_S: Final = 8 * 3600.0
LOGIN_S: Final = 600
PAGE_ROWS: Final = 200
"""Rows a page shows at most (a search or a filter narrows the rest)."""
MAX_SESSIONS: Final = 10_000
MAX_SESSIONS_PER_PRINCIPAL: Final = 10
FOLLOW_S: Final = 5
"""Seconds between reloads of the audit page when it follows the trail."""
MAX_FORM: Final = 64 * 1024
CSP: Final = (
    b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
CSS: Final = b"""body{font:14px system-ui,sans-serif;margin:0;color:#222}
nav{background:#1f2d3d;padding:.6em 1em}nav a{color:#fff;margin-right:1.2em;text-decoration:none}
main{padding:1em 1.5em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.error{color:#a00;font-weight:bold}.ok{color:#070;font-weight:bold}
code,pre{background:#f6f6f6;padding:0 .2em}form.inline{display:inline}
input[type=text],input[type=password]{width:22em}
"""
OPERATIONS: Final = {op.name: op for op in ROUTES.operations}


class Console:
    def __init__(self, plane: Any) -> None:
        self.plane = plane
        self._store: ConsoleSessionStore | None = None
        self._secret = b""
        self._opening = asyncio.Lock()
        self._issuers = IssuerClient()

    async def store(self) -> ConsoleSessionStore:
        """The sessions' table, migrated at first use (a 503 Problem while the database is
        down)."""
        async with self._opening:
            if self._store is None:
                store = ConsoleSessionStore(
                    await self.plane.ctx.db(),
                    per_principal=MAX_SESSIONS_PER_PRINCIPAL,
                    total=MAX_SESSIONS,
                )
                try:
                    await store.migrate()
                    self._secret = await store.signing_secret()
                except StorageError:
                    raise Problem(503, "the database is unavailable; retry shortly") from None
                self._store = store
            return self._store

    async def aclose(self) -> None:
        await self._issuers.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == ROOT + "/console.css":
            await respond(send, 200, CSS, [(b"content-type", b"text/css"), *_security()])
            return
        form: dict[str, str] = {}
        if method == "POST":
            try:
                raw = await read_body(receive, MAX_FORM, None)
            except (BodyTooLarge, BodyTooSlow, ClientGone):
                await self._page(send, 400, "Bad request", "<p class=error>Form too large.</p>")
                return
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        elif method != "GET":
            await self._page(send, 405, "Not allowed", "<p class=error>GET or POST.</p>")
            return
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        try:
            store = await self.store()
            if path == ROOT + "/login":
                await self._login(scope, send, method, form)
                return
            if path == ROOT + "/login/oauth" and method == "POST":
                await self._oauth_start(scope, send, form)
                return
            if path == CALLBACK and method == "GET":
                await self._oauth_callback(scope, send, query)
                return
            sid = _cookie(scope, COOKIE)
            session = await store.get(sid) if sid else None
            who = await self._who(session) if session is not None else None
            if sid is not None and session is not None and who is None:
                await store.delete(sid)  # revoked or expired credential: the row goes too
        except SignInRefused as exc:
            await self._page(send, exc.status, "Sign-in refused", _refusal(exc.message))
            return
        except (Problem, StorageError) as exc:
            message = exc.message if isinstance(exc, Problem) else "the database is unavailable"
            await self._page(send, 503, "Unavailable", f"<p class=error>{_e(message)}</p>")
            return
        if who is None or sid is None or session is None:
            await _redirect(send, ROOT + "/login", clear=True)
            return
        if method == "POST":
            if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
                await self._page(send, 403, "Forbidden", "<p class=error>Bad CSRF token.</p>")
                return
            if path == ROOT + "/logout":
                try:
                    await store.delete(sid)
                except StorageError:
                    await self._page(send, 503, "Unavailable", "<p class=error>Try again.</p>")
                    return
                await _redirect(send, ROOT + "/login", clear=True)
                return
        pages: dict[str, Callable[..., Awaitable[tuple[str, str]]]] = {
            ROOT: self._overview,
            ROOT + "/": self._overview,
            ROOT + "/catalog": self._catalog,
            ROOT + "/keys": self._keys,
            ROOT + "/access": self._access,
            ROOT + "/pins": self._pins,
            ROOT + "/audit": self._audit,
            ROOT + "/approvals": self._approvals,
            ROOT + "/playground": self._playground,
        }
        page = pages.get(path)
        if page is None:
            await self._page(send, 404, "Not found", "<p class=error>No such page.</p>")
            return
        ctx = _Call(self.plane, who, scope, receive, send)
        title, body = await page(ctx, method, form, query)
        await self._page(send, 200, title, body, session.csrf, who)

    # -- sign-in ----------------------------------------------------------------------------

    def _authenticator(self) -> Authenticator | None:
        found: Authenticator | None = self.plane.ctx.authenticator()
        return found

    def _pre_session(self, scope: Scope, fresh_for: float = 0) -> str | None:
        """The pre-session's nonce, when its cookie is this deployment's and has `fresh_for`
        seconds left."""
        value = _cookie(scope, LOGIN_COOKIE)
        if value is None:
            return None
        nonce, _, rest = value.partition(".")
        expires, _, mac = rest.partition(".")
        if not nonce or not expires.isdigit() or int(expires) <= time.time() + fresh_for:
            return None
        if not hmac.compare_digest(mac, self._derive("pre-session", f"{nonce}.{expires}")):
            return None
        return nonce

    def _derive(self, purpose: str, nonce: str) -> str:
        digest = hmac.new(self._secret, f"{purpose}|{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _new_pre_session(self) -> tuple[str, bytes]:
        nonce = secrets.token_urlsafe(24)
        expires = int(time.time()) + LOGIN_S
        value = f"{nonce}.{expires}.{self._derive('pre-session', f'{nonce}.{expires}')}"
        # Lax, not Strict: the OAuth callback arrives as a navigation from the issuer's site.
        cookie = f"{LOGIN_COOKIE}={value}; Path={ROOT}; HttpOnly; SameSite=Lax; Max-Age={LOGIN_S}"
        return nonce, cookie.encode()

    def _checked_pre_session(self, scope: Scope, form: dict[str, str]) -> str:
        """The pre-session a sign-in form was posted in, its token compared in constant time."""
        nonce = self._pre_session(scope)
        token = form.get("login_token", "")
        if nonce is None or not hmac.compare_digest(token, self._derive("login", nonce)):
            raise SignInRefused(
                403,
                "The sign-in form's token is missing, expired or not this browser's. "
                "Open the sign-in page again and sign in from there.",
            )
        return nonce

    def _oauth(self) -> tuple[ConsoleOAuthConfig, str] | None:
        """The console's OAuth client and its issuer, when sign-in with it is offered: it must
        be one of the issuers `/mcp` trusts, so the same verifier checks its tokens."""
        settings: ConsoleOAuthConfig | None = self.plane.ctx.settings.console_oauth
        authenticator = self._authenticator()
        if settings is None or authenticator is None or authenticator.tokens is None:
            return None
        trusted = authenticator.tokens.issuers
        issuer = settings.issuer or (trusted[0] if trusted else None)
        if issuer is None or issuer not in trusted:
            return None
        return settings, issuer

    async def _login(self, scope: Scope, send: Send, method: str, form: dict[str, str]) -> None:
        message = ""
        cookies: list[bytes] = []
        if method == "POST":
            self._checked_pre_session(scope, form)
            who, message = await self._key_sign_in(form.get("key", "").strip())
            if who is not None:
                await self._signed_in(send, *who)
                return
        # A form shown now stays usable for a while: a pre-session about to end is renewed.
        nonce = self._pre_session(scope, fresh_for=LOGIN_S / 2)
        if nonce is None:
            nonce, cookie = self._new_pre_session()
            cookies.append(cookie)
        token = self._derive("login", nonce)
        oauth = self._oauth()
        other = ""
        form_action = None
        if oauth is not None:
            form_action = await self._issuers.authorization_origin(oauth[1])
            other = (
                f"<p>or</p><form method=post action='{ROOT}/login/oauth'>"
                f"<input type=hidden name=login_token value='{token}'>"
                f"<button type=submit id=oauth>Sign in with {_e(oauth[1])}</button></form>"
            )
        body = (
            (f"<p class=error>{html.escape(message)}</p>" if message else "")
            + f"<form method=post action='{ROOT}/login'>"
            f"<input type=hidden name=login_token value='{token}'><label>API key "
            "<input type=password name=key autocomplete=off></label> "
            "<button type=submit>Sign in</button></form>" + other
        )
        await self._page(send, 200, "Sign in", body, cookies=cookies, form_action=form_action)

    async def _key_sign_in(self, key: str) -> tuple[tuple[Identity, dict[str, Any]] | None, str]:
        """The identity and the session's fields for an API key, or why not."""
        parsed = keys.parse(key)
        authenticator = self._authenticator()
        if parsed is None or authenticator is None:
            return None, "That key is not valid."
        outcome = await authenticator.authenticate(
            [(b"authorization", f"Bearer {key}".encode())], b""
        )
        if isinstance(outcome, Refusal):
            if outcome.status == 503:
                return None, "The key store is unavailable; try again shortly."
            return None, "That key is not valid."
        try:
            self.plane.authorise(outcome, "read")
        except Problem as exc:
            return None, exc.message
        fingerprint = keys.fingerprint(keys.secret_digest(parsed.prefix, parsed.secret))
        fields = {
            "via": "api_key",
            "ttl_ms": int(SESSION_S * 1000),
            "key_prefix": parsed.prefix,
            "key_fingerprint": fingerprint,
        }
        return (outcome, fields), ""

    async def _signed_in(
        self, send: Send, who: Identity, fields: dict[str, Any], *, landing: bool = False
    ) -> None:
        store = await self.store()
        via, ttl_ms = fields.pop("via"), fields.pop("ttl_ms")
        sid, _ = await store.create(who.key, via, ttl_ms, **fields)
        cookies = [
            f"{COOKIE}={sid}; Path=/admin; HttpOnly; SameSite=Strict; "
            f"Max-Age={max(1, ttl_ms // 1000)}".encode(),
            f"{LOGIN_COOKIE}=; Path={ROOT}; Max-Age=0".encode(),
        ]
        log.info("console sign-in by %s (%s)", who.key, via)
        if not landing:
            await _redirect(send, ROOT + "/", cookies=cookies)
            return
        # The callback is a navigation the issuer's site started, and a browser withholds
        # SameSite=Strict cookies from a redirect it follows there; a page of our own that
        # moves on by itself (no script) starts a same-site navigation instead.
        body = (
            f"<meta http-equiv=refresh content='0; url={ROOT}/'>"
            f"<p>Signed in as {_e(who.name)}. <a id=continue href='{ROOT}/'>Continue</a></p>"
        )
        await self._page(send, 200, "Signed in", body, cookies=cookies)

    async def _oauth_start(self, scope: Scope, send: Send, form: dict[str, str]) -> None:
        nonce = self._checked_pre_session(scope, form)
        oauth = self._oauth()
        authenticator = self._authenticator()
        if oauth is None or authenticator is None:
            raise SignInRefused(404, "Sign-in with an OAuth issuer is not configured.")
        settings, issuer = oauth
        verifier = self._derive("pkce", nonce)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        params = {
            "response_type": "code",
            "client_id": settings.client_id,
            "redirect_uri": redirect_uri(settings, authenticator),
            "state": self._derive("state", nonce),
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            # RFC 8707: a token for `/mcp`, the audience the verifier requires.
            "resource": authenticator.resource.resource,
        }
        if settings.scopes:
            params["scope"] = " ".join(settings.scopes)
        await _redirect(send, await self._issuers.authorization_url(issuer, params))

    async def _oauth_callback(self, scope: Scope, send: Send, query: dict[str, str]) -> None:
        nonce = self._pre_session(scope)
        oauth = self._oauth()
        authenticator = self._authenticator()
        if oauth is None or authenticator is None:
            raise SignInRefused(404, "Sign-in with an OAuth issuer is not configured.")
        if nonce is None:
            raise SignInRefused(
                403, "The sign-in expired or was started in another browser. Sign in again."
            )
        if not hmac.compare_digest(query.get("state", ""), self._derive("state", nonce)):
            raise SignInRefused(403, "The issuer's answer does not belong to this sign-in.")
        if "error" in query:
            raise SignInRefused(403, f"The issuer refused the sign-in: {query['error']}.")
        code = query.get("code", "")
        if not code:
            raise SignInRefused(400, "The issuer's answer carries no code.")
        settings, issuer = oauth
        token = await self._issuers.exchange(
            settings,
            issuer,
            code,
            self._derive("pkce", nonce),
            redirect_uri(settings, authenticator),
        )
        try:
            who, expires_at = await authenticator.token_identity(token)
        except AuthError as exc:
            raise SignInRefused(
                403, f"The issuer's token is not valid here: {exc.description}"
            ) from None
        try:
            self.plane.authorise(who, "read")
        except Problem as exc:
            raise SignInRefused(403, exc.message) from None
        ttl_ms = int(min(SESSION_S, expires_at - time.time()) * 1000)
        if ttl_ms <= 0:
            raise SignInRefused(403, "The issuer's token has already expired.")
        claims = {
            "name": who.name,
            "issuer": who.issuer,
            "roles": list(who.roles),
            "scopes": sorted(who.scopes or ()),
            "attributes": dict(who.attributes),
        }
        await self._signed_in(
            send, who, {"via": "jwt", "ttl_ms": ttl_ms, "claims": claims}, landing=True
        )

    async def _who(self, session: ConsoleSession) -> Identity | None:
        """Who a session stands for now: the API key checked again against the key store; a
        token sign-in's identity while its issuer is still trusted."""
        authenticator = self._authenticator()
        if authenticator is None:
            return None
        if session.via == "api_key":
            if session.key_prefix is None or session.key_fingerprint is None:
                return None
            try:
                return await authenticator.identity_for_key(
                    session.key_prefix, session.key_fingerprint
                )
            except Exception:
                log.exception("API key store unavailable")
                raise Problem(503, "the key store is unavailable; retry shortly") from None
        claims = session.claims or {}
        tokens = authenticator.tokens
        if tokens is None or claims.get("issuer") not in tokens.issuers:
            return None
        return Identity(
            str(claims["name"]),
            tuple(claims.get("roles") or ()),
            dict(claims.get("attributes") or {}),
            frozenset(claims.get("scopes") or ()),
            "jwt",
            issuer=str(claims["issuer"]),
        )

    async def _page(
        self,
        send: Send,
        status: int,
        title: str,
        body: str,
        csrf: str | None = None,
        who: Identity | None = None,
        cookies: list[bytes] | None = None,
        form_action: str | None = None,
    ) -> None:
        nav = ""
        if csrf is not None and who is not None:
            links = "".join(
                f"<a href='{ROOT}{p}'>{n}</a>"
                for p, n in (
                    ("/", "Overview"),
                    ("/catalog", "Catalog"),
                    ("/keys", "Keys"),
                    ("/access", "Access"),
                    ("/pins", "Pins"),
                    ("/audit", "Audit"),
                    ("/approvals", "Approvals"),
                    ("/playground", "Playground"),
                )
            )
            nav = (
                f"<nav>{links}<form class=inline method=post action='{ROOT}/logout'>"
                f"<input type=hidden name=csrf value='{csrf}'>"
                f"<button type=submit>Sign out {html.escape(who.name)}</button></form></nav>"
            )
        text = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)} · Switchyard</title>"
            f"<link rel=stylesheet href='{ROOT}/console.css'></head><body>{nav}<main>"
            f"<h1>{html.escape(title)}</h1>{body.replace('__CSRF__', csrf or '')}</main>"
            "</body></html>"
        )
        headers = [(b"content-type", b"text/html; charset=utf-8"), *_security(form_action)]
        headers += [(b"set-cookie", c) for c in cookies or ()]
        await respond(send, status, text.encode(), headers)

    # -- pages ------------------------------------------------------------------------------

    async def _overview(self, c: _Call, method: str, form: dict[str, str], q: Any) -> Any:
        notice = ""
        if method == "POST":
            name = form.get("name", "")
            try:
                if form.get("action") == "remove":
                    answer = await c.run("deleteBackend", {"name": name}, if_match=form.get("etag"))
                else:
                    try:
                        entry = json.loads(form.get("entry", ""))
                    except ValueError:
                        raise Problem(400, "the entry is not valid JSON") from None
                    answer = await c.run(
                        "putBackend", {"name": name}, body=entry, if_match=form.get("etag")
                    )
                notice = f"<p class=ok>Version {_e(answer.body['version'])} applied.</p>"
            except Problem as exc:
                notice = f"<p class=error>{exc.status}: {_e(exc.message)}</p>"
        status = await c.run("getStatus")
        dynamic = bool(status.body.get("dynamic_registration"))
        etag = _e(status.etag)

        def remove(name: str) -> str:
            if not dynamic:
                return ""
            return (
                "<form class=inline method=post><input type=hidden name=csrf value=__CSRF__>"
                f"<input type=hidden name=etag value='{etag}'>"
                f"<input type=hidden name=name value='{_e(name)}'>"
                "<input type=hidden name=action value=remove><button type=submit>Remove</button>"
                "</form>"
            )

        def traffic(b: dict[str, Any]) -> str:
            if b.get("requests") is None:
                return "<td>-</td><td>-</td>"
            share = f" ({100 * b['errors'] / b['requests']:.1f} %)" if b["requests"] else ""
            return f"<td>{_e(b['requests'])}</td><td>{_e(b['errors'])}{share}</td>"

        rows = "".join(
            f"<tr><td>{_e(b['name'])}</td><td>{_e(b['state'])}</td><td>{_e(b['transport'])}</td>"
            f"<td>{_e(b['tools'])}</td>{traffic(b)}<td>{_e(b['error'])}</td>"
            f"<td>{remove(b['name'])}</td></tr>"
            for b in (await c.run("listBackends")).body["backends"]
        )
        in_flight = status.body.get("in_flight")
        clients = (
            f"<p>Clients: <b>{_e(status.body['sessions'])}</b> open sessions"
            + (f", <b>{_e(in_flight)}</b> requests in flight" if in_flight is not None else "")
            + " on this replica.</p>"
        )
        register = (
            "<h2>Register a backend</h2><form method=post>"
            "<input type=hidden name=csrf value=__CSRF__>"
            f"<input type=hidden name=etag value='{etag}'>"
            "<label>name <input type=text name=name></label><br>"
            "<label>entry (a <code>servers:</code> entry as JSON)<br>"
            "<textarea name=entry rows=4 cols=80></textarea></label><br>"
            "<button type=submit>Register</button></form>"
            if dynamic
            else "<p>Backends come from the configuration file (dynamic registration is off).</p>"
        )
        body = (
            notice + f"<p>Status <b>{_e(status.body['status'])}</b>, configuration version "
            f"<b>{_e(status.body['version'])}</b> (source: {_e(status.body['source'])}).</p>"
            f"{clients}<table><tr><th>backend</th><th>state</th><th>transport</th><th>tools</th>"
            "<th>requests</th><th>failed</th><th>error</th><th></th></tr>"
            f"{rows}</table>{register}"
        )
        return "Overview", body

    async def _catalog(self, c: _Call, method: str, form: dict[str, str], q: Any) -> Any:
        """Every tool, prompt, resource and template served: its backend, pin state and the
        access rules that name it (who may use it)."""
        query = {k: q[k] for k in ("kind", "q", "backend") if q.get(k)}
        try:
            answer = (await c.run("listCatalog", query={**query, "limit": PAGE_ROWS})).body
        except Problem as exc:
            return "Catalog", f"<p class=error>{exc.status}: {_e(exc.message)}</p>"

        def who(rules: list[dict[str, Any]]) -> str:
            if not answer["access_rules"]:
                return "everyone (authentication is off)"
            if not rules:
                return "nobody (no rule names it: denied by default)"
            return "<br>".join(
                f"rule {r['rule']}: {_e(r['effect'])} "
                + "; ".join(
                    f"{k} {_e(', '.join(r[k]))}" for k in ("principals", "roles", "issuers") if r[k]
                )
                if any(r[k] for k in ("principals", "roles", "issuers"))
                else f"rule {r['rule']}: {_e(r['effect'])} every caller"
                for r in rules
            )

        rows = "".join(
            f"<tr><td>{_e(i['kind'])}</td><td>{_e(i['name'])}</td><td>{_e(i['backend'])}</td>"
            f"<td>{_e(i['original'])}</td><td>{_e(i['pin'] or '-')}</td><td>{who(i['rules'])}</td>"
            "</tr>"
            for i in answer["items"]
        )
        kinds = "".join(
            f"<option{' selected' if q.get('kind') == k else ''}>{k}</option>"
            for k in ("", "tool", "prompt", "resource", "template")
        )
        shown = len(answer["items"])
        more = (
            f"<p>{answer['total'] - shown} more: narrow the search.</p>"
            if answer["total"] > shown
            else ""
        )
        body = (
            "<form method=get><label>kind <select name=kind>"
            f"{kinds}</select></label> <label>name <input type=text name=q "
            f"value='{_e(q.get('q', ''))}'></label> <label>backend <input type=text name=backend "
            f"value='{_e(q.get('backend', ''))}'></label> <button type=submit>Find</button></form>"
            f"<p>{answer['total']} items{'' if answer['pinning'] else ' (pinning is off)'}</p>"
            "<table><tr><th>kind</th><th>name</th><th>backend</th><th>backend's name</th>"
            f"<th>pin</th><th>who may use it</th></tr>{rows}</table>{more}"
        )
        return "Catalog", body

    async def _keys(self, c: _Call, method: str, form: dict[str, str], q: Any) -> Any:
        notice = ""
        if method == "POST":
            try:
                if form.get("action") == "revoke":
                    prefix = form.get("prefix", "")
                    await c.run("revokeKey", {"prefix": prefix}, if_match=form.get("etag"))
                    notice = f"<p class=ok>Revoked {_e(prefix)}.</p>"
                else:
                    roles = [r.strip() for r in form.get("roles", "").split(",") if r.strip()]
                    made = await c.run(
                        "createKey",
                        body={"principal": form.get("principal", ""), "roles": roles},
                        if_match=form.get("etag"),
                    )
                    notice = (
                        "<p class=ok>Created. Copy the key now; it is not shown again:</p>"
                        f"<pre id=new-key>{_e(made.body['key'])}</pre>"
                    )
            except Problem as exc:
                notice = f"<p class=error>{exc.status}: {_e(exc.message)}</p>"
        listed = await c.run("listKeys")
        rows = "".join(
            f"<tr><td>{_e(k['prefix'])}</td><td>{_e(k['principal'])}</td>"
            f"<td>{_e(', '.join(k['roles']))}</td><td>{'revoked' if k['revoked'] else 'active'}"
            "</td><td>"
            + (
                ""
                if k["revoked"]
                else f"<form class=inline method=post><input type=hidden name=csrf value=__CSRF__>"
                "<input type=hidden name=action value=revoke>"
                f"<input type=hidden name=prefix value='{_e(k['prefix'])}'>"
                f"<input type=hidden name=etag value='{_e(_key_etag(k))}'>"
                "<button type=submit>Revoke</button></form>"
            )
            + "</td></tr>"
            for k in listed.body["keys"]
        )
        body = (
            notice
            + "<table><tr><th>prefix</th><th>principal</th><th>roles</th><th>state</th><th></th>"
            f"</tr>{rows}</table><h2>New key</h2><form method=post>"
            "<input type=hidden name=csrf value=__CSRF__>"
            f"<input type=hidden name=etag value='{_e(listed.etag)}'>"
            "<label>principal <input type=text name=principal></label> "
            "<label>roles <input type=text name=roles placeholder='dev, admin-read'></label> "
            "<button type=submit>Create</button></form>"
        )
        return "API keys", body

    async def _access(self, c: _Call, method: str, form: dict[str, str], q: Any) -> Any:
        result = ""
        if q.get("principal"):
            query = {k: q[k] for k in ("principal", "roles", "tool", "view") if q.get(k)}
            try:
                found = (await c.run("simulatePermissions", query=query)).body
            except Problem as exc:
                result = f"<p class=error>{exc.status}: {_e(exc.message)}</p>"
            else:
                decision = found.get("decision")
                if decision is not None:
                    verdict = "may call" if decision["allowed"] else "may not call"
                    result += (
                        f"<p id=decision><b>{_e(found['principal'])}</b> {verdict} "
                        f"<code>{_e(decision['tool'])}</code>: {_e(decision['reason'])}</p>"
                    )
                tools = "".join(
                    f"<tr><td>{_e(t['name'])}</td><td>{_e(t['backend'])}</td>"
                    f"<td>{_e(t['rule'])}</td></tr>"
                    for t in found["tools"][:PAGE_ROWS]
                )
                more = len(found["tools"]) - PAGE_ROWS
                result += (
                    f"<h2>Listed for {_e(found['principal'])}: {len(found['tools'])} tools</h2>"
                    "<table><tr><th>tool</th><th>backend</th><th>allowing rule</th></tr>"
                    f"{tools}</table>" + (f"<p>{more} more not shown.</p>" if more > 0 else "")
                )
        rules = (await c.run("listAccessRules")).body["rules"]
        rule_rows = "".join(
            f"<tr><td>{r['index']}</td><td><code>{_e(json.dumps(r))}</code></td></tr>"
            for r in rules
        )
        body = (
            "<form method=get><label>principal <input type=text name=principal></label> "
            "<label>roles <input type=text name=roles></label> "
            "<label>tool <input type=text name=tool></label> "
            "<button type=submit>Simulate</button></form>"
            + result
            + f"<h2>Access rules</h2><table><tr><th>#</th><th>rule</th></tr>{rule_rows}</table>"
        )
        return "Access", body

    async def _pins(self, c: _Call, method: str, form: dict[str, str], q: Any) -> Any:
        notice = ""
        if method == "POST":
            backend, _, rest = form.get("key", "").partition("/")
            kind, _, name = rest.partition("/")
            verb = "approvePin" if form.get("action") == "approve" else "rejectPin"
            try:
                await c.run(
                    verb,
                    {"backend": backend, "kind": kind, "name": name},
                    if_match=form.get("etag"),
                )
                notice = f"<p class=ok>{_e(form.get('key'))}: done.</p>"
            except Problem as exc:
                notice = f"<p class=error>{exc.status}: {_e(exc.message)}</p>"
        pins = (await c.run("listPins", query={"state": "pending"})).body["pins"]
        items = []
        for pin in pins[:100]:
            backend, _, rest = pin["key"].partition("/")
            kind, _, name = rest.partition("/")
            one = await c.run("getPin", {"backend": backend, "kind": kind, "name": name})
            changes = "".join(f"<li>{_e(ch['summary'])}</li>" for ch in one.body.get("changes", []))
            buttons = "".join(
                f"<form class=inline method=post><input type=hidden name=csrf value=__CSRF__>"
                f"<input type=hidden name=key value='{_e(pin['key'])}'>"
                f"<input type=hidden name=etag value='{_e(one.etag)}'>"
                f"<input type=hidden name=action value={verb}>"
                f"<button type=submit>{verb.capitalize()}</button></form> "
                for verb in ("approve", "reject")
            )
            items.append(
                f"<h2>{_e(pin['key'])}</h2><p>{_e(pin['reason'])}</p><ul>{changes}</ul>{buttons}"
            )
        body = notice + ("".join(items) or "<p>Nothing waits for review.</p>")
        return "Pins", body

    async def _audit(self, c: _Call, method: str, form: dict[str, str], q: Any) -> Any:
        """The newest records first, filtered; `follow` reloads the page every few seconds
        (no script: the `Refresh` directive); `verify` checks every chain and checkpoint."""
        filters = {k: q[k] for k in ("event", "principal", "decision") if q.get(k)}
        verified = ""
        if q.get("verify"):
            try:
                report = (await c.run("verifyAudit")).body
                verified = (
                    f"<p class=ok>Verified: {_e(report['records'])} records in "
                    f"{len(report['streams'])} streams, no break.</p>"
                    if report["ok"]
                    else "<p class=error>Broken: "
                    + "<br>".join(_e(b) for b in report["breaks"])
                    + "</p>"
                )
            except Problem as exc:
                verified = f"<p class=error>{exc.status}: {_e(exc.message)}</p>"
        query = {"limit": PAGE_ROWS, "order": "newest", **filters}
        try:
            records = (await c.run("queryAuditRecords", query=query)).body["records"]
        except Problem as exc:
            return "Audit", f"<p class=error>{exc.status}: {_e(exc.message)}</p>"
        rows = "".join(
            f"<tr><td>{_e(r.get('ts'))}</td><td>{_e(r.get('event'))}</td>"
            f"<td>{_e(r.get('principal'))}</td><td>{_e(_first(r, ACTIONS))}</td>"
            f"<td>{_e(' '.join(str(r[k]) for k in ('decision', 'outcome') if r.get(k)))}</td>"
            f"<td>{_e(_first(r, TARGETS))}</td></tr>"
            for r in records
        )
        following = bool(q.get("follow"))
        fields = "".join(
            f"<label>{k} <input type=text name={k} value='{_e(q.get(k, ''))}'></label> "
            for k in ("event", "principal", "decision")
        )
        body = (
            (f"<meta http-equiv=refresh content={FOLLOW_S}>" if following else "")
            + verified
            + f"<form method=get>{fields}<label><input type=checkbox name=follow value=1"
            f"{' checked' if following else ''}> follow</label> "
            "<button type=submit>Filter</button> "
            "<button type=submit name=verify value=1>Verify the trail</button></form>"
            f"<p>The newest {len(records)} matching records"
            f"{f', reloaded every {FOLLOW_S} s' if following else ''}.</p>"
            "<table><tr><th>time</th><th>event</th><th>principal</th><th>action</th>"
            f"<th>outcome</th><th>target</th></tr>{rows}</table>"
        )
        return "Audit", body

    async def _approvals(self, c: _Call, method: str, form: dict[str, str], q: Any) -> Any:
        """The queue of waiting calls this caller may see; deciding is the approvals policy's
        (`may_decide`), exactly as over `/admin/v1/approvals`."""
        approvals = self.plane.ctx.gateway.settings.approvals
        if approvals is None:
            return "Approvals", "<p>Approvals are not enabled.</p>"
        notice = ""
        try:
            store = await approvals.ready()
            if method == "POST":
                approve = form.get("action") == "approve"
                reason = form.get("reason") or None
                try:
                    if not approve and not reason:
                        raise ApprovalRefused(400, "a denial needs a reason")
                    ticket = await approvals.decide(
                        form.get("id", ""), approve, c.who, c.who.key, reason
                    )
                    notice = f"<p class=ok>{_e(ticket.id)}: {_e(ticket.status())}.</p>"
                except ApprovalRefused as exc:
                    notice = f"<p class=error>{exc.status}: {_e(str(exc))}</p>"
            tickets = [t for t in await store.listed("pending") if approvals.may_see(t, c.who)]
        except StorageError:
            return "Approvals", "<p class=error>The ticket store is unavailable.</p>"
        rows = []
        for ticket in tickets:
            t = ticket.as_json()
            refusal = approvals.may_decide(ticket, c.who)
            action = (
                _e(refusal)
                if refusal is not None
                else "<form class=inline method=post><input type=hidden name=csrf value=__CSRF__>"
                f"<input type=hidden name=id value='{_e(t['id'])}'>"
                "<input type=text name=reason placeholder='reason (needed to deny)'> "
                "<button type=submit name=action value=approve>Approve</button> "
                "<button type=submit name=action value=deny>Deny</button></form>"
            )
            rows.append(
                f"<tr><td>{_e(t['id'])}</td><td>{_e(t['principal'])}</td><td>{_e(t['name'])}</td>"
                f"<td>{_e(t['rule'])}</td><td>{_e(t['expiresAt'])}</td><td>{action}</td></tr>"
            )
        body = notice + (
            "<table><tr><th>ticket</th><th>caller</th><th>tool</th><th>rule</th><th>expires</th>"
            f"<th></th></tr>{''.join(rows)}</table>"
            if rows
            else "<p>No call waits for a decision.</p>"
        )
        return "Approvals", body

    async def _playground(self, c: _Call, method: str, form: dict[str, str], q: Any) -> Any:
        """Call a tool as yourself through the same chain as `/mcp` (access rules, limits,
        approvals, redaction all apply): a form made from the tool's input schema."""
        gateway = self.plane.ctx.gateway
        ctx = RequestContext(
            Era.MODERN, LATEST_MODERN, "console", principal=c.who.key, identity=c.who
        )
        # What the caller would list, decided as `/mcp` decides (the catalog, checked against
        # its pins, and the access rules); read from the catalog, not paged through the chain,
        # so the page stays fast with thousands of tools.
        access = gateway.settings.access
        by_name = {
            entry.public: entry
            for entry in gateway.catalog.entries[catalog.TOOLS]
            if access is None or access.allows(c.who, entry)
        }
        # Pages stay small with thousands of tools: a search, and the first matches only.
        needle = str(q.get("q", ""))
        matching = sorted(n for n in by_name if needle in n)
        links = (
            "<form method=get><label>search <input type=text name=q "
            f"value='{_e(needle)}'></label> <button type=submit>Find</button></form>"
            f"<p>{len(matching)} tools</p><ul>"
            + "".join(
                f"<li><a href='{ROOT}/playground?{urlencode({'tool': n})}'>{_e(n)}</a></li>"
                for n in matching[:PAGE_ROWS]
            )
            + "</ul>"
            + (
                f"<p>{len(matching) - PAGE_ROWS} more: narrow the search.</p>"
                if len(matching) > PAGE_ROWS
                else ""
            )
        )
        name = form.get("tool") or q.get("tool")
        entry = by_name.get(name or "")
        tool = frame.decode_any(entry.item) if entry is not None else None
        if tool is None:
            return "Playground", f"<p>Pick a tool you may call:</p>{links}"
        schema = tool.get("inputSchema") or {}
        properties = schema.get("properties") or {}
        result = ""
        if method == "POST":
            try:
                arguments = {
                    key: _argument(prop, form[f"arg.{key}"])
                    for key, prop in properties.items()
                    if form.get(f"arg.{key}", "") != ""
                }
            except ValueError as exc:
                result = f"<p class=error>{_e(exc)}</p>"
            else:
                params = frame.encode({"name": name, "arguments": arguments})
                started = time.perf_counter()
                reply = await gateway.dispatcher.request(ctx, methods.TOOLS_CALL, frame.Raw(params))
                took = (time.perf_counter() - started) * 1000
                answer = reply.result if reply.result is not None else reply.error
                shown = json.dumps(frame.decode_any(answer or b"null"), indent=2)
                result = f"<h2>Result ({took:.1f} ms)</h2><pre id=result>{_e(shown)}</pre>"
        fields = "".join(
            f"<label>{_e(key)} <small>{_e(prop.get('type', 'json'))}</small> "
            f"<input type=text name='arg.{_e(key)}'></label><br>"
            for key, prop in properties.items()
            if isinstance(prop, dict)
        )
        body = (
            f"<p><b>{_e(name)}</b>: {_e(tool.get('description', ''))}</p>"
            "<form method=post><input type=hidden name=csrf value=__CSRF__>"
            f"<input type=hidden name=tool value='{_e(name)}'>{fields}"
            "<button type=submit>Call</button></form>" + result + links
        )
        return "Playground", body


def _argument(prop: Any, text: str) -> Any:
    """A form field as the schema's type: numbers, booleans and JSON for the rest."""
    kind = prop.get("type") if isinstance(prop, dict) else None
    try:
        if kind == "string":
            return text
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean":
            return text.lower() in ("1", "true", "yes", "on")
        return json.loads(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a {kind or 'JSON value'}") from None


class _Call:
    """Runs admin operations as the signed-in caller: the API's own authorisation, handlers
    and audit, without a network hop."""

    def __init__(self, plane: Any, who: Identity, scope: Scope, receive: Receive, send: Send):
        self.plane = plane
        self.who = who
        self.scope = scope
        self.receive = receive
        self.send = send

    async def run(
        self,
        name: str,
        params: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        body: Any = None,
        if_match: str | None = None,
    ) -> Answer:
        op: Operation = OPERATIONS[name]
        self.plane.authorise(self.who, op.access)
        request = Request(
            self.plane.ctx,
            self.who,
            params or {},
            query or {},
            body,
            if_match or None,
            {**self.scope, "path": _path(op, params or {})},
            self.receive,
            self.send,
        )
        assert op.handler is not None
        if op.body is not None:
            self.plane.validate_body(op, body)
        try:
            answer = await op.handler(request)
        except Problem as exc:
            if op.access == "write":
                self.plane.audit(op, request, exc.status, {"error": exc.message})
            raise
        if op.access == "write":
            self.plane.audit(op, request, answer.status, answer.audit or {})
        return answer


def _path(op: Operation, params: dict[str, str]) -> str:
    path = op.path
    for name, value in params.items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    return path


def _key_etag(record: dict[str, Any]) -> str:
    return f'"k-{record["prefix"]}-{"revoked" if record["revoked"] else "active"}"'


ACTIONS: Final = ("action", "method", "approval_event", "pin_event")
"""What a record of each kind did: an admin operation, a request's method, an approval's or a
pin's event."""
TARGETS: Final = ("target", "public", "name", "key")


def _first(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((record[k] for k in keys if record.get(k)), None)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _security(form_action: str | None = None) -> list[tuple[bytes, bytes]]:
    """The headers of every answer. `form_action`: one more origin a form here may lead to
    (the OAuth issuer's, which the sign-in button's answer redirects to)."""
    csp = CSP
    if form_action is not None:
        csp = csp.replace(b"form-action 'self'", b"form-action 'self' " + form_action.encode())
    return [
        (b"content-security-policy", csp),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"cache-control", b"no-store"),
    ]


async def _redirect(
    send: Send, to: str, cookies: list[bytes] | None = None, clear: bool = False
) -> None:
    headers = [(b"location", to.encode()), *_security()]
    headers += [(b"set-cookie", c) for c in cookies or ()]
    if clear:
        headers.append((b"set-cookie", f"{COOKIE}=; Path=/admin; Max-Age=0".encode()))
    await respond(send, 303, b"", headers)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name and v:
                return str(v)
    return None


def _refusal(message: str) -> str:
    return (
        f"<p class=error id=refused>{_e(message)}</p>"
        f"<p><a href='{ROOT}/login'>Back to sign-in</a></p>"
    )
