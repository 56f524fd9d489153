"""Compile the `rate_limits:` section into a `Limiter`: rules checked once at load, and the
counter store they count in (Redis when configured, else this process's memory)."""

from __future__ import annotations

import re
from typing import Final

from switchyard.config.schema import RateLimitRuleConfig, RateLimitsConfig
from switchyard.policies.rate_limits import Limiter, LimitRule, patterns
from switchyard.routing import catalog
from switchyard.storage.limit_counters import (
    CALLS,
    CONCURRENCY,
    DAY_MS,
    RESULT_BYTES,
    WINDOW,
    CounterStore,
    Limit,
    MemoryLimitCounters,
)
from switchyard.storage.redis_counters import RedisCounters
from switchyard.storage.settings import StorageSettings

_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}
_WORDS: Final = {"second": "1s", "minute": "1m", "hour": "1h", "day": "1d"}


class RateLimitError(ValueError):
    """The section is invalid; the message names the offending key."""


def window_ms(period: str) -> tuple[int, str]:
    """A period as milliseconds, and its label (`1m`, `10s`)."""
    label = _WORDS.get(period, period)
    return int(label[:-1]) * _UNIT_MS[label[-1]], label


def _limits(where: str, rule: RateLimitRuleConfig) -> tuple[Limit, ...]:
    out: list[Limit] = []
    seen: set[int] = set()
    for i, window in enumerate(rule.windows):
        ms, label = window_ms(window.period)
        if ms in seen:
            raise RateLimitError(f"{where}.windows[{i}]: another window has the same period")
        seen.add(ms)
        out.append(Limit(WINDOW, window.max, ms, label=label))
    if rule.concurrency is not None:
        out.append(Limit(CONCURRENCY, rule.concurrency, label="concurrency"))
    budget = rule.budget
    if budget is not None:
        if budget.calls is None and budget.result_bytes is None:
            raise RateLimitError(f"{where}.budget: set `calls`, `result_bytes` or both")
        if budget.calls is not None:
            out.append(Limit(CALLS, budget.calls, DAY_MS, label="daily-calls"))
        if budget.result_bytes is not None:
            if budget.reserve_bytes > budget.result_bytes:
                raise RateLimitError(
                    f"{where}.budget.reserve_bytes: larger than result_bytes: no call could "
                    "ever be admitted"
                )
            out.append(
                Limit(
                    RESULT_BYTES,
                    budget.result_bytes,
                    DAY_MS,
                    budget.reserve_bytes,
                    label="daily-bytes",
                )
            )
    if not out:
        raise RateLimitError(f"{where}: a rule needs windows, concurrency or a budget")
    return tuple(out)


def _kinds(where: str, rule: RateLimitRuleConfig) -> dict[str, re.Pattern[str] | None]:
    named = {
        catalog.TOOLS: rule.tools,
        catalog.PROMPTS: rule.prompts,
        catalog.RESOURCES: rule.resources,
    }
    if rule.annotations:
        # Only tools carry annotations: such a rule is about tools.
        if rule.prompts is not None or rule.resources is not None:
            raise RateLimitError(f"{where}.annotations: only tools have annotations")
        return {catalog.TOOLS: patterns(rule.tools) if rule.tools is not None else None}
    if all(globs is None for globs in named.values()):
        return dict.fromkeys(named)  # every tool, prompt and resource
    return {kind: patterns(globs) for kind, globs in named.items() if globs is not None}


def _rule(
    where: str, rule: RateLimitRuleConfig, section: RateLimitsConfig, default_issuer: str
) -> LimitRule:
    limits = _limits(where, rule)
    if isinstance(rule.cost, int):
        costs: tuple[tuple[re.Pattern[str], int], ...] = ()
        default_cost = rule.cost
    else:
        costs = tuple((patterns([glob]), cost) for glob, cost in rule.cost.items())
        default_cost = 1
    every = [default_cost, *(cost for _, cost in costs)]
    if min(every) < 1:
        raise RateLimitError(f"{where}.cost: a cost is at least 1")
    for limit in limits:
        if limit.kind in (WINDOW, CALLS) and max(every) > limit.max:
            raise RateLimitError(
                f"{where}.cost: a call costing {max(every)} could never fit in the "
                f"{limit.label} limit of {limit.max}"
            )
    defaults = section.defaults
    # Bare principal names belong to one issuer, as in access rules.
    issuers = (
        rule.issuers
        if rule.issuers is not None
        else ([default_issuer] if rule.principals else None)
    )
    return LimitRule(
        name=rule.name,
        limits=limits,
        kinds=_kinds(where, rule),
        shadow=(rule.mode or defaults.mode) == "shadow",
        per_rule=(rule.per or defaults.per) == "rule",
        fail_open=(rule.on_store_error or defaults.on_store_error) == "open",
        principals=patterns(rule.principals) if rule.principals is not None else None,
        issuers=patterns(issuers) if issuers is not None else None,
        roles=frozenset(rule.roles) if rule.roles is not None else None,
        views=patterns(rule.views) if rule.views is not None else None,
        backends=patterns(rule.backends) if rule.backends is not None else None,
        annotations=tuple(sorted((rule.annotations or {}).items())),
        costs=costs,
        default_cost=default_cost,
    )


def compile_limits(
    section: RateLimitsConfig, storage: StorageSettings, default_issuer: str
) -> Limiter | None:
    """None when no rule is configured: the policy is then absent from the chain."""
    if not section.rules:
        return None
    names: set[str] = set()
    rules = []
    for i, rule in enumerate(section.rules):
        where = f"rate_limits.rules[{i}]"
        if rule.name in names:
            raise RateLimitError(f"{where}.name: {rule.name!r} names another rule too")
        names.add(rule.name)
        rules.append(_rule(where, rule, section, default_issuer))
    kind = section.store
    if kind == "auto":
        kind = "redis" if storage.redis_url else "memory"
    store: CounterStore
    if kind == "redis":
        if storage.redis_url is None:
            raise RateLimitError("rate_limits.store: redis needs storage.redis_url")
        store = RedisCounters(
            storage.redis_url,
            section.key_prefix,
            lease_ms=int(section.lease_seconds * 1000),
            timeout_s=section.store_timeout,
        )
    else:
        store = MemoryLimitCounters()
    return Limiter(tuple(rules), store, refusal_status=section.refusal_status)
