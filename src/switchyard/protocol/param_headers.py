"""`x-mcp-header` (2026-07-28): tool arguments mirrored into `Mcp-Param-{Name}` HTTP headers.

A tool's `inputSchema` may mark a property with `"x-mcp-header": "<Name>"`; a Streamable HTTP
client then sends that argument's value, encoded, as `Mcp-Param-<Name>`, and a server that reads
the body must refuse (`-32020`) a request whose headers disagree with it. An annotation is valid
only if its value is a non-empty HTTP token, unique (case-insensitively) within the schema, on a
property of type string, integer or boolean, reached from the schema root through `properties`
keys alone. A tool with any other annotation is invalid as a whole, and left out of listings.

Values are written as is when they are visible ASCII or inner spaces; anything else (non-ASCII,
control characters, leading or trailing whitespace, or a value that itself looks like the
sentinel) is sent as `=?base64?<base64 of its UTF-8>?=`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from switchyard.wire import frame
from switchyard.wire.frame import Raw

PREFIX: Final = "Mcp-Param-"
ANNOTATION: Final = "x-mcp-header"
SENTINEL_HEAD: Final = "=?base64?"
SENTINEL_TAIL: Final = "?="
MAX_SAFE_INTEGER: Final = 2**53 - 1
PRIMITIVES: Final = frozenset({"string", "integer", "boolean"})

# RFC 9110 token: 1*tchar
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What a header value may hold as plain text: visible ASCII, and spaces inside it.
_PLAIN: Final = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
# Subschema keywords of JSON Schema 2020-12 (and draft-07's `definitions`/`dependencies`): an
# annotation under any of them is not statically reachable. Instance-valued keywords (`enum`,
# `const`, `default`, `examples`) hold data, not schemas, and are not searched.
_ONE_SCHEMA: Final = (
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
)
_SCHEMA_LISTS: Final = ("prefixItems", "allOf", "anyOf", "oneOf", "items")
_SCHEMA_MAPS: Final = (
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
    "dependencies",
)


@dataclass(frozen=True, slots=True)
class HeaderParam:
    """One mirrored argument: header `Mcp-Param-<name>` carries arguments[path[0]][path[1]]…"""

    name: str
    path: tuple[str, ...]
    kind: str
    """"string", "integer" or "boolean"."""

    @property
    def header(self) -> str:
        return PREFIX + self.name


class InvalidAnnotation(ValueError):
    pass


def invalid_reason(tool: bytes | Raw | Mapping[str, Any]) -> str | None:
    """Why a listed tool's `x-mcp-header` annotations make it invalid; None if they are fine
    (or absent). `tool` is the tool item as listed (JSON, or decoded one level or fully)."""
    try:
        header_params(tool)
    except InvalidAnnotation as exc:
        return str(exc)
    return None


def header_params(tool: bytes | Raw | Mapping[str, Any]) -> tuple[HeaderParam, ...]:
    """The tool's mirrored arguments, in schema order. Raises `InvalidAnnotation`."""
    try:
        if isinstance(tool, Mapping):
            schema: Any = tool.get("inputSchema")
            if isinstance(schema, Raw):
                schema = _decode(bytes(schema))
            return _scan(schema)
        return _annotations_of(bytes(tool))
    except RecursionError:
        raise InvalidAnnotation("inputSchema nested too deeply to check") from None


@functools.lru_cache(maxsize=1024)
def _annotations_of(item: bytes) -> tuple[HeaderParam, ...]:
    # Cached: a catalog entry keeps the same bytes object for as long as the listing stands.
    tool = _decode(item)
    return _scan(tool.get("inputSchema") if isinstance(tool, dict) else None)


def _decode(data: bytes) -> Any:
    try:
        return frame.decode_any(data)
    except (frame.DecodeError, frame.ValidationError) as exc:
        raise InvalidAnnotation(f"not JSON: {exc}") from None


def _scan(schema: Any) -> tuple[HeaderParam, ...]:
    found: list[HeaderParam] = []
    if isinstance(schema, dict):
        if ANNOTATION in schema:
            raise InvalidAnnotation("x-mcp-header on the schema root, not on a property")
        _scan_properties(schema, (), found)
        _refuse_unreachable(schema, "inputSchema")
    seen: dict[str, str] = {}
    for param in found:
        folded = param.name.lower()
        if folded in seen:
            raise InvalidAnnotation(
                f"x-mcp-header {param.name!r} repeats {seen[folded]!r} (names are case-insensitive)"
            )
        seen[folded] = param.name
    return tuple(found)


def _scan_properties(schema: dict[str, Any], path: tuple[str, ...], out: list[HeaderParam]) -> None:
    """Annotations reached through `properties` keys alone, depth first in schema order."""
    props = schema.get("properties")
    if not isinstance(props, dict):
        return
    for key, sub in props.items():
        if not isinstance(sub, dict):
            continue
        where = (*path, key)
        if ANNOTATION in sub:
            out.append(_param(sub, where))
        _scan_properties(sub, where, out)


def _param(schema: dict[str, Any], path: tuple[str, ...]) -> HeaderParam:
    where = ".".join(path)
    name = schema[ANNOTATION]
    if not isinstance(name, str) or not name:
        raise InvalidAnnotation(f"x-mcp-header of {where!r} is not a non-empty string")
    if _TOKEN.fullmatch(name) is None:
        raise InvalidAnnotation(f"x-mcp-header {name!r} of {where!r} is not an HTTP token")
    kind = _primitive(schema.get("type"))
    if kind is None:
        raise InvalidAnnotation(
            f"x-mcp-header {name!r} is on {where!r}, whose type is not one of string, integer "
            "or boolean"
        )
    return HeaderParam(name, path, kind)


def _primitive(declared: Any) -> str | None:
    if isinstance(declared, str):
        return declared if declared in PRIMITIVES else None
    if isinstance(declared, list):
        # A nullable primitive: null never travels (the header is omitted).
        kinds = [t for t in declared if t != "null"]
        if len(kinds) == 1 and isinstance(kinds[0], str) and kinds[0] in PRIMITIVES:
            return kinds[0]
    return None


def _refuse_unreachable(schema: Any, where: str) -> None:
    """Any annotation under a subschema keyword (arrays, composition, conditionals, `$ref`
    targets) makes the tool invalid; `properties` chains are searched the same way below
    them, since a property schema may itself use such keywords."""
    if not isinstance(schema, dict):
        return
    props = schema.get("properties")
    if isinstance(props, dict):
        for key, sub in props.items():
            _refuse_unreachable(sub, f"{where}.properties.{key}")
    for keyword in _ONE_SCHEMA:
        sub = schema.get(keyword)
        if isinstance(sub, dict):
            _refuse_anywhere(sub, f"{where}.{keyword}")
    for keyword in _SCHEMA_LISTS:
        subs = schema.get(keyword)
        if isinstance(subs, list):
            for i, sub in enumerate(subs):
                _refuse_anywhere(sub, f"{where}.{keyword}[{i}]")
    for keyword in _SCHEMA_MAPS:
        subs = schema.get(keyword)
        if isinstance(subs, dict):
            for key, sub in subs.items():
                _refuse_anywhere(sub, f"{where}.{keyword}.{key}")


def _refuse_anywhere(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        return
    if ANNOTATION in schema:
        raise InvalidAnnotation(
            f"x-mcp-header at {where} is not reachable through properties alone"
        )
    props = schema.get("properties")
    if isinstance(props, dict):
        for key, sub in props.items():
            _refuse_anywhere(sub, f"{where}.properties.{key}")
    _refuse_unreachable({k: v for k, v in schema.items() if k != "properties"}, where)


# -- values ------------------------------------------------------------------------------------


def encode_value(value: str) -> str:
    """A header value for `value`: as is when it is safe plain text, else the base64 sentinel."""
    looks_encoded = value.startswith(SENTINEL_HEAD) and value.endswith(SENTINEL_TAIL)
    # An empty value is sent encoded too: some HTTP stacks drop empty headers.
    if _PLAIN.fullmatch(value) is not None and not looks_encoded:
        return value
    return SENTINEL_HEAD + base64.b64encode(value.encode("utf-8")).decode("ascii") + SENTINEL_TAIL


def decode_value(value: str) -> str | None:
    """The text a received header value stands for; None if it is malformed (characters a
    header may not carry plainly, or a sentinel that is not base64 of UTF-8)."""
    if value.startswith(SENTINEL_HEAD) and value.endswith(SENTINEL_TAIL) and len(value) >= 11:
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
    if value and _PLAIN.fullmatch(value) is None:
        return None
    return value


def _text(value: Any, kind: str) -> str | None:
    """The header text for one argument value; None when nothing is to be sent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and kind == "integer":
        return str(int(value))
    if isinstance(value, str):
        return value
    return None  # an object, array or fraction: not mirrorable; the backend judges the body


def _at(arguments: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(arguments, dict):
            return None
        arguments = arguments.get(key)
    return arguments


def _arguments(arguments: bytes | Raw | Mapping[str, Any] | None) -> Any:
    if arguments is None or isinstance(arguments, Mapping):
        return arguments
    try:
        return frame.decode_any(arguments)
    except (frame.DecodeError, frame.ValidationError):
        return None


def _params(tool: bytes | Raw | Sequence[HeaderParam]) -> Sequence[HeaderParam]:
    if isinstance(tool, (bytes, Raw)):
        return header_params(tool)
    return tool


def headers_for(
    tool: bytes | Raw | Sequence[HeaderParam],
    arguments: bytes | Raw | Mapping[str, Any] | None,
) -> list[tuple[str, str]]:
    """The `Mcp-Param-*` headers a `tools/call` with these arguments carries. `tool` is the
    listed tool item (JSON) or its `header_params()`; a tool without annotations costs nothing
    more, and arguments are decoded only when there are some. Absent and null values send no
    header."""
    params = _params(tool)
    if not params:
        return []
    args = _arguments(arguments)
    out: list[tuple[str, str]] = []
    for param in params:
        text = _text(_at(args, param.path), param.kind)
        if text is not None:
            out.append((param.header, encode_value(text)))
    return out


def check_request(
    headers: Iterable[tuple[str, str]] | Mapping[str, str],
    tool: bytes | Raw | Sequence[HeaderParam],
    arguments: bytes | Raw | Mapping[str, Any] | None,
) -> str | None:
    """Why a `tools/call`'s `Mcp-Param-*` headers disagree with its arguments (answer 400 with
    `-32020` and this message); None if they agree. Headers for names the tool does not
    annotate are not judged."""
    params = _params(tool)
    if not params:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    wanted = {param.header.lower(): param for param in params}
    received: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key not in wanted:
            continue
        if key in received:
            return f"Header mismatch: {wanted[key].header} sent more than once"
        received[key] = value
    args = _arguments(arguments)
    for key, param in wanted.items():
        expected = _at(args, param.path)
        sent = received.get(key)
        if expected is None:
            if sent is not None:
                return f"Header mismatch: {param.header} sent, but the argument is absent"
            continue
        if sent is None:
            return f"Header mismatch: {param.header} missing for a value in the body"
        decoded = decode_value(sent)
        if decoded is None:
            return f"Header mismatch: {param.header} has an invalid value"
        if not _same(decoded, expected, param.kind):
            return f"Header mismatch: {param.header} does not match the body"
    return None


def _same(header: str, body: Any, kind: str) -> bool:
    if kind == "integer" and isinstance(body, (int, float)) and not isinstance(body, bool):
        # Compared as numbers: "42" and 42.0 agree.
        try:
            number = float(header) if any(c in header for c in ".eE") else int(header)
        except ValueError:
            return False
        return bool(number == body)
    return header == _text(body, kind)
