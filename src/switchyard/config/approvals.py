"""Compile the `approvals:` section: rules checked once at load, the signing key, and the
policy version every ticket is bound to (a digest of the section as configured)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any, Final

import msgspec

from switchyard.audit.canonical import CanonicalError, canonical
from switchyard.config.schema import ApprovalRuleConfig, ApprovalsConfig
from switchyard.policies.approval_rules import (
    CALLER,
    ApprovalRule,
    ApprovalRules,
    ArgumentCondition,
)
from switchyard.policies.approvals import ApprovalSettings, WebhookSettings
from switchyard.policies.rate_limits import patterns
from switchyard.storage.settings import StorageSettings

MIN_SECRET_CHARS: Final = 16


class ApprovalConfigError(ValueError):
    """The section is invalid; the message names the offending key."""


def arguments_digest(key: bytes, arguments: Any) -> str:
    """HMAC-SHA256 of the arguments' RFC 8785 form: equal for equal arguments, whatever key
    order or spacing the client used; keyed, so a digest shown to approvers or recorded in the
    audit trail cannot be matched against guessed arguments."""
    try:
        body = canonical(arguments)
    except (CanonicalError, RecursionError):
        body = msgspec.json.encode(arguments)
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _rule(where: str, rule: ApprovalRuleConfig, default_issuer: str) -> ApprovalRule:
    issuers = (
        rule.issuers
        if rule.issuers is not None
        else ([default_issuer] if rule.principals else None)
    )
    conditions = []
    for name, cond in (rule.arguments or {}).items():
        if cond.model_dump(exclude_none=True) == {}:
            raise ApprovalConfigError(f"{where}.arguments.{name}: set at least one condition")
        extra: dict[str, Any] = {}
        if cond.equals is not None:
            extra["equals"] = cond.equals
        conditions.append(
            ArgumentCondition(
                name,
                one_of=tuple(cond.one_of) if cond.one_of is not None else None,
                matches=cond.matches,
                greater_than=cond.greater_than,
                present=cond.present,
                **extra,
            )
        )
    if not rule.approver:
        raise ApprovalConfigError(f"{where}.approver: `caller` or a role name")
    return ApprovalRule(
        name=rule.name,
        require=rule.action == "require",
        approver=rule.approver,
        principals=patterns(rule.principals) if rule.principals is not None else None,
        issuers=patterns(issuers) if issuers is not None else None,
        roles=frozenset(rule.roles) if rule.roles is not None else None,
        views=patterns(rule.views) if rule.views is not None else None,
        backends=patterns(rule.backends) if rule.backends is not None else None,
        tools=patterns(rule.tools) if rule.tools is not None else None,
        annotations=tuple(sorted((rule.annotations or {}).items())),
        arguments=tuple(conditions),
    )


def policy_version(section: ApprovalsConfig) -> str:
    """What a ticket is bound to: the rules, defaults and agent-mode list (not the secret,
    the webhook or the timings, which decide nothing about a call)."""
    decisive = section.model_dump(
        include={"default", "default_approver", "auto_execute", "rules"}, mode="json"
    )
    text = json.dumps(decisive, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compile_approvals(
    section: ApprovalsConfig,
    storage: StorageSettings,
    default_issuer: str,
    resolve: Callable[[str, str], str],
    auth_enabled: bool,
) -> ApprovalSettings | None:
    """None when off: the policy is then absent from the chain."""
    if not section.enabled:
        return None
    if section.secret is None:
        raise ApprovalConfigError("approvals.secret: required when approvals are enabled")
    secret = resolve(section.secret, "approvals.secret")
    if len(secret) < MIN_SECRET_CHARS:
        raise ApprovalConfigError(f"approvals.secret: at least {MIN_SECRET_CHARS} characters")
    names: set[str] = set()
    rules = []
    for i, rule in enumerate(section.rules):
        where = f"approvals.rules[{i}]"
        if rule.name in names:
            raise ApprovalConfigError(f"{where}.name: {rule.name!r} names another rule too")
        names.add(rule.name)
        compiled = _rule(where, rule, default_issuer)
        if compiled.approver != CALLER and not auth_enabled:
            raise ApprovalConfigError(
                f"{where}.approver: an approver role needs authentication (`auth.enabled`)"
            )
        rules.append(compiled)
    if section.default_approver != CALLER and not auth_enabled:
        raise ApprovalConfigError(
            "approvals.default_approver: an approver role needs authentication (`auth.enabled`)"
        )
    if (section.escalate_after is None) != (section.escalate_to is None):
        raise ApprovalConfigError("approvals.escalate_after and escalate_to: set both or neither")
    webhook = None
    if section.webhook is not None:
        key = resolve(section.webhook.secret, "approvals.webhook.secret")
        if len(key) < MIN_SECRET_CHARS:
            raise ApprovalConfigError(
                f"approvals.webhook.secret: at least {MIN_SECRET_CHARS} characters"
            )
        webhook = WebhookSettings(
            resolve(section.webhook.url, "approvals.webhook.url"),
            key.encode(),
            section.webhook.timeout,
        )
    return ApprovalSettings(
        rules=ApprovalRules(
            tuple(rules),
            default_require=section.default == "require",
            default_approver=section.default_approver,
            auto_execute=patterns(section.auto_execute) if section.auto_execute else None,
        ),
        key=secret.encode(),
        policy_version=policy_version(section),
        digest=functools.partial(arguments_digest, secret.encode()),
        show_arguments_bytes=section.show_arguments_bytes,
        storage=storage,
        ticket_ttl_ms=int(section.ticket_ttl * 1000),
        elicitation_wait_s=section.elicitation_wait,
        escalate_after_ms=int(section.escalate_after * 1000)
        if section.escalate_after is not None
        else None,
        escalate_to=section.escalate_to,
        public_url=section.public_url,
        webhook=webhook,
    )
