"""Every operation of the admin plane, in one table: what the server dispatches on, what the
OpenAPI document describes and what `switchyard admin` offers as subcommands."""

from __future__ import annotations

from typing import Final

from switchyard.admin import (
    approvals,
    audit_records,
    backends,
    catalog_items,
    configuration,
    keys,
    permissions,
    pins,
    rules,
    virtual_servers,
)
from switchyard.admin.context import Request
from switchyard.admin.openapi import document
from switchyard.admin.routes import Answer, Operation, Routes, obj

OPENAPI_PATH: Final = "/admin/v1/openapi.json"


async def _openapi(request: Request) -> Answer:
    return Answer(200, document(ROUTES))


ROUTES: Final = Routes(
    [
        Operation(
            "GET",
            OPENAPI_PATH,
            "getOpenApi",
            "This document",
            "read",
            "meta",
            obj({"openapi": {"type": "string"}, "paths": {"type": "object"}}, ["openapi"]),
            _openapi,
        ),
        *configuration.OPERATIONS,
        *backends.OPERATIONS,
        *permissions.OPERATIONS,
        *keys.OPERATIONS,
        *pins.OPERATIONS,
        *audit_records.OPERATIONS,
        *approvals.OPERATIONS,
        *catalog_items.OPERATIONS,
        *virtual_servers.OPERATIONS,
        *rules.OPERATIONS,
    ]
)
