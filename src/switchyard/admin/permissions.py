"""Effective permissions: what a principal would list, whether it may call a tool, and which
access rule decides — judged by the gateway's own rules (`AccessRules`), as `/mcp` judges."""

from __future__ import annotations

from typing import Any, Final

from switchyard.admin.context import Problem, Request
from switchyard.admin.proposal import config_etag
from switchyard.admin.routes import (
    ANY_OBJECT,
    BOOLEAN,
    STRING,
    Answer,
    Operation,
    Query,
    array_of,
    obj,
)
from switchyard.call import Identity
from switchyard.config.load import default_issuer
from switchyard.routing import catalog

DECISION: Final = obj(
    {
        "tool": STRING,
        "backend": {"type": ["string", "null"]},
        "allowed": BOOLEAN,
        "rule": {"type": ["integer", "null"]},
        "reason": STRING,
    },
    ["tool", "allowed", "rule", "reason"],
)


def identity_of(request: Request) -> Identity:
    principal = request.query.get("principal")
    if not principal:
        raise Problem(400, "principal: who to simulate")
    roles = tuple(r for r in str(request.query.get("roles", "")).split(",") if r)
    desired = request.ctx.desired
    issuer = request.query.get("issuer") or (
        default_issuer(desired.config) if desired is not None else "api_key"
    )
    return Identity(name=str(principal), roles=roles, issuer=str(issuer))


def _reason(allowed: bool, rule: int | None, rules: Any) -> str:
    if rule is None:
        return "no rule matches: denied by default"
    effect = "allowed" if allowed else "denied"
    return f"{effect} by access rule {rule} ({rules[rule].effect})"


async def simulate(request: Request) -> Answer:
    who = identity_of(request)
    gateway = request.ctx.gateway
    view = request.query.get("view")
    if view is not None and view not in gateway.views:
        raise Problem(404, f"no virtual server {view!r}")
    access = gateway.settings.access
    configured = request.ctx.desired.config.auth.rules if request.ctx.desired else []
    roles = gateway.view_roles(view)
    if roles is not None and roles.isdisjoint(who.roles):
        body: dict[str, Any] = {
            "principal": who.key,
            "view": view,
            "endpoint": False,
            "reason": f"the virtual server needs one of roles {sorted(roles)}",
            "tools": [],
        }
        return Answer(200, body, etag=config_etag(request))
    tools = []
    for entry in gateway.catalog_for(view).entries[catalog.TOOLS]:
        if access is None:
            allowed, rule = True, None
        else:
            allowed, rule = access.explain(who, entry.kind, entry.backend, entry.original)
        if allowed:
            tools.append(
                {
                    "name": entry.public,
                    "backend": entry.backend,
                    "tool": entry.original,
                    "rule": rule,
                }
            )
    body = {
        "principal": who.key,
        "view": view,
        "endpoint": True,
        "access_rules": access is not None,
        "tools": tools,
    }
    wanted = request.query.get("tool")
    if wanted:
        found = gateway.catalog_for(view).lookup(catalog.TOOLS, str(wanted))
        if found is None:
            body["decision"] = {
                "tool": wanted,
                "backend": None,
                "allowed": False,
                "rule": None,
                "reason": "no such tool on this endpoint",
            }
        elif access is None:
            body["decision"] = {
                "tool": wanted,
                "backend": found.backend,
                "allowed": True,
                "rule": None,
                "reason": "authentication is off: every caller may call every tool",
            }
        else:
            allowed, rule = access.explain(who, found.kind, found.backend, found.original)
            body["decision"] = {
                "tool": wanted,
                "backend": found.backend,
                "allowed": allowed,
                "rule": rule,
                "reason": _reason(allowed, rule, configured),
            }
    return Answer(200, body, etag=config_etag(request))


OPERATIONS: Final = (
    Operation(
        "GET",
        "/admin/v1/permissions",
        "simulatePermissions",
        "What a principal would list, whether it may call a tool, and which rule decides",
        "read",
        "access",
        obj(
            {
                "principal": STRING,
                "view": {"type": ["string", "null"]},
                "endpoint": BOOLEAN,
                "tools": array_of(ANY_OBJECT),
                "decision": DECISION,
            },
            ["principal", "endpoint", "tools"],
        ),
        simulate,
        query=(
            Query("principal", {"type": "string", "minLength": 1}, "the caller", required=True),
            Query("roles", {"type": "string"}, "its roles, comma-separated"),
            Query(
                "issuer", {"type": "string"}, "who vouches for it (default: auth.default_issuer)"
            ),
            Query("view", {"type": "string"}, "a virtual server instead of /mcp"),
            Query("tool", {"type": "string"}, "a tool's public name: may it call it, and why"),
        ),
        etag=True,
    ),
)
