"""Where a request goes, decided before any policy runs.

`Router.resolve` turns a routed method's decoded params into a `Route`: the backend, the item's
name or URI in the backend's own terms, and the catalog entry that routes it. Policies (access,
quotas, audit) decide on the route; the terminal only forwards it. An unroutable request and a
denied one get the same answer (`unroutable`), so a denial never tells a caller what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from switchyard.protocol import codes, methods
from switchyard.protocol.versions import Era
from switchyard.routing import catalog
from switchyard.routing.catalog import Catalog, Entry
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

# The only backend able to serve a URI nobody lists (`feature`: a resources capability flag such
# as "subscribe", or None), else None.
SoleServer = Callable[[str | None], str | None]

_NAMED: Final = {methods.TOOLS_CALL: catalog.TOOLS, methods.PROMPTS_GET: catalog.PROMPTS}
_UNKNOWN: Final = {methods.TOOLS_CALL: "Unknown tool", methods.PROMPTS_GET: "Unknown prompt"}
ROUTED: Final = frozenset(
    {
        methods.TOOLS_CALL,
        methods.PROMPTS_GET,
        methods.RESOURCES_READ,
        methods.COMPLETE,
        methods.SUBSCRIBE,
        methods.UNSUBSCRIBE,
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    """A request's target. For resources, `name` is the requested URI itself, whatever entry
    (a listed resource or a template) routes it: rules decide on what is asked for."""

    kind: str
    backend: str
    name: str
    """The tool or prompt name in the backend's terms, or the requested resource URI."""
    public: str
    """What the client called it."""
    entry: Entry


class Router:
    def __init__(self, catalog_for: Callable[[str | None], Catalog], sole_server: SoleServer):
        self._catalog_for = catalog_for
        self._sole_server = sole_server

    def resolve(self, method: str, fields: dict[str, Raw], view: str | None) -> Route | None:
        """The route of a request with these params; None: unknown, or malformed."""
        cat = self._catalog_for(view)
        kind = _NAMED.get(method)
        if kind is not None:
            public = str_field(fields, "name")
            entry = cat.lookup(kind, public) if public is not None else None
            if entry is None or public is None:
                return None
            return Route(kind, entry.backend, entry.original, public, entry)
        if method in (methods.RESOURCES_READ, methods.SUBSCRIBE, methods.UNSUBSCRIBE):
            uri = str_field(fields, "uri")
            if uri is None:
                return None
            feature = None if method == methods.RESOURCES_READ else "subscribe"
            entry = self._resource_entry(cat, uri, feature, view)
            return Route(catalog.RESOURCES, entry.backend, uri, uri, entry) if entry else None
        if method == methods.COMPLETE:
            return self._completion(cat, fields)
        return None

    def listed_resource(self, uri: str, view: str | None) -> Route | None:
        """The route of a URI some backend lists (as a resource or through a template)."""
        entry = self._catalog_for(view).resource_owner(uri)
        return Route(catalog.RESOURCES, entry.backend, uri, uri, entry) if entry else None

    def _resource_entry(
        self, cat: Catalog, uri: str, feature: str | None, view: str | None
    ) -> Entry | None:
        """A listed resource or template, else the only backend that could serve it (backends
        may serve URIs they never list). Ambiguity means nobody; a virtual server serves only
        what it lists."""
        entry = cat.resource_owner(uri)
        if entry is not None or view is not None:
            return entry
        backend = self._sole_server(feature)
        return Entry(catalog.RESOURCES, uri, backend, uri, b"") if backend is not None else None

    def _completion(self, cat: Catalog, fields: dict[str, Raw]) -> Route | None:
        try:
            ref = frame.decode_object(fields["ref"])
        except (KeyError, frame.DecodeError, frame.ValidationError):
            return None
        ref_type = str_field(ref, "type")
        if ref_type == "ref/prompt":
            name = str_field(ref, "name")
            entry = cat.lookup(catalog.PROMPTS, name) if name is not None else None
            if entry is None or name is None:
                return None
            return Route(catalog.PROMPTS, entry.backend, entry.original, name, entry)
        if ref_type == "ref/resource":
            uri = str_field(ref, "uri")
            if uri is None:
                return None
            entry = cat.lookup(catalog.TEMPLATES, uri) or cat.resource_owner(uri)
            if entry is None:
                return None
            return Route(entry.kind, entry.backend, entry.original, uri, entry)
        return None


def unroutable(method: str, era: Era, fields: dict[str, Raw]) -> Reply:
    """The answer to a request nobody may serve: unknown and denied alike."""
    if method in _UNKNOWN:
        public = str_field(fields, "name")
        if public is None:
            return invalid_params(f"{method} requires a name")
        return invalid_params(f"{_UNKNOWN[method]}: {public}")
    if method in (methods.RESOURCES_READ, methods.SUBSCRIBE, methods.UNSUBSCRIBE):
        uri = str_field(fields, "uri")
        if uri is None:
            return invalid_params(f"{method} requires a uri")
        code = (
            codes.INVALID_PARAMS
            if era is Era.MODERN and method == methods.RESOURCES_READ
            else codes.RESOURCE_NOT_FOUND_LEGACY
        )
        return frame.error_reply(code, f"Resource not found: {uri}", {"uri": uri})
    if method == methods.COMPLETE:
        if "ref" not in fields:
            return invalid_params("completion/complete requires a ref")
        return invalid_params("Unknown completion reference")
    return frame.error_reply(codes.METHOD_NOT_FOUND, f"Method not found: {method}")


def invalid_params(message: str) -> Reply:
    return frame.error_reply(codes.INVALID_PARAMS, message)


def str_field(fields: dict[str, Raw], key: str) -> str | None:
    raw = fields.get(key)
    if raw is None:
        return None
    try:
        return frame.decode_str(raw)
    except (frame.DecodeError, frame.ValidationError):
        return None
