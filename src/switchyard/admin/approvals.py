"""The approvals' and applications' REST (`downstream.approvals_api`) as operations of the admin
plane: the same authentication and the same OpenAPI document. What a caller may see and decide
is the approvals policy's (`Approvals.may_see`, `may_decide`), not an admin role."""

from __future__ import annotations

from typing import Final

from switchyard.admin.context import Request
from switchyard.admin.routes import ANY_OBJECT, STRING, Operation, Query, array_of, obj
from switchyard.downstream import approvals_api
from switchyard.storage.tickets import STATES

TICKET: Final = obj({"id": STRING, "status": STRING}, ["id", "status"])
DECISION_BODY: Final = {
    "type": "object",
    "properties": {"reason": {"type": "string", "maxLength": 2000}},
}


async def delegate(request: Request) -> None:
    await approvals_api.serve(
        request.ctx.gateway, request.scope, request.receive, request.send, request.who
    )


OPERATIONS: Final = (
    Operation(
        "GET",
        "/admin/v1/approvals",
        "listApprovals",
        "Approval tickets: the caller's own, or all for an approver role",
        "caller",
        "approvals",
        obj({"approvals": array_of(TICKET)}, ["approvals"]),
        raw=delegate,
        query=(Query("status", {"type": "string", "enum": list(STATES)}, "only this status"),),
        statuses=(403, 404, 503),
    ),
    Operation(
        "GET",
        "/admin/v1/approvals/{id}",
        "getApproval",
        "One ticket",
        "caller",
        "approvals",
        TICKET,
        raw=delegate,
        statuses=(403, 404, 503),
    ),
    *(
        Operation(
            "POST",
            f"/admin/v1/approvals/{{id}}/{verb}",
            f"{verb}Approval",
            f"{verb.capitalize()} a ticket",
            "caller",
            "approvals",
            TICKET,
            raw=delegate,
            body=DECISION_BODY,
            statuses=(403, 404, 409, 410, 503),
        )
        for verb in ("approve", "deny")
    ),
    Operation(
        "GET",
        "/approvals/{id}",
        "approvalPage",
        "The approval page a URL elicitation points at (HTML)",
        "caller",
        "approvals",
        STRING,
        raw=delegate,
        media="text/html",
        statuses=(403, 404),
    ),
    Operation(
        "GET",
        "/v1/tools",
        "listCallableTools",
        "The tools this credential may call, as MCP tools or an LLM API's function shapes",
        "caller",
        "tools",
        obj({"tools": array_of(ANY_OBJECT)}, ["tools"]),
        raw=delegate,
        query=(
            Query("format", {"type": "string", "enum": ["mcp", "openai", "anthropic"]}, "shape"),
        ),
        statuses=(502,),
    ),
    Operation(
        "POST",
        "/v1/tools/call",
        "callTool",
        "Execute one proposed call through the same policy chain as /mcp",
        "caller",
        "tools",
        ANY_OBJECT,
        raw=delegate,
        body={"type": "object"},
        statuses=(202, 403, 404, 409, 429, 502, 503),
    ),
)
