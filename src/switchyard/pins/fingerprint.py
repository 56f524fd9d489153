"""What is pinned: an item's full wire definition, as its backend sent it, under its original
name, hashed over canonical JSON. Every field counts (title, description, schemas, annotations,
icons, `_meta`, execution, vendor fields): pinning only what a reviewer was shown misses
changes a model still reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from switchyard.audit.canonical import CanonicalError, canonical
from switchyard.routing import catalog
from switchyard.wire import frame
from switchyard.wire.frame import Raw

# The kinds a model acts on; plain resources are data, listed as they come.
KIND_NAMES: Final = {
    catalog.TOOLS: "tool",
    catalog.PROMPTS: "prompt",
    catalog.TEMPLATES: "template",
}
CATALOG_KINDS: Final = {name: kind for kind, name in KIND_NAMES.items()}


class UnpinnableItem(ValueError):
    """An item whose JSON has no canonical form (a number out of range, a broken string)."""


@dataclass(frozen=True, slots=True, order=True)
class PinKey:
    """One pin: a backend's item of one kind, by the name (or URI template) the backend gave
    it, never the public name Switchyard exposes it under."""

    backend: str
    kind: str
    """`tool`, `prompt` or `template`."""
    name: str

    def __str__(self) -> str:
        return f"{self.backend}/{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> PinKey:
        """`backend/kind/name`; a template's name may itself hold slashes."""
        backend, _, rest = text.partition("/")
        kind, _, name = rest.partition("/")
        if not backend or kind not in CATALOG_KINDS or not name:
            raise ValueError(
                f"{text!r} is not a pin key: backend/kind/name, kind one of tool, prompt, template"
            )
        return cls(backend, kind, name)


@dataclass(frozen=True, slots=True)
class Definition:
    key: PinKey
    value: dict[str, Any]
    """The decoded definition, exactly as the backend listed it."""
    canonical: bytes
    fingerprint: str
    """`sha256:` and the hex digest of `canonical`."""


def fingerprint_of(canonical_bytes: bytes) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes).hexdigest()


def definition(backend: str, kind: str, item: dict[str, Raw]) -> Definition:
    """The pinnable definition of one listed item (`kind` as in the catalog, e.g. `tools`)."""
    try:
        value = {k: frame.decode_any(v) for k, v in item.items()}
        name = value.get(catalog.KEY_FIELD[kind])
        if not isinstance(name, str):
            raise UnpinnableItem(f"its {catalog.KEY_FIELD[kind]} is not a string")
        body = canonical(value)
    except (frame.DecodeError, frame.ValidationError, CanonicalError, UnicodeError) as exc:
        raise UnpinnableItem(str(exc)) from exc
    return Definition(PinKey(backend, KIND_NAMES[kind], name), value, body, fingerprint_of(body))


def from_canonical(key: PinKey, body: bytes) -> Definition:
    """A definition read back from the pin store."""
    value = frame.decode_any(body)
    if not isinstance(value, dict):
        raise UnpinnableItem("a stored definition is not an object")
    return Definition(key, value, body, fingerprint_of(body))
