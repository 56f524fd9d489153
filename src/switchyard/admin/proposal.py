"""A change to the desired configuration through the admin API: allowed only when the database
is the configuration's source, checked against the version the caller read (`If-Match`),
validated whole, recorded as the next version with the caller as author, then served."""

from __future__ import annotations

from typing import Any, Final

from switchyard.admin.context import Problem, Request
from switchyard.admin.routes import INTEGER, STRING, Answer, array_of, obj
from switchyard.config.versions import Refused, VersionConflict

CHANGE: Final = obj(
    {
        "version": INTEGER,
        "added": array_of(STRING),
        "replaced": array_of(STRING),
        "removed": array_of(STRING),
    },
    ["version"],
)
"""The answer to a write: the new version, and the backends it started, replaced, removed."""


def config_etag(request: Request) -> str:
    desired = request.ctx.desired
    return f'"v{desired.version if desired is not None else 0}"'


def writable(request: Request, what: str) -> None:
    """409 unless the API may change the configuration (`what`: the resource, for the message)."""
    if not request.ctx.dynamic or request.ctx.desired is None:
        raise Problem(
            409,
            f"{what} are configured in the file: set admin.dynamic_registration to manage "
            "them through the API",
        )


async def propose(request: Request, document: dict[str, Any], summary: str) -> Answer:
    """`document` as the next version, if `If-Match` names the current one and it validates."""
    desired = request.ctx.desired
    assert desired is not None
    request.require(config_etag(request))
    try:
        version, changes = await desired.propose(
            document, request.actor, summary, expected=desired.version
        )
    except VersionConflict as exc:
        message = f'the configuration changed: its ETag is now "v{exc.current}"'
        raise Problem(412, message) from None
    except Refused as exc:
        raise Problem(422, str(exc)) from None
    body = {
        "version": version.version,
        "added": list(changes.added),
        "replaced": list(changes.replaced),
        "removed": list(changes.removed),
    }
    return Answer(
        200,
        body,
        etag=f'"v{version.version}"',
        audit={"target": summary, "version": version.version},
    )


def first_error(exc: ValueError, prefix: str = "") -> str:
    """The first validation error, with the dotted path of the field it is about."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        found = errors()
        if found:
            parts = [prefix] if prefix else []
            parts += [str(p) for p in found[0].get("loc", ())]
            message = str(found[0].get("msg"))
            if found[0].get("type") == "extra_forbidden":
                message = "unknown key"
            where = ".".join(parts)
            return f"{where}: {message}" if where else message
    return "invalid"
