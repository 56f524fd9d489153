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
