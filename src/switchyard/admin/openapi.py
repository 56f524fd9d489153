"""The OpenAPI 3.1 document of the admin plane, generated from the route table it dispatches on."""

from __future__ import annotations

from typing import Any, Final

from switchyard import __version__
from switchyard.admin.routes import ERROR, Operation, Routes

COMMON_ERRORS: Final = {
    400: "Invalid input",
    401: "No or invalid credential",
    403: "The credential may not do this",
    404: "No such resource",
    405: "Method not allowed on this path",
}
STATUS_TEXT: Final = {
    202: "Accepted",
    409: "Conflicts with the resource's state or the configuration's source",
    410: "Gone",
    412: "If-Match does not name the current ETag",
    422: "Valid JSON, but not a valid change",
    428: "The change needs If-Match",
    429: "Too many requests",
    502: "A backend failed",
    503: "A store is unavailable; retry",
}


def _operation(op: Operation) -> dict[str, Any]:
    error_schema = ERROR if op.access != "caller" else {"type": "object"}
    error = {"description": "Error", "content": {"application/json": {"schema": error_schema}}}
    success: dict[str, Any] = {
        "description": "Success",
        "content": {op.media: {"schema": op.response}},
    }
    if op.etag:
        success["headers"] = {"ETag": {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(op.status): success}
    for status in sorted({*COMMON_ERRORS, *op.statuses} - {op.status}):
        text = COMMON_ERRORS.get(status) or STATUS_TEXT.get(status, "Error")
        if status == 202 and op.access == "caller":
            responses["202"] = {
                "description": "Accepted: waits for approval",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
            continue
        responses[str(status)] = {**error, "description": text}
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in op.parameters
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": q.schema,
        }
        for q in op.query
    ]
    if op.if_match:
        parameters.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": "The ETag of what is changed, as last read (428 without it)",
                "schema": {"type": "string"},
            }
        )
    out: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
        "x-switchyard-access": op.access,
    }
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.access != "caller",
            "content": {"application/json": {"schema": op.body}},
        }
    return out


def document(routes: Routes, server_url: str | None = None) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in routes.operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard admin API",
            "version": __version__,
            "description": "The admin plane of a Switchyard MCP gateway. `read` operations need "
            "an admin or read-only admin role (or scope), `write` operations an admin role; "
            "`caller` operations any authenticated caller. Writes need `If-Match` with the "
            "ETag of what they change.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`sy_...`) or a JWT from a configured issuer",
                }
            }
        },
        "security": [{"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
