"""Checks a redacted `structuredContent` against the tool's `outputSchema`.

Redaction replaces strings with strings, so types and keys hold; what can break is a
constraint on a string (`pattern`, `format`, `minLength`/`maxLength`, `enum`, `const`) or a
stripped key the schema requires. The schema is the backend's: its `pattern`s run on RE2 here
(a backend's pattern must not be able to stall the gateway), `$ref`s resolve only within the
schema, and formats are checked as well as the validator knows them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import re2
from jsonschema import FormatChecker, SchemaError, ValidationError, validators
from referencing import Registry

MAX_CACHED: Final = 512


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not isinstance(instance, str):
        return
    compiled: Any = _patterns.get(pattern)
    if compiled is None:
        options = re2.Options()
        options.log_errors = False
        try:
            compiled = re2.compile(pattern, options)
        except re2.error:
            compiled = False
        if len(_patterns) >= MAX_CACHED:
            _patterns.clear()
        _patterns[pattern] = compiled
    if compiled is False or compiled.search(instance) is None:  # False: RE2 cannot run it
        # Never the instance in the message: it may be the very value being protected.
        yield ValidationError("does not match the schema's pattern")


_patterns: dict[str, Any] = {}
_validators: dict[bytes, Any] = {}


def _validator(schema_json: bytes, schema: Any) -> Any | None:
    if schema_json in _validators:
        return _validators[schema_json]
    compiled: Any | None = None
    if isinstance(schema, dict):
        base = validators.validator_for(schema)
        try:
            base.check_schema(schema)
        except SchemaError:
            compiled = None
        else:
            cls = validators.extend(base, {"pattern": _pattern})
            compiled = cls(schema, registry=Registry(), format_checker=FormatChecker())
    if len(_validators) >= MAX_CACHED:
        _validators.clear()
    _validators[schema_json] = compiled
    return compiled


# Keywords whose outcome depends on more than the one value under them: a change under one
# of these is judged by validating the whole instance.
_COMPOSITE: Final = frozenset(
    {"anyOf", "oneOf", "allOf", "not", "if", "then", "else", "dependentSchemas",
     "patternProperties", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "contains"}
)  # fmt: skip
_MAX_REF_HOPS: Final = 16
_leaf_validators: dict[tuple[bytes, str], Any] = {}


def _follow(root: Any, node: Any) -> Any | None:
    """`node` with local `$ref`s followed; None when it is not a plain object schema."""
    for _ in range(_MAX_REF_HOPS):
        if node is True:
            return {}
        if not isinstance(node, dict) or node.keys() & _COMPOSITE:
            return None
        ref = node.get("$ref")
        if ref is None:
            return node
        if not isinstance(ref, str) or not ref.startswith("#") or len(node) > 1:
            return None
        target: Any = root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                return None
            target = target[part]
        node = target
    return None


def _leaf(root: Any, instance: Any, parts: list[str]) -> tuple[Any, str, Any] | None:
    """The subschema, its location and the value at `parts`; None when only the whole can
    tell."""
    node = _follow(root, root)
    where = "#"
    for part in parts:
        if node is None:
            return None
        if isinstance(instance, list):
            index = int(part)
            instance = instance[index]
            prefix = node.get("prefixItems")
            if isinstance(prefix, list) and index < len(prefix):
                node, where = prefix[index], f"{where}/prefixItems/{index}"
            else:
                node, where = node.get("items", True), f"{where}/items"
        elif isinstance(instance, dict):
            instance = instance[part]
            props = node.get("properties")
            if isinstance(props, dict) and part in props:
                node, where = props[part], f"{where}/properties/{part}"
            else:
                node, where = node.get("additionalProperties", True), f"{where}/+"
        else:
            return None
        node = _follow(root, node)
    return (node, where, instance) if node is not None else None


# Subschema keywords a replaced string can be judged by directly, without a validator: one
# leaf's check then costs a few dictionary lookups instead of a validator's descent.
_STRING_KEYWORDS: Final = frozenset(
    {"type", "format", "pattern", "minLength", "maxLength", "enum", "const", "title",
     "description", "examples", "default", "$comment", "deprecated", "readOnly", "writeOnly",
     "contentMediaType", "contentEncoding"}
)  # fmt: skip
_FORMATS: Final = FormatChecker()
_walks: dict[tuple[bytes, tuple[str, ...]], tuple[Any, str] | None] = {}


def _string_conforms(sub: dict[str, Any], value: str) -> bool | None:
    """Whether the string `value` meets `sub`; None when `sub` holds a keyword only a
    validator can judge."""
    if not sub.keys() <= _STRING_KEYWORDS:
        return None
    kind = sub.get("type")
    if kind is not None and kind != "string" and not (isinstance(kind, list) and "string" in kind):
        return False
    if "enum" in sub and value not in [v for v in sub["enum"] if isinstance(v, str)]:
        return False
    if "const" in sub and sub["const"] != value:
        return False
    low, high = sub.get("minLength"), sub.get("maxLength")
    if (isinstance(low, int) and len(value) < low) or (isinstance(high, int) and len(value) > high):
        return False
    pattern = sub.get("pattern")
    if isinstance(pattern, str) and next(_pattern(None, pattern, value, sub), None) is not None:
        return False
    fmt = sub.get("format")
    return not isinstance(fmt, str) or _FORMATS.conforms(value, fmt)


def _located(
    schema_json: bytes, schema: Any, instance: Any, parts: list[str]
) -> tuple[Any, str, Any] | None:
    """`_leaf`, with the schema walk remembered per shape of path: every item of an array
    shares its subschema unless the schema has `prefixItems`."""
    shape: list[str] = []
    value = instance
    for part in parts:
        if isinstance(value, list):
            value = value[int(part)]
            shape.append("[]")
        elif isinstance(value, dict):
            value = value[part]
            shape.append(part)
        else:
            return None
    if b"prefixItems" in schema_json:
        return _leaf(schema, instance, parts)
    key = (schema_json, tuple(shape))
    if key not in _walks:
        found = _leaf(schema, instance, parts)
        if len(_walks) >= MAX_CACHED:
            _walks.clear()
        _walks[key] = None if found is None else (found[0], found[1])
    walked = _walks[key]
    return None if walked is None else (walked[0], walked[1], value)


def changed_violation(
    schema_json: bytes, schema: Any, instance: Any, changed: list[str]
) -> str | None:
    """Like `first_violation`, but only the string leaves at `changed` (JSON pointers into
    `instance`) were replaced: each is checked against its own subschema, which costs far
    less than validating a large result whole. Falls back to the whole where a leaf's
    subschema depends on its siblings."""
    validator = _validator(schema_json, schema)
    if validator is None:
        return None
    for pointer in changed:
        parts = pointer.split("/")[1:]
        if "~" in pointer:  # an escaped `/` or `~` in a key
            parts = [p.replace("~1", "/").replace("~0", "~") for p in parts]
        try:
            found = _located(schema_json, schema, instance, parts)
        except (IndexError, KeyError, ValueError):
            found = None
        if found is None:
            return first_violation(schema_json, schema, instance)
        sub, where, value = found
        if isinstance(value, str) and isinstance(sub, dict):
            conforms = _string_conforms(sub, value)
            if conforms is not None:
                if not conforms:
                    return pointer
                continue
        key = (schema_json, where)
        leaf = _leaf_validators.get(key)
        if leaf is None:
            leaf = type(validator)(sub, registry=Registry(), format_checker=FormatChecker())
            if len(_leaf_validators) >= MAX_CACHED:
                _leaf_validators.clear()
            _leaf_validators[key] = leaf
        try:
            if next(iter(leaf.iter_errors(value)), None) is not None:
                return pointer
        except Exception:  # the subschema refers outside itself: judge the whole
            return first_violation(schema_json, schema, instance)
    return None


def first_violation(schema_json: bytes, schema: Any, instance: Any) -> str | None:
    """The JSON pointer of the first place `instance` breaks the schema, or None when it
    conforms (or the schema is not one a validator can use)."""
    validator = _validator(schema_json, schema)
    if validator is None:
        return None
    try:
        for error in validator.iter_errors(instance):
            return "/" + "/".join(str(p) for p in error.absolute_path)
    except Exception:  # an unresolvable `$ref` and the like: the schema cannot judge
        return None
    return None
