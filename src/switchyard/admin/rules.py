"""The access, rate-limit and approval rules changed through the API (dynamic registration):
each list is replaced whole, as it is read, and becomes a new configuration version. No backend
restarts for a rule change; the new rules decide from the next request on (sessions are told
their lists changed when access rules change)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from switchyard.admin.context import Problem, Request
from switchyard.admin.proposal import CHANGE, first_error, propose, writable
from switchyard.admin.routes import ANY_OBJECT, JSON, Answer, Operation, array_of
from switchyard.config.schema import (
    ApprovalsConfig,
    AuthConfig,
    RateLimitsConfig,
    SwitchyardConfig,
)
from switchyard.config.versions import document_of


@dataclass(frozen=True, slots=True)
class RuleList:
    """One rule list: where it lives in the configuration and what a write may set."""

    path: str
    name: str
    what: str
    section: str
    """The configuration's section holding `rules` (and the other `fields`)."""
    model: type[BaseModel]
    """The section's model: a write is validated as the file's section is."""
    fields: Sequence[str]
    """What the body may set: `rules`, and settings that decide with them."""
    read_only: Sequence[str] = ()
    """Keys the list's GET adds to each rule (ignored in a write, so a read can be sent back)."""
    shown: Callable[[SwitchyardConfig], dict[str, Any]] = lambda config: {}
    """Settings the list's GET shows that the API does not change: a write may repeat them
    as read (so a read can be sent back), not change them."""
    live: Sequence[str] = ()
    """What the list's GET reports that is no setting (counters): ignored in a write."""

    def body(self) -> JSON:
        properties: dict[str, JSON] = {"rules": array_of(ANY_OBJECT)}
        for name in self.fields:
            properties.setdefault(name, {"description": f"as `{self.section}.{name}`"})
        for name in self.shown(SwitchyardConfig()):
            properties[name] = {"description": "read-only: as read, or left out"}
        for name in self.live:
            properties[name] = {"description": "read-only: ignored"}
        return {
            "type": "object",
            "required": ["rules"],
            "properties": properties,
            "additionalProperties": False,
            "description": f"The whole list of {self.what}, in order (see the README).",
        }


ACCESS: Final = RuleList(
    "/admin/v1/access-rules",
    "AccessRules",
    "access rules",
    "auth",
    AuthConfig,
    ("rules",),
    read_only=("index",),
    shown=lambda config: {"enabled": config.auth.enabled, "default": "deny"},
)
RATE_LIMITS: Final = RuleList(
    "/admin/v1/rate-limits",
    "RateLimits",
    "rate-limit rules",
    "rate_limits",
    RateLimitsConfig,
    ("rules", "defaults"),
    live=("status",),
)
APPROVALS: Final = RuleList(
    "/admin/v1/approval-rules",
    "ApprovalRules",
    "approval rules",
    "approvals",
    ApprovalsConfig,
    ("rules", "default", "default_approver", "auto_execute"),
    shown=lambda config: {
        "enabled": config.approvals.enabled,
        "ticket_ttl": config.approvals.ticket_ttl,
    },
)


def _writer(rules: RuleList) -> Any:
    async def handler(request: Request) -> Answer:
        """Replace the list (and the settings given with it): a new configuration version."""
        writable(request, rules.what)
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
            raise Problem(400, "the body must be a JSON object with `rules`, a list")
        assert request.ctx.desired is not None
        config = request.ctx.desired.config
        for key, value in rules.shown(config).items():
            if key in body and body[key] != value:
                raise Problem(
                    422,
                    f"{key}: the API does not change it (it is {json.dumps(value)}); leave it "
                    "out or as read",
                )
        given = {k: v for k, v in body.items() if k in rules.fields}
        given["rules"] = [
            {k: v for k, v in rule.items() if k not in rules.read_only}
            if isinstance(rule, dict)
            else rule
            for rule in body["rules"]
        ]
        document = document_of(config)
        section = {**document.get(rules.section, {}), **given}
        try:
            rules.model.model_validate(section)
        except ValidationError as exc:
            raise Problem(422, f"not valid {rules.what}: {first_error(exc)}") from None
        document[rules.section] = section
        count = len(given["rules"])
        return await propose(request, document, f"set {rules.what} ({count})")

    return handler


OPERATIONS: Final = tuple(
    Operation(
        "PUT",
        rules.path,
        f"put{rules.name}",
        f"Replace the {rules.what} (dynamic registration): a new configuration version",
        "write",
        "configuration",
        CHANGE,
        _writer(rules),
        body=rules.body(),
        if_match=True,
        etag=True,
        statuses=(409, 412, 422, 428),
        etag_from=rules.path,
    )
    for rules in (ACCESS, RATE_LIMITS, APPROVALS)
)
