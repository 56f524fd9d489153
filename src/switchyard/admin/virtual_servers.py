"""Virtual servers changed through the API (dynamic registration): one `virtual_servers:` entry
created, replaced or removed, each a new configuration version. Backends are untouched; callers
of the endpoint get `list_changed` when what it shows changes, and its `roles` hold from the
next request on."""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import ValidationError

from switchyard.admin.context import Problem, Request
from switchyard.admin.proposal import CHANGE, config_etag, first_error, propose, writable
from switchyard.admin.routes import ANY_OBJECT, INTEGER, STRING, Answer, Operation, obj
from switchyard.config.schema import VirtualServerConfig
from switchyard.config.versions import document_of

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""As `virtual_servers:` names are checked when a configuration compiles (a URL segment)."""
WHAT: Final = "virtual servers"
BODY: Final = {
    "type": "object",
    "description": "A `virtual_servers:` entry (see the README): tools, prompts, resources, "
    "resource_templates, rename, describe, roles.",
}
LIST_PATH: Final = "/admin/v1/virtual-servers"
ROW: Final = obj(
    {
        "name": STRING,
        "url": STRING,
        "roles": {"type": ["array", "null"], "items": STRING},
        "tools": INTEGER,
        "config": ANY_OBJECT,
    },
    ["name", "url", "config"],
)


def _row(request: Request, name: str, spec: VirtualServerConfig) -> dict[str, Any]:
    gateway = request.ctx.gateway
    view = gateway.views.get(name)
    return {
        "name": name,
        "url": f"{gateway.public_base or ''}/servers/{name}/mcp",
        "roles": spec.roles,
        "tools": len(view.entries["tools"]) if view is not None else 0,
        "config": spec.model_dump(mode="json", exclude_defaults=True),
    }


async def get_virtual_server(request: Request) -> Answer:
    desired = request.ctx.desired
    name = request.params["name"]
    spec = desired.config.virtual_servers.get(name) if desired is not None else None
    if spec is None:
        raise Problem(404, f"no virtual server {name!r}")
    return Answer(200, _row(request, name, spec), etag=config_etag(request))


async def put_virtual_server(request: Request) -> Answer:
    """Create or replace one virtual server (a new configuration version)."""
    writable(request, WHAT)
    name = request.params["name"]
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise Problem(400, "a virtual server name: letters, digits, `_`, `-` (64 at most)")
    if not isinstance(request.body, dict):
        raise Problem(400, "the body must be a JSON object: a `virtual_servers:` entry")
    try:
        VirtualServerConfig.model_validate(request.body)
    except ValidationError as exc:
        raise Problem(422, f"not a valid virtual server: {first_error(exc)}") from None
    assert request.ctx.desired is not None
    document = document_of(request.ctx.desired.config)
    servers = document.setdefault("virtual_servers", {})
    verb = "change" if name in servers else "add"
    servers[name] = request.body
    return await propose(request, document, f"{verb} virtual server {name}")


async def delete_virtual_server(request: Request) -> Answer:
    writable(request, WHAT)
    name = request.params["name"]
    assert request.ctx.desired is not None
    document = document_of(request.ctx.desired.config)
    servers = document.get("virtual_servers", {})
    if name not in servers:
        raise Problem(404, f"no virtual server {name!r}")
    del servers[name]
    return await propose(request, document, f"remove virtual server {name}")


OPERATIONS: Final = (
    Operation(
        "GET",
        LIST_PATH + "/{name}",
        "getVirtualServer",
        "One virtual server: endpoint, required roles, selection",
        "read",
        "configuration",
        ROW,
        get_virtual_server,
        etag=True,
    ),
    Operation(
        "PUT",
        LIST_PATH + "/{name}",
        "putVirtualServer",
        "Create or replace a virtual server (dynamic registration): a new configuration version",
        "write",
        "configuration",
        CHANGE,
        put_virtual_server,
        body=BODY,
        if_match=True,
        etag=True,
        statuses=(409, 412, 422, 428),
        etag_from=LIST_PATH,
    ),
    Operation(
        "DELETE",
        LIST_PATH + "/{name}",
        "deleteVirtualServer",
        "Remove a virtual server (dynamic registration): a new configuration version",
        "write",
        "configuration",
        CHANGE,
        delete_virtual_server,
        if_match=True,
        etag=True,
        statuses=(409, 412, 422, 428),
        etag_from=LIST_PATH,
    ),
)
