"""The admin plane's route table: one `Operation` per method and path. The server dispatches on
it and the OpenAPI document is generated from it, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import unquote

if TYPE_CHECKING:
    from switchyard.admin.context import Request

Access = Literal["read", "write", "caller"]
"""`read`: an admin or read-only admin role; `write`: an admin role; `caller`: any
authenticated caller (what it may see is decided by the resource, e.g. approvals)."""

JSON = dict[str, Any]

ERROR: Final[JSON] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


def obj(properties: Mapping[str, JSON], required: Sequence[str] = ()) -> JSON:
    """An object schema; further properties are allowed (answers may grow)."""
    return {"type": "object", "required": list(required), "properties": dict(properties)}


def array_of(item: JSON) -> JSON:
    return {"type": "array", "items": item}


STRING: Final[JSON] = {"type": "string"}
INTEGER: Final[JSON] = {"type": "integer"}
BOOLEAN: Final[JSON] = {"type": "boolean"}
ANY_OBJECT: Final[JSON] = {"type": "object"}
NULLABLE_STRING: Final[JSON] = {"type": ["string", "null"]}
NULLABLE_INTEGER: Final[JSON] = {"type": ["integer", "null"]}


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    schema: JSON
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    etag: str | None = None
    audit: Mapping[str, Any] | None = None
    """For a write: what its audit record says (target, outcome details)."""


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    """`/admin/v1/backends/{name}`: `{x}` matches one path segment (percent-decoded)."""
    name: str
    summary: str
    access: Access
    tag: str
    response: JSON
    handler: Callable[[Request], Awaitable[Answer]] | None = None
    raw: Callable[[Request], Awaitable[None]] | None = None
    """Answers by itself on the request's ASGI channel (the approvals' own handlers)."""
    status: int = 200
    body: JSON | None = None
    query: tuple[Query, ...] = ()
    if_match: bool = False
    """A write that needs `If-Match` with the resource's current ETag (428 without)."""
    etag: bool = False
    """The answer carries an `ETag`."""
    media: str = "application/json"
    statuses: tuple[int, ...] = ()
    """Other statuses it may answer with (besides the success one and the common errors)."""
    etag_from: str | None = None
    """For a write: the path whose GET answers with the ETag it needs (the CLI reads it)."""
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.strip("/").split("/")))

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(s[1:-1] for s in self.segments if s.startswith("{"))

    def match(self, raw_segments: Sequence[str]) -> dict[str, str] | None:
        if len(raw_segments) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for pattern, raw in zip(self.segments, raw_segments, strict=True):
            if pattern.startswith("{"):
                value = unquote(raw)
                if not value:
                    return None
                found[pattern[1:-1]] = value
            elif pattern != raw:
                return None
        return found


class Routes:
    def __init__(self, operations: Sequence[Operation]) -> None:
        self.operations = tuple(operations)
        seen: set[tuple[str, str]] = set()
        for op in self.operations:
            key = (op.method, op.path)
            if key in seen:
                raise ValueError(f"two operations for {op.method} {op.path}")
            seen.add(key)

    def find(self, method: str, raw_path: str) -> tuple[Operation, dict[str, str]] | str | None:
        """The operation and its path parameters; the allowed methods (a string, for 405)
        when the path exists with other methods; None for an unknown path."""
        segments = raw_path.strip("/").split("/")
        allowed: list[str] = []
        for op in self.operations:
            params = op.match(segments)
            if params is None:
                continue
            if op.method == method:
                return op, params
            allowed.append(op.method)
        return ", ".join(sorted(set(allowed))) if allowed else None

    def prefixes(self) -> tuple[str, ...]:
        return tuple(sorted({"/" + op.segments[0] + "/" for op in self.operations}))
