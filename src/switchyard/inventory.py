"""`switchyard backends` and `switchyard tools`: what a configuration serves, and what one
caller would see of it.

They start the configured backends in this process (a `Gateway` of the same plan, as
`switchyard serve` would build it) rather than asking a running gateway: no admin endpoint
to expose or authenticate, and the answer is the configuration's, checked before it is
deployed. What a caller sees is decided by the gateway's own code: the catalog, the virtual
server's view (`Gateway.catalog_for`, `view_roles`) and the access rules (`AccessRules.allows`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from switchyard.call import Identity
from switchyard.gateway import Gateway
from switchyard.routing import catalog
from switchyard.upstream.stdio import StdioSettings
from switchyard.wire import frame


class Refused(Exception):
    """The caller may not use the virtual server at all; the message says why."""


def backend_rows(gateway: Gateway) -> list[dict[str, Any]]:
    rows = []
    for name, backend in gateway.backends.items():
        transport = backend.settings.transport
        kind = "stdio" if isinstance(transport, StdioSettings) else f"http ({transport.transport})"
        listing = backend.listing
        rows.append(
            {
                "name": name,
                "transport": kind,
                "era": backend.facts.era.value if backend.facts else None,
                "state": backend.status.state,
                "tools": len(listing.items.get(catalog.TOOLS, ())) if listing else None,
                "error": backend.status.last_error,
            }
        )
    return rows


def tool_rows(
    gateway: Gateway, identity: Identity | None, view: str | None
) -> list[dict[str, Any]]:
    """The tools `identity` would list on `view` (None: the gateway's /mcp)."""
    if view is not None and view not in gateway.views:
        raise Refused(f"no virtual server named {view!r}")
    roles = gateway.view_roles(view)
    access = gateway.settings.access
    if identity is not None and roles is not None and roles.isdisjoint(identity.roles):
        raise Refused(f"virtual server {view!r} needs one of roles {sorted(roles)}")
    rows = []
    for entry in gateway.catalog_for(view).entries[catalog.TOOLS]:
        if access is not None and identity is not None and not access.allows(identity, entry):
            continue
        description: str | None = None
        with contextlib.suppress(frame.DecodeError, frame.ValidationError, KeyError):
            description = frame.decode_str(frame.decode_object(entry.item)["description"])
        rows.append(
            {
                "name": entry.public,
                "backend": entry.backend,
                "tool": entry.original,
                "description": description,
            }
        )
    return rows


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Aligned columns, `-` for nothing; one line per row, no cell over 60 characters."""

    def cell(value: Any) -> str:
        text = "-" if value is None or value == "" else str(value)
        text = " ".join(text.split())
        return text if len(text) <= 60 else text[:59] + "…"

    cells = [[c.upper() for c in columns]] + [[cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )
