"""Backends: their state and what they offer; with dynamic registration, their configuration."""

from __future__ import annotations

from typing import Any, Final

from switchyard.admin.context import Problem, Request
from switchyard.admin.masking import masked
from switchyard.admin.proposal import CHANGE, config_etag, first_error, propose, writable
from switchyard.admin.routes import (
    ANY_OBJECT,
    INTEGER,
    NULLABLE_INTEGER,
    NULLABLE_STRING,
    STRING,
    Answer,
    Operation,
    array_of,
    obj,
)
from switchyard.config.schema import ServerConfig
from switchyard.config.versions import document_of
from switchyard.observability.metrics import metrics
from switchyard.routing import catalog
from switchyard.upstream.stdio import StdioSettings
from switchyard.wire import frame

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

BACKEND: Final = obj(
    {
        "name": STRING,
        "transport": STRING,
        "state": STRING,
        "era": NULLABLE_STRING,
        "protocolVersion": NULLABLE_STRING,
        "error": NULLABLE_STRING,
        "restarts": INTEGER,
        "tools": NULLABLE_INTEGER,
        "prompts": NULLABLE_INTEGER,
        "resources": NULLABLE_INTEGER,
        "config": {"type": ["object", "null"]},
        "requests": NULLABLE_INTEGER,
        "errors": NULLABLE_INTEGER,
    },
    ["name", "transport", "state", "restarts"],
)
ITEMS: Final = obj(
    {"backend": STRING, "kind": STRING, "items": array_of(ANY_OBJECT)},
    ["backend", "kind", "items"],
)
SERVER_BODY: Final = {"type": "object", "description": "A `servers:` entry (see the README)."}


def _server_configs(request: Request) -> dict[str, ServerConfig]:
    desired = request.ctx.desired
    if desired is None:
        return {}
    config = desired.config
    return {**config.mcpServers, **config.servers}


def _row(request: Request, name: str) -> dict[str, Any]:
    gateway = request.ctx.gateway
    backend = gateway.backends[name]
    transport = backend.settings.transport
    kind = "stdio" if isinstance(transport, StdioSettings) else f"http ({transport.transport})"
    listing = backend.listing
    counts = {
        key: len(listing.items.get(kind_, ())) if listing else None
        for key, kind_ in (
            ("tools", catalog.TOOLS),
            ("prompts", catalog.PROMPTS),
            ("resources", catalog.RESOURCES),
        )
    }
    configured = _server_configs(request).get(name)
    return {
        "name": name,
        "transport": kind,
        "state": backend.status.state,
        "era": backend.facts.era.value if backend.facts else None,
        "protocolVersion": backend.facts.version if backend.facts else None,
        "error": backend.status.last_error,
        "restarts": backend.status.restarts,
        **counts,
        "config": masked(configured.model_dump(mode="json", exclude_defaults=True))
        if configured is not None
        else None,
    }


def _traffic(row: dict[str, Any], totals: dict[str, tuple[int, int]] | None) -> dict[str, Any]:
    """Requests and failures since this process started (None: metrics are off)."""
    requests, errors = totals.get(row["name"], (0, 0)) if totals is not None else (None, None)
    return {**row, "requests": requests, "errors": errors}


async def list_backends(request: Request) -> Answer:
    names = sorted(request.ctx.gateway.backends)
    totals = metrics.by_backend() if metrics.enabled else None
    rows = [_traffic(_row(request, n), totals) for n in names]
    return Answer(200, {"backends": rows}, etag=config_etag(request))


def _known(request: Request) -> str:
    name = request.params["name"]
    if name not in request.ctx.gateway.backends:
        raise Problem(404, f"no backend {name!r}")
    return name


async def get_backend(request: Request) -> Answer:
    totals = metrics.by_backend() if metrics.enabled else None
    return Answer(200, _traffic(_row(request, _known(request)), totals), etag=config_etag(request))


def _items(kind: str) -> Any:
    async def handler(request: Request) -> Answer:
        name = _known(request)
        kinds = (catalog.RESOURCES, catalog.TEMPLATES) if kind == catalog.RESOURCES else (kind,)
        items = [
            frame.decode_any(entry.item)
            for k in kinds
            for entry in request.ctx.gateway.catalog.entries[k]
            if entry.backend == name
        ]
        return Answer(200, {"backend": name, "kind": kind, "items": items})

    return handler


def _server_body(request: Request) -> dict[str, Any]:
    body = request.body
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object: a `servers:` entry")
    try:
        ServerConfig.model_validate(body)
    except ValueError as exc:
        raise Problem(422, f"not a valid server entry: {first_error(exc)}") from None
    return body


async def put_backend(request: Request) -> Answer:
    """Create or replace one backend's `servers:` entry (a new configuration version)."""
    writable(request, "backends")
    name = request.params["name"]
    if not _valid_name(name):
        raise Problem(400, "a backend name: letters, digits, `_`, `.`, `-` (64 at most)")
    entry = _server_body(request)
    assert request.ctx.desired is not None
    document = document_of(request.ctx.desired.config)
    section = "mcpServers" if name in document.get("mcpServers", {}) else "servers"
    existed = name in request.ctx.gateway.backends
    document.setdefault(section, {})[name] = entry
    answer = await propose(request, document, f"{'change' if existed else 'add'} backend {name}")
    return answer


async def delete_backend(request: Request) -> Answer:
    writable(request, "backends")
    name = request.params["name"]
    assert request.ctx.desired is not None
    document = document_of(request.ctx.desired.config)
    found = False
    for section in ("servers", "mcpServers"):
        if name in document.get(section, {}):
            del document[section][name]
            found = True
    if not found:
        raise Problem(404, f"no configured backend {name!r}")
    return await propose(request, document, f"remove backend {name}")


async def restart_backend(request: Request) -> Answer:
    """A fresh connection (or process) for one backend; its configuration is unchanged."""
    name = _known(request)
    request.require(config_etag(request))
    desired = request.ctx.desired
    if desired is None:
        raise Problem(409, "this gateway cannot restart backends through the API")
    await desired.reloader.restart(name)
    return Answer(
        202, {"name": name, "restarted": True}, audit={"target": f"restart backend {name}"}
    )


def _valid_name(name: str) -> bool:
    import re

    return re.fullmatch(NAME_PATTERN, name) is not None


NAME_PARAM_NOTE: Final = "{name}"
OPERATIONS: Final = (
    Operation(
        "GET",
        "/admin/v1/backends",
        "listBackends",
        "Every backend: state, era, item counts, configuration (secrets masked)",
        "read",
        "backends",
        obj({"backends": array_of(BACKEND)}, ["backends"]),
        list_backends,
        etag=True,
    ),
    Operation(
        "GET",
        "/admin/v1/backends/{name}",
        "getBackend",
        "One backend",
        "read",
        "backends",
        BACKEND,
        get_backend,
        etag=True,
    ),
    *(
        Operation(
            "GET",
            f"/admin/v1/backends/{{name}}/{kind}",
            f"listBackend{kind.capitalize()}",
            f"The {kind} this backend offers, as clients see them",
            "read",
            "backends",
            ITEMS,
            _items(source),
        )
        for kind, source in (
            ("tools", catalog.TOOLS),
            ("prompts", catalog.PROMPTS),
            ("resources", catalog.RESOURCES),
        )
    ),
    Operation(
        "PUT",
        "/admin/v1/backends/{name}",
        "putBackend",
        "Create or replace a backend (dynamic registration): a new configuration version",
        "write",
        "backends",
        CHANGE,
        put_backend,
        body=SERVER_BODY,
        if_match=True,
        etag=True,
        statuses=(409, 412, 422, 428),
        etag_from="/admin/v1/status",
    ),
    Operation(
        "DELETE",
        "/admin/v1/backends/{name}",
        "deleteBackend",
        "Remove a backend (dynamic registration): a new configuration version",
        "write",
        "backends",
        CHANGE,
        delete_backend,
        if_match=True,
        etag=True,
        statuses=(409, 412, 422, 428),
        etag_from="/admin/v1/status",
    ),
    Operation(
        "POST",
        "/admin/v1/backends/{name}/restart",
        "restartBackend",
        "Restart a backend (new connection or process; configuration unchanged)",
        "write",
        "backends",
        obj({"name": STRING, "restarted": {"type": "boolean"}}, ["name", "restarted"]),
        restart_backend,
        status=202,
        if_match=True,
        statuses=(412, 428),
        etag_from="/admin/v1/status",
    ),
)
