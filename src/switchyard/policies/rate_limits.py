"""Rate limits, concurrency caps and budgets on tool calls, prompt gets and resource reads.

Placed after access control in the chain: a call the caller may not make is refused before it
is counted, so a denied caller never burns anyone's window. Every rule that selects a call
contributes one check; the counter store judges them all at once and takes from all of them or
none (storage/limit_counters.py). Nothing else is charged: lists, discovery, completions, pings.

A refusal is a JSON-RPC error (-31020) whose `data` names the rule and limit and carries
`retryAfterMs`; its HTTP hints make the Streamable HTTP face answer 429 with `Retry-After`.
Every reply of a limited call carries the `RateLimit-Policy` and `RateLimit` headers
(draft-ietf-httpapi-ratelimit-headers, structured-field form) for the enforced rules.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any, Final

from switchyard.call import ANONYMOUS, Call, Identity, selects_caller
from switchyard.policies.base import Policy
from switchyard.protocol import codes, methods
from switchyard.routing import catalog
from switchyard.routing.router import Route
from switchyard.storage.limit_counters import (
    BUSY_RETRY_MS,
    CALLS,
    CONCURRENCY,
    RESULT_BYTES,
    WINDOW,
    Check,
    CounterStore,
    Limit,
    Refusal,
    Settlement,
    Standing,
    StoreUnavailable,
    Ticket,
    Verdict,
)
from switchyard.wire import frame
from switchyard.wire.frame import HttpHints, Reply

log = logging.getLogger("switchyard.limits")

# What MCP says a tool is when its annotations say nothing (the spec's defaults); a read-only
# tool neither destroys nor repeats side effects, whatever the other hints claim.
HINT_DEFAULTS: Final = {
    "readOnlyHint": False,
    "destructiveHint": True,
    "idempotentHint": False,
    "openWorldHint": True,
}
ANNOTATION_CACHE: Final = 4096
_QUOTA_UNITS: Final = {CONCURRENCY: "concurrent-requests", RESULT_BYTES: "content-bytes"}


def patterns(globs: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{translate(g)})" for g in globs) or "(?!)")


def effective_hints(item: bytes) -> dict[str, bool]:
    """A tool's annotations as they apply: what it declares (booleans only), the spec's
    defaults for the rest."""
    hints = dict(HINT_DEFAULTS)
    try:
        raw = frame.decode_object(item).get("annotations")
        declared = frame.decode_any(raw) if raw is not None else {}
    except (frame.DecodeError, frame.ValidationError):
        declared = {}
    if isinstance(declared, dict):
        for name in HINT_DEFAULTS:
            value = declared.get(name)
            if isinstance(value, bool):
                hints[name] = value
    if hints["readOnlyHint"]:
        hints["destructiveHint"] = False
        hints["idempotentHint"] = True
    return hints


@dataclass(frozen=True, slots=True)
class LimitRule:
    name: str
    limits: tuple[Limit, ...]
    kinds: Mapping[str, re.Pattern[str] | None]
    """The kinds of item the rule selects (tools, prompts, resources), each with a glob over
    backend-side names or URIs (None: every one)."""
    shadow: bool = False
    per_rule: bool = False
    """One set of counters for everyone the rule selects; else one per principal."""
    fail_open: bool = False
    principals: re.Pattern[str] | None = None
    issuers: re.Pattern[str] | None = None
    roles: frozenset[str] | None = None
    views: re.Pattern[str] | None = None
    backends: re.Pattern[str] | None = None
    annotations: tuple[tuple[str, bool], ...] = ()
    costs: tuple[tuple[re.Pattern[str], int], ...] = ()
    default_cost: int = 1

    def selects_caller(self, who: Identity | None) -> bool:
        return selects_caller(who, self.principals, self.issuers, self.roles)

    def selects_target(self, route: Route, view: str | None) -> bool:
        if route.kind not in self.kinds:
            return False
        names = self.kinds[route.kind]
        if names is not None and names.fullmatch(route.name) is None:
            return False
        if self.backends is not None and self.backends.fullmatch(route.backend) is None:
            return False
        return self.views is None or (view is not None and self.views.fullmatch(view) is not None)

    def cost(self, name: str) -> int:
        for pattern, cost in self.costs:
            if pattern.fullmatch(name) is not None:
                return cost
        return self.default_cost


@dataclass(slots=True)
class Limiter:
    """The compiled `rate_limits:` section and the counters it counts in."""

    rules: tuple[LimitRule, ...]
    store: CounterStore
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    shadow_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    store_errors: int = 0
    refusal_status: int = 429
    """The HTTP status of a refusal answered as JSON (`rate_limits.refusal_status`)."""
    _hints: dict[bytes, dict[str, bool]] = field(default_factory=dict)
    _settling: set[asyncio.Task[None]] = field(default_factory=set)

    def annotations(self, entry: catalog.Entry) -> dict[str, bool]:
        hints = self._hints.get(entry.item)
        if hints is None:
            if len(self._hints) >= ANNOTATION_CACHE:
                self._hints.clear()  # catalogs change rarely; a bounded cache suffices
            hints = self._hints[entry.item] = effective_hints(entry.item)
        return hints

    def select(self, call: Call, route: Route) -> list[tuple[LimitRule, Check]]:
        who = call.ctx.identity
        subject = who.key if who is not None else ANONYMOUS
        out = []
        for rule in self.rules:
            if not rule.selects_target(route, call.ctx.view) or not rule.selects_caller(who):
                continue
            if rule.annotations:
                hints = self.annotations(route.entry)
                if any(hints[hint] != wanted for hint, wanted in rule.annotations):
                    continue
            key = f"{rule.name}:{'*' if rule.per_rule else subject}"
            out.append((rule, Check(key, rule.limits, rule.cost(route.name), rule.shadow)))
        return out

    def settle_later(self, ticket: Ticket) -> None:
        """Give back a cancelled call's slots without making its cancellation wait."""
        self._keep(asyncio.get_running_loop().create_task(self._settle_quietly(ticket)))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def acquire(self, checks: Sequence[Check]) -> Verdict:
        """The store's verdict. A shared store's answer is awaited on its own: a call cancelled
        while Redis decides still gives back whatever the decision took."""
        if not self.store.shared:
            return await self.store.acquire(checks)  # no await inside: never cut in half
        deciding = asyncio.ensure_future(self.store.acquire(checks))
        try:
            return await asyncio.shield(deciding)
        except asyncio.CancelledError:
            self._keep(asyncio.get_running_loop().create_task(self._give_back(deciding)))
            raise

    async def _give_back(self, deciding: asyncio.Future[Verdict]) -> None:
        try:
            verdict = await deciding
        except StoreUnavailable:
            return
        if verdict.ticket is not None:
            await self._settle_quietly(verdict.ticket)

    async def settle(self, ticket: Ticket, result_bytes: int) -> Settlement:
        """Settle a finished call; a shared store's settling completes even if the call is
        cancelled meanwhile (its slots must come back either way)."""
        if not self.store.shared:
            return await self.store.settle(ticket, result_bytes)
        settling = asyncio.ensure_future(self.store.settle(ticket, result_bytes))
        try:
            return await asyncio.shield(settling)
        except asyncio.CancelledError:
            self._keep(settling)
            raise

    async def _settle_quietly(self, ticket: Ticket) -> None:
        try:
            await self.store.settle(ticket, 0)
        except StoreUnavailable as exc:
            self.store_errors += 1
            log.warning("rate limits: giving back a call's slots failed (%s)", exc)

    def status(self) -> dict[str, Any]:
        return {
            "store": self.store.name,
            "shared": self.store.shared,
            "rules": [r.name for r in self.rules],
            "refused": dict(self.refused),
            "shadowRefused": dict(self.shadow_refused),
            "storeErrors": self.store_errors,
        }

    async def close(self) -> None:
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=5.0)
        await self.store.close()


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def _policy_name(rule: LimitRule, limit: Limit) -> str:
    return f"{rule.name}-{limit.label}"


def rate_limit_headers(
    rules: Sequence[LimitRule], standings: Sequence[Sequence[Standing]]
) -> tuple[tuple[bytes, bytes], ...]:
    """`RateLimit-Policy` and `RateLimit` (structured-field lists) for the enforced rules."""
    policies: list[str] = []
    current: list[str] = []
    for rule, row in zip(rules, standings, strict=True):
        if rule.shadow:
            continue
        for limit, standing in zip(rule.limits, row, strict=True):
            name = _policy_name(rule, limit)
            item = f'"{name}";q={limit.max}'
            if limit.kind in _QUOTA_UNITS:
                item += f';qu="{_QUOTA_UNITS[limit.kind]}"'
            if limit.kind != CONCURRENCY:
                item += f";w={limit.period_ms // 1000}"
            policies.append(item)
            state = f'"{name}";r={standing.remaining}'
            if limit.kind != CONCURRENCY:
                state += f";t={math.ceil(standing.reset_ms / 1000)}"
            current.append(state)
    if not policies:
        return ()
    return (
        (b"ratelimit-policy", ", ".join(policies).encode()),
        (b"ratelimit", ", ".join(current).encode()),
    )


def _describe(rule: LimitRule, limit: Limit, retry_ms: int) -> str:
    wait = f"retry in {_seconds(retry_ms)} s"
    if limit.kind == WINDOW:
        return f"Rate limit exceeded: {limit.max} per {limit.label} (rule {rule.name}); {wait}"
    if limit.kind == CONCURRENCY:
        return f"Too many calls in flight: {limit.max} at once (rule {rule.name}); {wait}"
    if limit.kind == CALLS:
        return f"Daily budget of {limit.max} used up (rule {rule.name}); {wait}"
    return f"Daily budget of {limit.max} result bytes used up (rule {rule.name}); {wait}"


def refusal_reply(
    rules: Sequence[LimitRule],
    refusals: Sequence[Refusal],
    headers: tuple[tuple[bytes, bytes], ...],
    message: str | None = None,
    status: int = 429,
) -> Reply:
    """The answer to a refused call: the limit that holds it back longest is the one named."""
    binding = max(refusals, key=lambda r: r.retry_after_ms)
    rule = rules[binding.check]
    limit = rule.limits[binding.limit]
    retry_ms = max(1, binding.retry_after_ms)
    data: dict[str, Any] = {
        "source": "gateway",
        "rule": rule.name,
        "limit": limit.kind,
        "max": limit.max,
        "retryAfterMs": retry_ms,
    }
    if limit.kind == WINDOW:
        data["window"] = limit.label
    # Retry-After goes with a 200 too: a client that reads headers still learns when to retry.
    hints = HttpHints(status, ((b"retry-after", str(_seconds(retry_ms)).encode()), *headers))
    body = frame.error_body(codes.RATE_LIMITED, message or _describe(rule, limit, retry_ms), data)
    return Reply(error=body, http=hints)


def unavailable_reply() -> Reply:
    body = frame.error_body(
        codes.LIMITS_UNAVAILABLE,
        "Rate limits cannot be checked right now; retry shortly",
        {"source": "gateway", "retryAfterMs": BUSY_RETRY_MS},
    )
    hints = HttpHints(503, ((b"retry-after", str(_seconds(BUSY_RETRY_MS)).encode()),))
    return Reply(error=body, http=hints)


def _note_shadow(
    limiter: Limiter, call: Call, rules: Sequence[LimitRule], refusals: Sequence[Refusal]
) -> None:
    for refusal in refusals:
        rule = rules[refusal.check]
        limit = rule.limits[refusal.limit]
        limiter.shadow_refused[rule.name] += 1
        who = call.ctx.identity
        log.info(
            "shadow: rule %s would refuse %s %s (limit %s %s, retry in %d ms) for %s",
            rule.name,
            call.method,
            call.target,
            limit.kind,
            limit.label,
            refusal.retry_after_ms,
            who.key if who is not None else ANONYMOUS,
        )


def _answer_size(reply: Reply) -> int:
    return len(reply.result if reply.result is not None else reply.error or b"")


class RateLimits(Policy):
    methods = frozenset({methods.TOOLS_CALL, methods.PROMPTS_GET, methods.RESOURCES_READ})
    settings: Limiter

    async def __call__(self, call: Call) -> Reply:
        route = call.route
        if route is None:
            return await self.next(call)  # answered as unknown: nothing to count
        limiter = self.settings
        selected = limiter.select(call, route)
        if not selected:
            return await self.next(call)
        rules = [rule for rule, _ in selected]
        checks = [check for _, check in selected]
        try:
            verdict = await limiter.acquire(checks)
        except StoreUnavailable as exc:
            limiter.store_errors += 1
            if all(rule.fail_open or rule.shadow for rule in rules):
                log.warning("rate limits: counter store unavailable (%s); admitting", exc)
                return await self.next(call)
            log.warning("rate limits: counter store unavailable (%s); refusing", exc)
            call.denied = True
            return unavailable_reply()
        if verdict.shadow_refusals:
            _note_shadow(limiter, call, rules, verdict.shadow_refusals)
        headers = rate_limit_headers(rules, verdict.standings)
        if not verdict.admitted:
            return self._refuse(call, rules, verdict, headers)
        ticket = verdict.ticket
        assert ticket is not None
        try:
            reply = await self.next(call)
        except BaseException:
            limiter.settle_later(ticket)
            raise
        size = _answer_size(reply)
        try:
            settlement = await limiter.settle(ticket, size)
        except StoreUnavailable as exc:
            limiter.store_errors += 1
            log.warning("rate limits: settling a call failed (%s)", exc)
        else:
            if settlement.shadow_refusals:
                _note_shadow(limiter, call, rules, settlement.shadow_refusals)
            if settlement.withheld:
                for refusal in settlement.refusals:
                    limiter.refused[rules[refusal.check].name] += 1
                call.denied = True
                binding = settlement.refusals[0]
                rule = rules[binding.check]
                message = (
                    f"The answer ({size} bytes) does not fit in what is left of the daily "
                    f"budget of {rule.limits[binding.limit].max} result bytes (rule "
                    f"{rule.name}); it was withheld"
                )
                return refusal_reply(
                    rules, settlement.refusals, headers, message, limiter.refusal_status
                )
        if not headers:
            return reply
        hints = reply.http
        merged = HttpHints(
            hints.status if hints is not None else None,
            (*(hints.headers if hints is not None else ()), *headers),
        )
        return dataclasses.replace(reply, http=merged)

    def _refuse(
        self,
        call: Call,
        rules: list[LimitRule],
        verdict: Verdict,
        headers: tuple[tuple[bytes, bytes], ...],
    ) -> Reply:
        limiter = self.settings
        for refusal in verdict.refusals:
            limiter.refused[rules[refusal.check].name] += 1
        call.denied = True
        return refusal_reply(rules, verdict.refusals, headers, status=limiter.refusal_status)
