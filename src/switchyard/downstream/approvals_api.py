"""HTTP for approvals: the approvers' API and page, and the applications' explicit-execution API.

- `GET /admin/v1/approvals[?status=]`, `GET /admin/v1/approvals/{id}`,
  `POST /admin/v1/approvals/{id}/approve|deny` (JSON body `{"reason": ...}`, required to deny):
  authenticated; a caller sees its own tickets, an approver role sees all; who may decide is
  the policy's rule (`Approvals.may_decide`).
- `GET /approvals/{id}`: the approval page the URL elicitation points at (same credential).
- `GET /v1/tools[?format=mcp|openai|anthropic]`: the tools this credential may call, as MCP
  tools or as the function-calling shapes LLM APIs take.
- `POST /v1/tools/call`: execute one proposed call (`{name, arguments}`, an OpenAI
  `tool_call`, or an Anthropic `tool_use` block) through the same policy chain as `/mcp`; 200
  with the result, 202 with the ticket when it needs approval, 4xx with the refusal.
"""

from __future__ import annotations

import html
import json
from typing import Any, Final
from urllib.parse import parse_qs

from switchyard.call import Identity, RequestContext
from switchyard.downstream.asgi import (
    BodyTooLarge,
    BodyTooSlow,
    ClientGone,
    Receive,
    Scope,
    Send,
    current_traceparent,
    current_tracestate,
    read_body,
    respond,
    respond_json,
)
from switchyard.gateway import Gateway
from switchyard.policies.approvals import ApprovalRefused
from switchyard.protocol import methods
from switchyard.protocol.versions import LATEST_MODERN, Era
from switchyard.storage.database import StorageError
from switchyard.storage.tickets import STATES
from switchyard.wire import frame

ADMIN_PREFIX: Final = "/admin/v1/approvals"
PAGE_PREFIX: Final = "/approvals/"
TOOLS_PATH: Final = "/v1/tools"
CALL_PATH: Final = "/v1/tools/call"
PATHS: Final = (ADMIN_PREFIX, PAGE_PREFIX, TOOLS_PATH)
MAX_BODY: Final = 1024 * 1024
MAX_LIST_PAGES: Final = 100


def handles(path: str) -> bool:
    return path.startswith(PATHS)


async def _error(send: Send, status: int, message: str) -> None:
    await respond_json(send, status, frame.encode({"error": message}))


async def serve(
    gateway: Gateway, scope: Scope, receive: Receive, send: Send, who: Identity | None
) -> None:
    path: str = scope["path"]
    method: str = scope["method"]
    if path == TOOLS_PATH and method == "GET":
        await _list_tools(gateway, scope, send, who)
    elif path == CALL_PATH and method == "POST":
        await _call_tool(gateway, scope, receive, send, who)
    elif path.startswith((ADMIN_PREFIX, PAGE_PREFIX)):
        await _approvals(gateway, scope, receive, send, who)
    else:
        await _error(send, 404, "not found")


def _context(gateway: Gateway, who: Identity | None, view: str | None) -> RequestContext:
    return RequestContext(
        Era.MODERN,
        LATEST_MODERN,
        "rest",
        principal=who.key if who is not None else None,
        identity=who,
        view=view,
        traceparent=current_traceparent(),
        tracestate=current_tracestate(),
    )


async def _list_tools(gateway: Gateway, scope: Scope, send: Send, who: Identity | None) -> None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    shape = (query.get("format") or ["mcp"])[0]
    if shape not in ("mcp", "openai", "anthropic"):
        await _error(send, 400, "format: mcp, openai or anthropic")
        return
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        params = frame.encode({"cursor": cursor} if cursor else {})
        reply = await gateway.dispatcher.request(
            _context(gateway, who, None), methods.TOOLS_LIST, frame.Raw(params)
        )
        if reply.result is None:
            await respond_json(send, 502, frame.encode({"error": _message(reply.error)}))
            return
        page = frame.decode_any(reply.result)
        tools.extend(page.get("tools") or [])
        cursor = page.get("nextCursor")
        if not cursor:
            break
    if shape == "openai":
        body: Any = {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": t["name"],
                        "description": t.get("description", ""),
                        "parameters": t.get("inputSchema") or {"type": "object"},
                    },
                }
                for t in tools
            ]
        }
    elif shape == "anthropic":
        body = {
            "tools": [
                {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "input_schema": t.get("inputSchema") or {"type": "object"},
                }
                for t in tools
            ]
        }
    else:
        body = {"tools": tools}
    await respond_json(send, 200, frame.encode(body))


def _proposed(body: Any) -> tuple[str, Any, str | None] | str:
    """(name, arguments, call id) from any accepted shape; else what is wrong."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if isinstance(body.get("function"), dict):  # OpenAI tool_call
        fn = body["function"]
        raw = fn.get("arguments", "{}")
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return "function.arguments is not valid JSON"
        return str(fn.get("name", "")), arguments, body.get("id")
    if body.get("type") == "tool_use":  # Anthropic content block
        return str(body.get("name", "")), body.get("input", {}), body.get("id")
    return str(body.get("name", "")), body.get("arguments", {}), body.get("id")


async def _call_tool(
    gateway: Gateway, scope: Scope, receive: Receive, send: Send, who: Identity | None
) -> None:
    try:
        raw = await read_body(receive, MAX_BODY, None)
        body = json.loads(raw) if raw else None
    except (BodyTooLarge, BodyTooSlow, ClientGone, ValueError):
        await _error(send, 400, "the body must be a JSON object of at most 1 MiB")
        return
    proposed = _proposed(body)
    if isinstance(proposed, str):
        await _error(send, 400, proposed)
        return
    name, arguments, call_id = proposed
    if not name or not isinstance(arguments, dict):
        await _error(send, 400, "a call needs a tool `name` and object `arguments`")
        return
    params = frame.encode({"name": name, "arguments": arguments})
    reply = await gateway.dispatcher.request(
        _context(gateway, who, None), methods.TOOLS_CALL, frame.Raw(params)
    )
    out: dict[str, Any] = {"id": call_id, "name": name} if call_id else {"name": name}
    if reply.result is None:
        error = frame.decode_any(reply.error) if reply.error is not None else {}
        out.update(status="refused", error=error)
        status = reply.http.status if reply.http is not None and reply.http.status else 403
        await respond_json(send, status, frame.encode(out))
        return
    result = frame.decode_any(reply.result)
    result.pop("resultType", None)
    approval = (result.get("structuredContent") or {}).get("approval")
    if result.get("isError") and isinstance(approval, dict) and "id" in approval:
        out.update(status="approval_required", approval=approval, result=result)
        await respond_json(send, 202, frame.encode(out))
        return
    out.update(status="completed", result=result)
    await respond_json(send, 200, frame.encode(out))


def _message(error: bytes | None) -> str:
    if error is None:
        return "no answer"
    decoded = frame.decode_any(error)
    return str(decoded.get("message", "")) if isinstance(decoded, dict) else "error"


async def _approvals(
    gateway: Gateway, scope: Scope, receive: Receive, send: Send, who: Identity | None
) -> None:
    approvals = gateway.settings.approvals
    if approvals is None:
        await _error(send, 404, "approvals are not enabled")
        return
    if who is None:
        await _error(send, 403, "deciding approvals over HTTP needs authentication (`auth:`)")
        return
    path: str = scope["path"]
    method: str = scope["method"]
    try:
        store = await approvals.ready()
        if path.startswith(PAGE_PREFIX):
            ticket = await store.get(path[len(PAGE_PREFIX) :])
            if ticket is None or not approvals.may_see(ticket, who) or method != "GET":
                await respond(send, 404, b"Not Found", [(b"content-type", b"text/plain")])
                return
            await respond(
                send,
                200,
                _page(ticket.as_json(), approvals.may_decide(ticket, who)).encode(),
                [(b"content-type", b"text/html; charset=utf-8")],
            )
            return
        rest = path[len(ADMIN_PREFIX) :].strip("/")
        if not rest:
            if method != "GET":
                await _error(send, 405, "GET lists tickets")
                return
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            status = (query.get("status") or [None])[0]
            if status is not None and status not in STATES:
                await _error(send, 400, f"status: one of {', '.join(STATES)}")
                return
            tickets = [t for t in await store.listed(status) if approvals.may_see(t, who)]
            await respond_json(
                send, 200, frame.encode({"approvals": [t.as_json() for t in tickets]})
            )
            return
        parts = rest.split("/")
        ticket_id = parts[0]
        if len(parts) == 1 and method == "GET":
            ticket = await store.get(ticket_id)
            if ticket is None or not approvals.may_see(ticket, who):
                await _error(send, 404, f"no approval ticket {ticket_id}")
                return
            await respond_json(send, 200, frame.encode(ticket.as_json()))
            return
        if len(parts) != 2 or parts[1] not in ("approve", "deny") or method != "POST":
            await _error(send, 404, "not found")
            return
        try:
            raw = await read_body(receive, MAX_BODY, None)
            body = json.loads(raw) if raw else {}
        except (BodyTooLarge, BodyTooSlow, ClientGone, ValueError):
            await _error(send, 400, "the body must be a JSON object")
            return
        reason = body.get("reason") if isinstance(body, dict) else None
        if reason is not None and not isinstance(reason, str):
            await _error(send, 400, "reason: a string")
            return
        approve = parts[1] == "approve"
        if not approve and not reason:
            await _error(send, 400, "a denial needs a `reason`")
            return
        try:
            ticket = await approvals.decide(ticket_id, approve, who, who.key, reason)
        except ApprovalRefused as exc:
            await _error(send, exc.status, str(exc))
            return
        await respond_json(send, 200, frame.encode(ticket.as_json()))
    except StorageError:
        await _error(send, 503, "the ticket store is unavailable; retry shortly")


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)


def _page(ticket: dict[str, Any], refusal: str | None) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_shown(v))}</td></tr>"
        for k, v in ticket.items()
        if v is not None
    )
    action = (
        f"<p>You cannot decide this ticket: {html.escape(refusal)}.</p>"
        if refusal is not None
        else (
            "<p>Decide with <code>POST /admin/v1/approvals/"
            f"{html.escape(ticket['id'])}/approve</code> or <code>/deny</code> "
            "(with your credential), or <code>switchyard approvals approve "
            f"{html.escape(ticket['id'])}</code>.</p>"
        )
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Approval "
        f"{html.escape(ticket['id'])}</title></head><body><h1>Approval request</h1>"
        f"<table>{rows}</table>{action}</body></html>"
    )
