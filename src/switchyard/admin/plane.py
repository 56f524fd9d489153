"""The admin plane's HTTP face: authenticate (as `/mcp` does), authorise by role or scope,
validate, dispatch on the route table, answer JSON with ETags, audit every write.

Who may do what:
- `read` operations: a role in `admin.roles` or `admin.read_roles`, or a token scope in
  `admin.scopes` or `admin.read_scopes`;
- `write` operations: a role in `admin.roles` or a scope in `admin.scopes`;
- `caller` operations (approvals, `/v1/tools`): any authenticated caller; the resource decides.
With authentication off the admin operations are refused, unless `admin.local_unauthenticated`
is set and the caller is on a loopback address (then it acts as an admin named `local`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qs

import jsonschema

from switchyard.admin.console import Console
from switchyard.admin.context import AdminContext, Problem, Request
from switchyard.admin.openapi import document
from switchyard.admin.routes import Access, Operation
from switchyard.admin.table import ROUTES
from switchyard.audit.record import AuditEvent
from switchyard.auth.authenticator import Refusal
from switchyard.call import Identity
from switchyard.downstream.asgi import (
    IDENTITY,
    IDENTITY_KEY,
    ASGIApp,
    BodyTooLarge,
    BodyTooSlow,
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
    respond_json,
)
from switchyard.wire import frame

log = logging.getLogger("switchyard.admin")

Admit = Callable[[Scope, Receive, Send, ASGIApp], Awaitable[None]]

PREFIX: Final = "/admin/v1"
CALLER_PREFIXES: Final = ("/admin/v1/approvals", "/approvals/", "/v1/tools")
CONSOLE: Final = "/admin/console"
ALL_PREFIXES: Final = (PREFIX, CONSOLE, "/approvals/", "/v1/tools")
MAX_BODY: Final = 1024 * 1024
LOCAL: Final = "local"


class AdminPlane:
    def __init__(self, ctx: AdminContext, admin_port: int | None = None) -> None:
        self.ctx = ctx
        self.admin_port = admin_port
        """The port of the admin plane's own listener; None: it shares the MCP port."""
        self.routes = ROUTES
        self.admission: Admit | None = None
        """The listener's per-client and memory admission, for the caller operations."""
        self.console = Console(self)
        self._validators: dict[int, jsonschema.protocols.Validator] = {}
        settings = ctx.settings
        self._write_roles = frozenset(settings.roles)
        self._read_roles = frozenset(settings.read_roles) | self._write_roles
        self._write_scopes = frozenset(settings.scopes)
        self._read_scopes = frozenset(settings.read_scopes) | self._write_scopes

    def on_admin_listener(self, scope: Scope) -> bool:
        server = scope.get("server")
        return self.admin_port is not None and server is not None and server[1] == self.admin_port

    def serves(self, scope: Scope) -> bool:
        """Whether this request is the admin plane's to answer. On every request's path: one
        prefix test when the plane shares the MCP port."""
        if self.admin_port is None:
            return bool(scope["path"].startswith(ALL_PREFIXES))
        if self.on_admin_listener(scope):
            return True
        return bool(scope["path"].startswith(CALLER_PREFIXES))

    def document(self) -> dict[str, Any]:
        return document(self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        if scope["path"] == CONSOLE or scope["path"].startswith(CONSOLE + "/"):
            await self.console(scope, receive, send)
            return
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw.split(b"?", 1)[0].decode("latin-1")
        found = self.routes.find(method, path)
        if found is None:
            await _error(send, 404, "not found")
            return
        if isinstance(found, str):
            await _error(send, 405, f"allowed: {found}", [(b"allow", found.encode())])
            return
        op, params = found
        who = await self._who(scope, send, op.access)
        if who is False:
            return
        assert who is not True
        request = Request(self.ctx, who, params, {}, None, None, scope, receive, send)
        if op.raw is not None:
            await self._raw(op, request)
            return
        try:
            self.authorise(who, op.access)
            request.query = self._query(op, scope)
            request.body = await self._body(op, receive)
            request.if_match = _header(scope, b"if-match")
            if op.if_match and request.if_match is None and op.access == "write":
                raise Problem(428, "this change needs If-Match with the resource's current ETag")
            assert op.handler is not None
            answer = await op.handler(request)
        except Problem as exc:
            if op.access == "write":
                self.audit(op, request, exc.status, {"error": exc.message})
            await _error(send, exc.status, exc.message)
            return
        except Exception:
            log.exception("admin operation %s failed", op.name)
            await _error(send, 500, "internal error")
            return
        headers = [(b"cache-control", b"no-store")]
        if answer.etag is not None:
            headers.append((b"etag", answer.etag.encode()))
        if op.access == "write":
            self.audit(op, request, answer.status, answer.audit or {})
        await respond_json(send, answer.status, frame.encode(answer.body), headers)

    async def _raw(self, op: Operation, request: Request) -> None:
        """The approvals' and applications' REST, under the same per-client and memory
        admission as `/mcp` (`admission`, the listener's): REST is no way around it."""
        raw = op.raw
        assert raw is not None
        if request.who is not None:
            request.scope[IDENTITY_KEY] = request.who
        admission = self.admission
        if admission is None:
            await raw(request)
            return

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            request.scope, request.receive, request.send = scope, receive, send
            await raw(request)

        await admission(request.scope, request.receive, request.send, serve)

    async def _who(self, scope: Scope, send: Send, access: Access) -> Identity | bool | None:
        """The caller; False once a refusal was sent."""
        authenticator = self.ctx.authenticator()
        if authenticator is None:
            if access == "caller":
                return None
            if self.ctx.settings.local_unauthenticated and _loopback(scope):
                return Identity(LOCAL, tuple(self.ctx.settings.roles), via=LOCAL, issuer=LOCAL)
            await _error(
                send,
                403,
                "the admin API needs authentication (auth.enabled), or "
                "admin.local_unauthenticated for callers on this machine",
            )
            return False
        outcome = await authenticator.authenticate(scope["headers"], b"")
        if isinstance(outcome, Refusal):
            challenge = (b"www-authenticate", outcome.challenge.encode("latin-1"))
            await _error(send, outcome.status, outcome.message, [challenge])
            return False
        IDENTITY.set(outcome)
        return outcome

    def authorise(self, who: Identity | None, access: Access) -> None:
        if access == "caller" or (who is not None and who.via == LOCAL):
            return
        assert who is not None
        roles = set(who.roles)
        scopes = set(who.scopes or ())
        if access == "write":
            if roles & self._write_roles or scopes & self._write_scopes:
                return
            if roles & self._read_roles or scopes & self._read_scopes:
                raise Problem(403, "read-only: this change needs an admin role")
        elif roles & self._read_roles or scopes & self._read_scopes:
            return
        raise Problem(403, "the admin API needs an admin role or scope")

    def _query(self, op: Operation, scope: Scope) -> dict[str, Any]:
        given = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        out: dict[str, Any] = {}
        for q in op.query:
            values = given.get(q.name)
            if not values:
                if q.required:
                    raise Problem(400, f"{q.name}: required")
                continue
            value: Any = values[0]
            if q.schema.get("type") == "integer":
                try:
                    value = int(value)
                except ValueError:
                    raise Problem(400, f"{q.name}: a whole number") from None
            error = jsonschema.exceptions.best_match(self._validator(q.schema).iter_errors(value))
            if error is not None:
                raise Problem(400, f"{q.name}: {error.message}")
            out[q.name] = value
        return out

    async def _body(self, op: Operation, receive: Receive) -> Any:
        if op.body is None:
            return None
        try:
            raw = await read_body(receive, MAX_BODY, None)
        except (BodyTooLarge, BodyTooSlow, ClientGone):
            raise Problem(400, "the body must be JSON of at most 1 MiB") from None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise Problem(400, "the body is not valid JSON") from None
        self.validate_body(op, body)
        return body

    def validate_body(self, op: Operation, body: Any) -> None:
        assert op.body is not None
        error = jsonschema.exceptions.best_match(self._validator(op.body).iter_errors(body))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            raise Problem(400, f"{where or 'body'}: {error.message}")

    def _validator(self, schema: dict[str, Any]) -> Any:
        found = self._validators.get(id(schema))
        if found is None:
            found = jsonschema.Draft202012Validator(schema)
            self._validators[id(schema)] = found
        return found

    def audit(
        self, op: Operation, request: Request, status: int, extra: dict[str, Any] | Any
    ) -> None:
        fields: dict[str, Any] = {
            "action": op.name,
            "method": op.method,
            "path": request.scope["path"],
            "principal": request.actor,
            "outcome": status,
        }
        for key, value in dict(extra).items():
            fields.setdefault(key, value)
        log.info("admin %s by %s: %d %s", op.name, request.actor, status, fields.get("target", ""))
        audit = self.ctx.gateway.audit
        if audit is not None:
            audit.submit(AuditEvent("admin", time.time(), fields))

    async def aclose(self) -> None:
        await self.console.aclose()
        await self.ctx.aclose()


# A request relayed by something on this machine (a reverse proxy) carries one of these: its
# TCP peer is loopback, its caller need not be (and, with no proxy trusted, nothing says who).
_FORWARDING: Final = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})


def _loopback(scope: Scope) -> bool:
    """Whether the caller is on this machine: a loopback peer, and no sign of a relay."""
    client = scope.get("client")
    if not client or any(name in _FORWARDING for name, _ in scope["headers"]):
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await respond_json(send, status, frame.encode({"error": message}), headers)
