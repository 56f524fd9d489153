"""A pin's diff, classified: what changed between the pinned definition and the candidate, in
the terms a reviewer decides on (description, title, parameters, annotations, output schema,
other), with every invisible character written out so an inserted one shows."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Final

from switchyard.pins.poisoning import shown

CATEGORIES: Final = ("description", "title", "parameters", "annotations", "output_schema", "other")
_PARAM_KEYS: Final = ("type", "enum", "default", "description", "title", "format", "items")


@dataclass(frozen=True, slots=True)
class Change:
    category: str
    summary: str
    detail: tuple[str, ...] = ()
    """Lines of a text diff, when the change is prose."""

    def as_json(self) -> dict[str, Any]:
        return {"category": self.category, "summary": self.summary, "detail": list(self.detail)}


def _json(value: Any) -> str:
    return shown(json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")))


def _text_diff(old: Any, new: Any) -> tuple[str, ...]:
    before = shown(old if isinstance(old, str) else _json(old)).splitlines() or [""]
    after = shown(new if isinstance(new, str) else _json(new)).splitlines() or [""]
    if old is None:
        before = []
    if new is None:
        after = []
    lines = difflib.unified_diff(before, after, lineterm="", n=1)
    return tuple(line for line in lines if not line.startswith(("---", "+++", "@@")))


def classify(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Change]:
    """Every difference of `new` from `old` (None: nothing was ever pinned)."""
    if old is None:
        return [Change("other", "new: nothing was pinned under this key before")]
    changes: list[Change] = []
    for field, category in (("description", "description"), ("title", "title")):
        if old.get(field) != new.get(field):
            changes.append(
                Change(category, _verb(old.get(field), new.get(field)), _text_diff(
                    old.get(field), new.get(field)
                ))
            )  # fmt: skip
    if "inputSchema" in old or "inputSchema" in new:
        changes += _schema_params(old.get("inputSchema"), new.get("inputSchema"))
    if "arguments" in old or "arguments" in new:
        changes += _prompt_args(old.get("arguments"), new.get("arguments"))
    changes += _annotations(old.get("annotations"), new.get("annotations"))
    if old.get("outputSchema") != new.get("outputSchema"):
        changes.append(
            Change(
                "output_schema",
                _verb(old.get("outputSchema"), new.get("outputSchema")),
                _text_diff(old.get("outputSchema"), new.get("outputSchema")),
            )
        )
    handled = {"description", "title", "inputSchema", "arguments", "annotations", "outputSchema"}
    for field in sorted((old.keys() | new.keys()) - handled):
        if old.get(field) != new.get(field):
            changes.append(
                Change(
                    "other",
                    f"{field}: {_verb(old.get(field), new.get(field))}",
                    _text_diff(old.get(field), new.get(field)),
                )
            )
    return changes


def _verb(old: Any, new: Any) -> str:
    if old is None:
        return "added"
    if new is None:
        return "removed"
    return "changed"


def _kind(schema: Any) -> str:
    if not isinstance(schema, dict):
        return _json(schema)
    kind = schema.get("type")
    if kind is None:
        return "untyped" if "$ref" not in schema else f"ref {schema['$ref']}"
    return _json(kind) if not isinstance(kind, str) else kind


def _schema_params(old: Any, new: Any) -> list[Change]:
    changes: list[Change] = []
    old = old if isinstance(old, dict) else {}
    new = new if isinstance(new, dict) else {}
    old_props = old.get("properties") if isinstance(old.get("properties"), dict) else {}
    new_props = new.get("properties") if isinstance(new.get("properties"), dict) else {}
    old_req = set(old.get("required") or []) if isinstance(old.get("required"), list) else set()
    new_req = set(new.get("required") or []) if isinstance(new.get("required"), list) else set()
    for name in sorted(new_props.keys() - old_props.keys()):
        need = "required" if name in new_req else "optional"
        changes.append(
            Change("parameters", f"added `{shown(name)}` ({_kind(new_props[name])}, {need})")
        )
    for name in sorted(old_props.keys() - new_props.keys()):
        changes.append(Change("parameters", f"removed `{shown(name)}`"))
    for name in sorted(old_props.keys() & new_props.keys()):
        changes += _param(name, old_props[name], new_props[name])
    for name in sorted((new_req - old_req) & new_props.keys() & old_props.keys()):
        changes.append(Change("parameters", f"`{shown(name)}` became required"))
    for name in sorted((old_req - new_req) & new_props.keys() & old_props.keys()):
        changes.append(Change("parameters", f"`{shown(name)}` became optional"))
    for key in sorted((old.keys() | new.keys()) - {"properties", "required"}):
        if old.get(key) != new.get(key):
            changes.append(
                Change(
                    "parameters",
                    f"schema `{shown(key)}` {_verb(old.get(key), new.get(key))}: "
                    f"{_json(old.get(key))} -> {_json(new.get(key))}",
                )
            )
    return changes


def _param(name: str, old: Any, new: Any) -> list[Change]:
    if old == new:
        return []
    label = f"`{shown(name)}`"
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [Change("parameters", f"{label} changed: {_json(old)} -> {_json(new)}")]
    changes: list[Change] = []
    if old.get("type") != new.get("type"):
        changes.append(Change("parameters", f"{label} type {_kind(old)} -> {_kind(new)}"))
    if old.get("enum") != new.get("enum"):
        before: list[Any] = old["enum"] if isinstance(old.get("enum"), list) else []
        after: list[Any] = new["enum"] if isinstance(new.get("enum"), list) else []
        added = [v for v in after if v not in before]
        removed = [v for v in before if v not in after]
        how = (
            "widened"
            if added and not removed
            else "narrowed"
            if removed and not added
            else "changed"
        )
        changes.append(
            Change(
                "parameters",
                f"{label} enum {how}: {_json(old.get('enum'))} -> {_json(new.get('enum'))}",
            )
        )
    if old.get("default") != new.get("default"):
        changes.append(
            Change(
                "parameters",
                f"{label} default {_json(old.get('default'))} -> {_json(new.get('default'))}",
            )
        )
    if old.get("description") != new.get("description"):
        changes.append(
            Change(
                "parameters",
                f"{label} description {_verb(old.get('description'), new.get('description'))}",
                _text_diff(old.get("description"), new.get("description")),
            )
        )
    for key in sorted((old.keys() | new.keys()) - {"type", "enum", "default", "description"}):
        if old.get(key) != new.get(key):
            changes.append(
                Change(
                    "parameters",
                    f"{label} `{shown(key)}` {_json(old.get(key))} -> {_json(new.get(key))}",
                )
            )
    return changes


def _prompt_args(old: Any, new: Any) -> list[Change]:
    def by_name(args: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for arg in args if isinstance(args, list) else []:
            if isinstance(arg, dict) and isinstance(arg.get("name"), str):
                out[arg["name"]] = arg
        return out

    before, after = by_name(old), by_name(new)
    changes: list[Change] = []
    for name in sorted(after.keys() - before.keys()):
        need = "required" if after[name].get("required") else "optional"
        changes.append(Change("parameters", f"added argument `{shown(name)}` ({need})"))
    for name in sorted(before.keys() - after.keys()):
        changes.append(Change("parameters", f"removed argument `{shown(name)}`"))
    for name in sorted(before.keys() & after.keys()):
        o, n = before[name], after[name]
        if bool(o.get("required")) != bool(n.get("required")):
            state = "required" if n.get("required") else "optional"
            changes.append(Change("parameters", f"argument `{shown(name)}` became {state}"))
        for key in sorted((o.keys() | n.keys()) - {"name", "required"}):
            if o.get(key) != n.get(key):
                changes.append(
                    Change(
                        "parameters",
                        f"argument `{shown(name)}` {key} {_verb(o.get(key), n.get(key))}",
                        _text_diff(o.get(key), n.get(key)),
                    )
                )
    if not changes and old != new:
        changes.append(Change("parameters", "arguments reordered or reshaped"))
    return changes


def _annotations(old: Any, new: Any) -> list[Change]:
    if old == new:
        return []
    before = old if isinstance(old, dict) else {}
    after = new if isinstance(new, dict) else {}
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            changes.append(
                Change(
                    "annotations",
                    f"{shown(key)} {_json(before.get(key))} -> {_json(after.get(key))}",
                )
            )
    if not changes:
        changes.append(Change("annotations", f"{_json(old)} -> {_json(new)}"))
    return changes


def render(changes: list[Change]) -> list[str]:
    lines: list[str] = []
    for category in CATEGORIES:
        for change in changes:
            if change.category != category:
                continue
            lines.append(f"  {category}: {change.summary}")
            lines.extend(f"      {line}" for line in change.detail)
    return lines
