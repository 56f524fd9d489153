"""The capability catalog: an immutable snapshot of every backend's tools, prompts, resources
and resource templates under their public names. Rebuilt and swapped whole when any backend's
listing changes; readers never lock.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from switchyard.protocol import param_headers
from switchyard.routing import names
from switchyard.routing.freshness import Freshness
from switchyard.routing.uri_template import Stops, UriTemplate, compile_template, overlaps
from switchyard.wire import frame
from switchyard.wire.frame import Raw

log = logging.getLogger("switchyard.catalog")

TOOLS: Final = "tools"
PROMPTS: Final = "prompts"
RESOURCES: Final = "resources"
TEMPLATES: Final = "resourceTemplates"
KINDS: Final = (TOOLS, PROMPTS, RESOURCES, TEMPLATES)
# The field that identifies an item of each kind.
KEY_FIELD: Final = {TOOLS: "name", PROMPTS: "name", RESOURCES: "uri", TEMPLATES: "uriTemplate"}


@dataclass(frozen=True, slots=True)
class Listing:
    """What one backend offers, as it reported it (items decoded one level deep)."""

    backend: str
    prefix: str
    items: dict[str, tuple[dict[str, Raw], ...]]
    fresh: dict[str, Freshness] = field(default_factory=dict)
    """Per kind the backend was asked for: how long its answer stays fresh."""


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    public: str
    backend: str
    original: str
    item: bytes
    """The item's JSON as clients see it: the backend's bytes, but for the public name."""


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Catalog:
    entries: dict[str, tuple[Entry, ...]] = field(default_factory=lambda: dict.fromkeys(KINDS, ()))
    by_name: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    template_patterns: tuple[tuple[UriTemplate, Entry], ...] = ()
    """Kept most specific first (see `UriTemplate.specificity`), then in the order given."""

    def __post_init__(self) -> None:
        ordered = sorted(self.template_patterns, key=lambda pair: pair[0].specificity)
        object.__setattr__(self, "template_patterns", tuple(ordered))

    def lookup(self, kind: str, public: str) -> Entry | None:
        return self.by_name[kind].get(public)

    def resource_owner(self, uri: str) -> Entry | None:
        """The entry owning `uri`: a listed resource first, then the most specific matching
        template (configuration order among equals)."""
        exact = self.by_name[RESOURCES].get(uri)
        if exact is not None:
            return exact
        stops = Stops(uri)
        for pattern, entry in self.template_patterns:
            if pattern.matches(uri, stops):
                return entry
        return None

    def page(
        self,
        kind: str,
        cursor: str | None,
        page_size: int,
        allowed: Callable[[Entry], bool] | None = None,
    ) -> bytes:
        """One page of a list result, as raw JSON, with Switchyard's own opaque cursor."""
        entries: Sequence[Entry] = self.entries[kind]
        if allowed is not None:
            entries = [e for e in entries if allowed(e)]
        start = decode_cursor(kind, cursor) if cursor is not None else 0
        if start > len(entries):
            raise InvalidCursor(cursor)
        chunk = entries[start : start + page_size]
        body = b"".join((b'{"', kind.encode(), b'":[', b",".join(e.item for e in chunk), b"]"))
        end = start + len(chunk)
        if end < len(entries):
            body += b',"nextCursor":' + frame.encode(encode_cursor(kind, end))
        return body + b"}"


def encode_cursor(kind: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"sy1:{kind}:{offset}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        tag, ckind, offset = base64.urlsafe_b64decode(padded).decode().split(":")
        if tag != "sy1" or ckind != kind or not offset.isdigit():
            raise InvalidCursor(cursor)
        return int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor(cursor) from exc


def build(listings: Iterable[Listing], sep: str) -> Catalog:
    """Merge listings in the given (configuration) order; earlier backends win collisions."""
    entries: dict[str, list[Entry]] = {k: [] for k in KINDS}
    by_name: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
    seen: dict[str, set[tuple[str, str]]] = {k: set() for k in KINDS}
    patterns: list[tuple[UriTemplate, Entry]] = []
    for listing in listings:
        for kind in (TOOLS, PROMPTS):
            for item in listing.items.get(kind, ()):
                entry = _named_entry(kind, listing, item, sep, by_name[kind], seen[kind])
                if entry is not None:
                    entries[kind].append(entry)
                    by_name[kind][entry.public] = entry
        for kind in (RESOURCES, TEMPLATES):
            for item in listing.items.get(kind, ()):
                entry = _keyed_entry(kind, listing, item, by_name[kind])
                if entry is None:
                    continue
                entries[kind].append(entry)
                by_name[kind][entry.public] = entry
                if kind == TEMPLATES:
                    patterns.append((compile_template(entry.public), entry))
    cat = Catalog(
        entries={k: tuple(v) for k, v in entries.items()},
        by_name=by_name,
        template_patterns=tuple(patterns),
    )
    _warn_overlaps(cat.template_patterns)
    return cat


# Overlap checks run on every rebuild: bounded so that a backend listing thousands of (or huge)
# templates cannot stall it.
MAX_OVERLAP_PAIRS: Final = 1_000
MAX_OVERLAP_TEMPLATE_CHARS: Final = 512


def _warn_overlaps(patterns: Sequence[tuple[UriTemplate, Entry]]) -> None:
    """One warning per pair of backends whose templates overlap (some URI matches both), naming
    the first such templates; the more specific of a pair serves the URIs both match."""
    checkable = [p for p in patterns if len(p[0].template) <= MAX_OVERLAP_TEMPLATE_CHARS]
    found: dict[tuple[str, str], tuple[str, str, int]] = {}
    budget = MAX_OVERLAP_PAIRS
    for i, (first, owner) in enumerate(checkable):
        for second, other in checkable[i + 1 :]:
            if owner.backend == other.backend:
                continue
            budget -= 1
            if budget < 0:
                log.warning(
                    "too many resource templates to check them all for overlaps; routing "
                    "still prefers the most specific"
                )
                break
            if overlaps(first, second):
                key = (owner.backend, other.backend)
                example = found.get(key, (first.template, second.template, 0))
                found[key] = (example[0], example[1], example[2] + 1)
        if budget < 0:
            break
    for (winner, loser), (first_t, second_t, count) in found.items():
        log.warning(
            "resource templates overlap: %r of backend %r and %r of backend %r (%d such pairs); "
            "a URI both match is routed to the more specific, here %r",
            first_t,
            winner,
            second_t,
            loser,
            count,
            winner,
        )


def _item_key(kind: str, backend: str, item: dict[str, Raw]) -> str | None:
    raw = item.get(KEY_FIELD[kind])
    try:
        return frame.decode_str(raw) if raw is not None else None
    except (frame.DecodeError, frame.ValidationError):
        log.warning(
            "backend %r: %s item with a non-string %s hidden", backend, kind, KEY_FIELD[kind]
        )
        return None


def _named_entry(
    kind: str,
    listing: Listing,
    item: dict[str, Raw],
    sep: str,
    taken: dict[str, Entry],
    seen: set[tuple[str, str]],
) -> Entry | None:
    backend = listing.backend
    name = _item_key(kind, backend, item)
    if name is None or (backend, name) in seen:
        return None  # unnamed, or a backend repeating itself across pages
    seen.add((backend, name))
    if not names.is_valid_backend_name(name):
        log.warning(
            "backend %r: %s name %r refused: outside [A-Za-z0-9_.-]{1,128}",
            backend,
            kind[:-1],
            name,
        )
        return None
    if kind == TOOLS:
        reason = param_headers.invalid_reason(item)
        if reason is not None:
            # A 2026-07-28 client must drop such a tool; so does every client here.
            log.warning("backend %r: tool %r left out: %s", backend, name, reason)
            return None
    public = names.public_name(listing.prefix, sep, name)
    if names.LLM_SAFE.fullmatch(public) is None:
        aliased = names.alias(listing.prefix, sep, backend, name)
        log.info("backend %r: %s %r is exposed as %r", backend, kind[:-1], name, aliased)
        public = aliased
    if public in taken:
        other = taken[public]
        resolved = names.disambiguate(public, backend, name, set(taken))
        log.warning(
            "%s name collision: %r from backend %r already names %r from %r; exposed as %r",
            kind[:-1],
            public,
            backend,
            other.original,
            other.backend,
            resolved,
        )
        public = resolved
    item = dict(item)
    item["name"] = Raw(frame.encode(public))
    return Entry(kind, public, backend, name, frame.encode_object(item))


def _keyed_entry(
    kind: str, listing: Listing, item: dict[str, Raw], taken: dict[str, Entry]
) -> Entry | None:
    key = _item_key(kind, listing.backend, item)
    if key is None:
        return None
    if key in taken:
        other = taken[key]
        if other.backend != listing.backend:
            log.warning(
                "%s %r offered by %r and %r: routed to %r",
                kind[:-1],
                key,
                other.backend,
                listing.backend,
                other.backend,
            )
        return None
    return Entry(kind, key, listing.backend, key, frame.encode_object(item))
