"""The web console at `/admin/console`: server-rendered pages, no script at all, each page a
client of the admin API's operations (the same handlers and the same authorisation).

Sign-in takes an API key; the session cookie (HttpOnly, SameSite=Strict, path `/admin`) names a
server-side session holding it, and every page authenticates it again, so a revoked key signs
the console out at once. Every form carries the session's CSRF token and, for a write, the
ETag of what the page showed: a change made meanwhile is refused (412), not overwritten. The
Content-Security-Policy allows nothing but this origin's stylesheet.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

from switchyard.admin.context import Problem, Request
from switchyard.admin.routes import Answer, Operation
from switchyard.admin.table import ROUTES
from switchyard.auth.authenticator import Refusal
from switchyard.call import Identity, RequestContext
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
from switchyard.storage.database import StorageError
from switchyard.wire import frame

ROOT: Final = "/admin/console"
COOKIE: Final = "sy_console"
SESSION_S: Final = 8 * 3600.0
PAGE_ROWS: Final = 200
"""Rows a page shows at most (a search or a filter narrows the rest)."""
MAX_SESSIONS: Final = 1000
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


@dataclass(slots=True)
class Session:
    key: str
    csrf: str
    expires: float


class Console:
    def __init__(self, plane: Any) -> None:
        self.plane = plane
        self._sessions: dict[str, Session] = {}

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
        if path == ROOT + "/login":
            await self._login(send, method, form)
            return
        sid, session = self._session(scope)
        who = await self._who(session)
        if who is None or sid is None or session is None:
            await _redirect(send, ROOT + "/login", clear=True)
            return
        if method == "POST":
            if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
                await self._page(send, 403, "Forbidden", "<p class=error>Bad CSRF token.</p>")
                return
            if path == ROOT + "/logout":
                self._sessions.pop(sid, None)
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
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        ctx = _Call(self.plane, who, scope, receive, send)
        title, body = await page(ctx, method, form, query)
        await self._page(send, 200, title, body, session.csrf, who)

    # -- sign-in ----------------------------------------------------------------------------

    async def _login(self, send: Send, method: str, form: dict[str, str]) -> None:
        message = ""
        if method == "POST":
            key = form.get("key", "").strip()
            who = await self._who(Session(key, "", time.time() + 60)) if key else None
            if who is not None:
                try:
                    self.plane.authorise(who, "read")
                except Problem as exc:
                    message = exc.message
                else:
                    sid = secrets.token_urlsafe(32)
                    self._expire()
                    self._sessions[sid] = Session(
                        key, secrets.token_urlsafe(32), time.time() + SESSION_S
                    )
                    await _redirect(send, ROOT + "/", cookie=sid)
                    return
            else:
                message = "That key is not valid."
        body = (
            (f"<p class=error>{html.escape(message)}</p>" if message else "")
            + f"<form method=post action='{ROOT}/login'><label>API key "
            "<input type=password name=key autocomplete=off></label> "
            "<button type=submit>Sign in</button></form>"
        )
        await self._page(send, 200, "Sign in", body)

    def _session(self, scope: Scope) -> tuple[str | None, Session | None]:
        for name, value in scope["headers"]:
            if name != b"cookie":
                continue
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == COOKIE:
                    session = self._sessions.get(v)
                    if session is not None and session.expires > time.time():
                        return v, session
        return None, None

    async def _who(self, session: Session | None) -> Identity | None:
        if session is None:
            return None
        authenticator = self.plane.ctx.authenticator()
        if authenticator is None:
            return None
        headers = [(b"authorization", f"Bearer {session.key}".encode())]
        outcome = await authenticator.authenticate(headers, b"")
        return None if isinstance(outcome, Refusal) else outcome

    def _expire(self) -> None:
        now = time.time()
        for sid in [s for s, v in self._sessions.items() if v.expires <= now]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]

    async def _page(
        self,
        send: Send,
        status: int,
        title: str,
        body: str,
        csrf: str | None = None,
        who: Identity | None = None,
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
        headers = [(b"content-type", b"text/html; charset=utf-8"), *_security()]
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

        rows = "".join(
            f"<tr><td>{_e(b['name'])}</td><td>{_e(b['state'])}</td><td>{_e(b['transport'])}</td>"
            f"<td>{_e(b['tools'])}</td><td>{_e(b['error'])}</td><td>{remove(b['name'])}</td></tr>"
            for b in (await c.run("listBackends")).body["backends"]
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
            "<table><tr><th>backend</th><th>state</th><th>transport</th><th>tools</th>"
            f"<th>error</th><th></th></tr>{rows}</table>{register}"
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
            f"<td>{_e(r.get('principal'))}</td><td>{_e(r.get('action') or r.get('method'))}</td>"
            f"<td>{_e(' '.join(str(r[k]) for k in ('decision', 'outcome') if r.get(k)))}</td>"
            f"<td>{_e(r.get('target') or r.get('public') or r.get('name'))}</td></tr>"
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


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _security() -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", CSP),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"cache-control", b"no-store"),
    ]


async def _redirect(send: Send, to: str, cookie: str | None = None, clear: bool = False) -> None:
    headers = [(b"location", to.encode()), *_security()]
    if cookie is not None:
        headers.append(
            (
                b"set-cookie",
                f"{COOKIE}={cookie}; Path=/admin; HttpOnly; SameSite=Strict; "
                f"Max-Age={int(SESSION_S)}".encode(),
            )
        )
    elif clear:
        headers.append((b"set-cookie", f"{COOKIE}=; Path=/admin; Max-Age=0".encode()))
    await respond(send, 303, b"", headers)
