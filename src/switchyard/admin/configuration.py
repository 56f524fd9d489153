"""The desired configuration: its version history, and the parts that decide who may do what
(virtual servers, access, rate-limit and approval rules) as they are read; their writes are in
`virtual_servers` and `rules`."""

from __future__ import annotations

import os
import socket
from typing import Any, Final

from switchyard.admin.context import Problem, Request
from switchyard.admin.masking import masked
from switchyard.admin.proposal import config_etag
from switchyard.admin.routes import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    NULLABLE_STRING,
    STRING,
    Answer,
    Operation,
    Query,
    array_of,
    obj,
)
from switchyard.observability.metrics import metrics
from switchyard.storage.database import StorageError

VERSION: Final = obj(
    {
        "version": INTEGER,
        "created": STRING,
        "source": STRING,
        "author": NULLABLE_STRING,
        "digest": STRING,
        "summary": STRING,
    },
    ["version", "created", "source", "digest", "summary"],
)


def _config(request: Request) -> Any:
    desired = request.ctx.desired
    if desired is None:
        raise Problem(404, "this gateway keeps no configuration history")
    return desired.config


async def status(request: Request) -> Answer:
    gateway = request.ctx.gateway
    desired = request.ctx.desired
    ready, readiness = gateway.readiness()
    body = {
        "ready": ready,
        "status": readiness["status"],
        "replica": f"{socket.gethostname()}:{os.getpid()}",
        "version": desired.version if desired is not None else None,
        "source": desired.source if desired is not None else "file",
        "dynamic_registration": request.ctx.dynamic,
        "backends": len(gateway.backends),
        # Who is connected: 2026-07-28 clients keep no session, so what they are doing now
        # is the requests in flight (counted with metrics on).
        "sessions": len(gateway.sessions),
        "in_flight": metrics.in_flight if metrics.enabled else None,
    }
    return Answer(200, body, etag=config_etag(request))


async def current(request: Request) -> Answer:
    config = _config(request)
    desired = request.ctx.desired
    assert desired is not None
    body = {
        "version": desired.version,
        "source": desired.source,
        "document": masked(config.model_dump(mode="json", exclude_defaults=True)),
    }
    return Answer(200, body, etag=config_etag(request))


async def history(request: Request) -> Answer:
    desired = request.ctx.desired
    if desired is None or desired.store is None:
        raise Problem(404, "this gateway keeps no configuration history")
    limit = int(request.query.get("limit", 50))
    before = request.query.get("before")
    try:
        versions = await desired.store.history(limit, before)
    except StorageError:
        raise Problem(503, "the configuration store is unavailable; retry shortly") from None
    nxt = versions[-1].version if len(versions) == limit and versions else None
    return Answer(200, {"versions": [v.as_json() for v in versions], "next_before": nxt})


async def one_version(request: Request) -> Answer:
    desired = request.ctx.desired
    if desired is None or desired.store is None:
        raise Problem(404, "this gateway keeps no configuration history")
    try:
        number = int(request.params["version"])
    except ValueError:
        raise Problem(400, "a version is a number") from None
    if not 0 < number < 2**62:
        raise Problem(404, f"no configuration version {request.params['version']}")
    try:
        found = await desired.store.get(number)
    except StorageError:
        raise Problem(503, "the configuration store is unavailable; retry shortly") from None
    if found is None:
        raise Problem(404, f"no configuration version {number}")
    body = found.as_json(with_document=True)
    body["document"] = masked(body["document"])
    return Answer(200, body)


async def virtual_servers(request: Request) -> Answer:
    config = _config(request)
    base = request.ctx.gateway.public_base or ""
    servers = [
        {
            "name": name,
            "url": f"{base}/servers/{name}/mcp",
            "roles": spec.roles,
            "tools": len(request.ctx.gateway.views[name].entries["tools"])
            if name in request.ctx.gateway.views
            else 0,
            "config": spec.model_dump(mode="json", exclude_defaults=True),
        }
        for name, spec in sorted(config.virtual_servers.items())
    ]
    return Answer(200, {"virtual_servers": servers}, etag=config_etag(request))


async def access_rules(request: Request) -> Answer:
    config = _config(request)
    rules = [
        {"index": i, **r.model_dump(mode="json", exclude_none=True)}
        for i, r in enumerate(config.auth.rules)
    ]
    body = {
        "enabled": config.auth.enabled,
        "default": "deny",
        "rules": rules,
    }
    return Answer(200, body, etag=config_etag(request))


async def rate_limits(request: Request) -> Answer:
    config = _config(request)
    limits = request.ctx.gateway.settings.limits
    body = {
        "rules": [r.model_dump(mode="json", exclude_none=True) for r in config.rate_limits.rules],
        "defaults": config.rate_limits.defaults.model_dump(mode="json"),
        "status": limits.status() if limits is not None else None,
    }
    return Answer(200, body, etag=config_etag(request))


async def approval_rules(request: Request) -> Answer:
    approvals = _config(request).approvals
    body = {
        "enabled": approvals.enabled,
        "default": approvals.default,
        "default_approver": approvals.default_approver,
        "auto_execute": approvals.auto_execute,
        "ticket_ttl": approvals.ticket_ttl,
        "rules": [r.model_dump(mode="json", exclude_none=True) for r in approvals.rules],
    }
    return Answer(200, body, etag=config_etag(request))


OPERATIONS: Final = (
    Operation(
        "GET",
        "/admin/v1/status",
        "getStatus",
        "This replica: readiness, configuration version and source",
        "read",
        "configuration",
        obj(
            {
                "ready": BOOLEAN,
                "status": STRING,
                "replica": STRING,
                "version": {"type": ["integer", "null"]},
                "source": STRING,
                "dynamic_registration": BOOLEAN,
                "backends": INTEGER,
                "sessions": INTEGER,
                "in_flight": {"type": ["integer", "null"]},
            },
            ["ready", "status", "replica", "version", "source"],
        ),
        status,
        etag=True,
    ),
    Operation(
        "GET",
        "/admin/v1/config",
        "getConfig",
        "The running configuration (secrets masked) and its version",
        "read",
        "configuration",
        obj({"version": INTEGER, "source": STRING, "document": ANY_OBJECT}, ["version"]),
        current,
        etag=True,
    ),
    Operation(
        "GET",
        "/admin/v1/config/versions",
        "listConfigVersions",
        "The configuration's version history, newest first",
        "read",
        "configuration",
        obj(
            {"versions": array_of(VERSION), "next_before": {"type": ["integer", "null"]}},
            ["versions"],
        ),
        history,
        query=(
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "at most this many"),
            Query(
                "before",
                {"type": "integer", "minimum": 1, "maximum": 2**62},
                "versions older than this one (paging)",
            ),
        ),
    ),
    Operation(
        "GET",
        "/admin/v1/config/versions/{version}",
        "getConfigVersion",
        "One version, with its document (secrets masked)",
        "read",
        "configuration",
        {**VERSION, "properties": {**VERSION["properties"], "document": ANY_OBJECT}},
        one_version,
    ),
    Operation(
        "GET",
        "/admin/v1/virtual-servers",
        "listVirtualServers",
        "The virtual servers: endpoint, required roles, selection",
        "read",
        "configuration",
        obj({"virtual_servers": array_of(ANY_OBJECT)}, ["virtual_servers"]),
        virtual_servers,
        etag=True,
    ),
    Operation(
        "GET",
        "/admin/v1/access-rules",
        "listAccessRules",
        "The access rules, in order (a deny beats every allow; default deny)",
        "read",
        "configuration",
        obj({"enabled": BOOLEAN, "default": STRING, "rules": array_of(ANY_OBJECT)}, ["rules"]),
        access_rules,
        etag=True,
    ),
    Operation(
        "GET",
        "/admin/v1/rate-limits",
        "listRateLimits",
        "The rate-limit rules and their counters' status",
        "read",
        "configuration",
        obj({"rules": array_of(ANY_OBJECT), "defaults": ANY_OBJECT}, ["rules"]),
        rate_limits,
        etag=True,
    ),
    Operation(
        "GET",
        "/admin/v1/approval-rules",
        "listApprovalRules",
        "The approval rules (secrets left out)",
        "read",
        "configuration",
        obj({"enabled": BOOLEAN, "rules": array_of(ANY_OBJECT)}, ["enabled", "rules"]),
        approval_rules,
        etag=True,
    ),
)
