"""The catalog as the gateway serves it: every tool, prompt, resource and template with its
backend, its pin state and the access rules that name it — who may use it, as the rules say,
without simulating every principal. Filtered and capped, so a page stays small with thousands
of items."""

from __future__ import annotations

from typing import Any, Final

from switchyard.admin.context import Problem, Request
from switchyard.admin.proposal import config_etag
from switchyard.admin.routes import (
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
from switchyard.pins.fingerprint import KIND_NAMES, PinKey
from switchyard.pins.store import PinStore
from switchyard.routing import catalog
from switchyard.storage.database import StorageError

KINDS: Final = {
    "tool": catalog.TOOLS,
    "prompt": catalog.PROMPTS,
    "resource": catalog.RESOURCES,
    "template": catalog.TEMPLATES,
}
NAMES: Final = {kind: name for name, kind in KINDS.items()}
DEFAULT_LIMIT: Final = 200

RULE: Final = obj(
    {
        "rule": INTEGER,
        "effect": STRING,
        "principals": {"type": ["array", "null"], "items": STRING},
        "roles": {"type": ["array", "null"], "items": STRING},
        "issuers": {"type": ["array", "null"], "items": STRING},
    },
    ["rule", "effect"],
)
ITEM: Final = obj(
    {
        "kind": STRING,
        "name": STRING,
        "backend": STRING,
        "original": STRING,
        "pin": NULLABLE_STRING,
        "rules": array_of(RULE),
    },
    ["kind", "name", "backend", "original", "pin", "rules"],
)


async def _pin_states(request: Request) -> dict[PinKey, str] | None:
    """Each pinned item's state; None when pinning is off."""
    if request.ctx.gateway.pins is None:
        return None
    try:
        store = PinStore(await request.ctx.db())
        await store.migrate()
        return {key: pin.state for key, pin in (await store.load()).items()}
    except StorageError:
        raise Problem(503, "the pin store is unavailable; retry shortly") from None


async def list_catalog(request: Request) -> Answer:
    gateway = request.ctx.gateway
    query = request.query
    view = query.get("view")
    if view is not None and view not in gateway.views:
        raise Problem(404, f"no virtual server {view!r}")
    kind = query.get("kind")
    if kind is not None and kind not in KINDS:
        raise Problem(400, f"kind: one of {', '.join(KINDS)}")
    needle = str(query.get("q", ""))
    backend = query.get("backend")
    limit = int(query.get("limit", DEFAULT_LIMIT))
    served = gateway.catalog_for(view).entries
    matching = [
        entry
        for k in ([KINDS[kind]] if kind is not None else catalog.KINDS)
        for entry in served[k]
        if needle in entry.public and (backend is None or entry.backend == backend)
    ]
    pins = await _pin_states(request)
    access = gateway.settings.access
    configured = request.ctx.desired.config.auth.rules if request.ctx.desired else []
    items: list[dict[str, Any]] = []
    for entry in matching[:limit]:
        pin_kind = KIND_NAMES.get(entry.kind)
        pin = None
        if pins is not None and pin_kind is not None:
            pin = pins.get(PinKey(entry.backend, pin_kind, entry.original), "unpinned")
        rules = []
        if access is not None:
            for index in access.naming(entry.kind, entry.backend, entry.original):
                said = configured[index] if index < len(configured) else None
                rules.append(
                    {
                        "rule": index,
                        "effect": "allow" if access.rules[index].allow else "deny",
                        "principals": said.principals if said is not None else None,
                        "roles": said.roles if said is not None else None,
                        "issuers": said.issuers if said is not None else None,
                    }
                )
        items.append(
            {
                "kind": NAMES[entry.kind],
                "name": entry.public,
                "backend": entry.backend,
                "original": entry.original,
                "pin": pin,
                "rules": rules,
            }
        )
    body = {
        "total": len(matching),
        "items": items,
        "pinning": pins is not None,
        "access_rules": access is not None,
    }
    return Answer(200, body, etag=config_etag(request))


OPERATIONS: Final = (
    Operation(
        "GET",
        "/admin/v1/catalog",
        "listCatalog",
        "Every tool, prompt, resource and template served, with its backend, pin state and the "
        "access rules that name it (who may use it); filtered, at most `limit` items",
        "read",
        "catalog",
        obj(
            {
                "total": INTEGER,
                "items": array_of(ITEM),
                "pinning": BOOLEAN,
                "access_rules": BOOLEAN,
            },
            ["total", "items", "pinning", "access_rules"],
        ),
        list_catalog,
        query=(
            Query("kind", {"type": "string", "enum": list(KINDS)}, "one kind only"),
            Query("q", {"type": "string"}, "public names containing this"),
            Query("backend", {"type": "string"}, "one backend's items only"),
            Query("view", {"type": "string"}, "a virtual server's catalog instead of /mcp's"),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "items at most"),
        ),
        etag=True,
    ),
)
