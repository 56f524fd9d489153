"""Virtual servers: curated views of the catalog, one per named endpoint.

A view keeps the items its selectors pick (by kind, backend and backend-side name), optionally
under another name or with another description, and routes them to the same backends. It is
rebuilt from the live catalog whenever that changes, so it never serves what no backend offers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate

from switchyard.routing import catalog
from switchyard.routing.catalog import Catalog, Entry
from switchyard.routing.uri_template import compile_template
from switchyard.wire import frame
from switchyard.wire.frame import Raw


@dataclass(frozen=True, slots=True)
class Selector:
    kind: str
    backends: re.Pattern[str]
    names: re.Pattern[str]

    @classmethod
    def build(cls, kind: str, backends: Sequence[str], names: Sequence[str]) -> Selector:
        def pattern(globs: Sequence[str]) -> re.Pattern[str]:
            return re.compile("|".join(f"(?:{translate(g)})" for g in globs) or "(?!)")

        return cls(kind, pattern(backends), pattern(names))

    def picks(self, entry: Entry) -> bool:
        return (
            entry.kind == self.kind
            and self.backends.fullmatch(entry.backend) is not None
            and self.names.fullmatch(entry.original) is not None
        )


@dataclass(frozen=True, slots=True)
class ViewSpec:
    name: str
    selectors: tuple[Selector, ...]
    renames: Mapping[str, str] = field(default_factory=dict)
    """Public name in the full catalog -> name in this view."""
    descriptions: Mapping[str, str] = field(default_factory=dict)
    """Name in this view -> its description here."""
    roles: frozenset[str] | None = None
    """With authentication on: callers need one of these roles to use this endpoint."""


def build_view(full: Catalog, spec: ViewSpec) -> Catalog:
    entries: dict[str, list[Entry]] = {k: [] for k in catalog.KINDS}
    by_name: dict[str, dict[str, Entry]] = {k: {} for k in catalog.KINDS}
    patterns = []
    for kind in catalog.KINDS:
        for entry in full.entries[kind]:
            if not any(s.picks(entry) for s in spec.selectors):
                continue
            public = spec.renames.get(entry.public, entry.public)
            description = spec.descriptions.get(public)
            if public != entry.public or description is not None:
                item = frame.decode_object(entry.item)
                if kind in (catalog.TOOLS, catalog.PROMPTS):
                    item["name"] = Raw(frame.encode(public))
                if description is not None:
                    item["description"] = Raw(frame.encode(description))
                entry = Entry(
                    kind, public, entry.backend, entry.original, frame.encode_object(item)
                )
            if public in by_name[kind]:
                continue  # two picks under one name: the first in catalog order serves it
            entries[kind].append(entry)
            by_name[kind][public] = entry
            if kind == catalog.TEMPLATES:
                patterns.append((compile_template(entry.public), entry))
    return Catalog(
        entries={k: tuple(v) for k, v in entries.items()},
        by_name=by_name,
        template_patterns=tuple(patterns),
    )
