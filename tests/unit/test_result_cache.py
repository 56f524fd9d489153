"""The result cache's bounds and expiry, list lifetimes and their aggregate, and where the
cache sits in the compiled chain."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from switchyard.call import Call, RequestContext
from switchyard.config.load import compile_plan
from switchyard.config.redaction import compile_redaction
from switchyard.config.schema import RedactionConfig, SwitchyardConfig
from switchyard.observability import decisions
from switchyard.policies.access import AccessControl
from switchyard.policies.base import PolicySpec, build_chain
from switchyard.policies.rate_limits import RateLimits
from switchyard.policies.redaction import Redaction
from switchyard.policies.result_cache import ENTRY_OVERHEAD, CacheRule, ResultCache, ResultCaching
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry
from switchyard.routing.freshness import Freshness, aggregate
from switchyard.routing.router import Route
from switchyard.wire.frame import Reply


def _cache(max_entries: int = 100, max_bytes: int = 1 << 20) -> ResultCache:
    return ResultCache([], max_entries=max_entries, max_bytes=max_bytes)


def test_least_recently_used_leaves_first_when_entries_are_full() -> None:
    cache = _cache(max_entries=3)
    for n in range(3):
        cache.put(("k", n), b"r%d" % n, 60, now=0)
    assert cache.get(("k", 0), now=1) == (b"r0", None)  # used: now the most recent
    cache.put(("k", 3), b"r3", 60, now=1)
    assert cache.get(("k", 1), now=1) is None
    assert [cache.get(("k", n), now=1) for n in (0, 2, 3)] == [
        (b"r%d" % n, None) for n in (0, 2, 3)
    ]
    assert len(cache) == 3


def test_bytes_never_exceed_the_bound_while_ten_times_as_much_is_written() -> None:
    bound = 256 * 1024
    cache = _cache(max_entries=1_000_000, max_bytes=bound)
    written = 0
    n = 0
    while written < 10 * bound:
        payload = os.urandom(1 + (n * 7919) % 9000)
        cache.put(("k", n), payload, 60, now=0)
        written += len(payload)
        n += 1
        assert cache.bytes <= bound
    assert cache.bytes == sum(len(e.result) + ENTRY_OVERHEAD for e in cache._entries.values())
    # An entry larger than the whole bound is never kept (and evicts nothing).
    kept = len(cache)
    cache.put(("huge",), b"x" * bound, 60, now=0)
    assert cache.get(("huge",), now=0) is None and len(cache) == kept


def test_an_entry_expires_after_its_ttl() -> None:
    cache = _cache()
    cache.put(("k",), b"r", 2.0, now=10.0)
    assert cache.get(("k",), now=11.9) == (b"r", None)
    assert cache.get(("k",), now=12.0) is None
    assert len(cache) == 0 and cache.bytes == 0


def test_rules_select_by_backend_and_tool_globs_first_match_first() -> None:
    cache = ResultCache(
        [CacheRule("weather", "forecast*", 30), CacheRule("*", "lookup", 5, True)],
        max_entries=10,
        max_bytes=4096,
    )
    assert cache.rule_for("weather", "forecast_daily") == CacheRule("weather", "forecast*", 30)
    assert cache.rule_for("crm", "lookup") == CacheRule("*", "lookup", 5, True)
    assert cache.rule_for("weather", "alerts") is None


def test_a_list_lifetime_is_the_shortest_page_and_private_if_any_page_is() -> None:
    fresh = Freshness.of_pages([(5000, True), (3000, True)], fetched=100.0)
    assert (fresh.ttl_ms, fresh.public, fresh.expires) == (3000, True, 103.0)
    mixed = Freshness.of_pages([(5000, True), (9000, False)], fetched=0.0)
    assert (mixed.ttl_ms, mixed.public) == (5000, False)
    # No lifetime promised (a legacy page): kept until list_changed.
    silent = Freshness.of_pages([(None, True)], fetched=0.0)
    assert silent.expires == math.inf and not silent.expired(1e9) and not silent.public
    assert silent.invalidated().expired(0.0)
    # 0: immediately stale, listed again the next time it is needed.
    stale = Freshness.of_pages([(0, True)], fetched=50.0)
    assert (stale.ttl_ms, stale.public, stale.expires) == (0, True, 50.0)
    assert stale.expired(50.0)
    # A page that says 0 among longer-lived ones makes the whole list stale at once.
    assert Freshness.of_pages([(5000, True), (0, True), (None, True)], fetched=1.0).expires == 1.0


def test_the_aggregate_takes_the_least_remaining_lifetime_and_the_most_private_scope() -> None:
    a = Freshness(60000, True, 160.0)
    b = Freshness(20000, True, 110.0)
    p = Freshness(90000, False, 190.0)
    assert aggregate([a, b], now=100.0) == (10000, True)
    assert aggregate([a, p], now=100.0) == (60000, False)
    assert aggregate([a, Freshness(0, True, math.inf)], now=100.0) == (0, False)
    assert aggregate([a, None], now=100.0) == (0, False)
    assert aggregate([], now=100.0) == (0, False)
    assert aggregate([b], now=120.0) == (0, False)  # ran out: nothing to promise


@pytest.mark.parametrize("with_cache", [True, False])
def test_the_cache_runs_after_every_check_and_outside_redaction(
    with_cache: bool, tmp_path: Path
) -> None:
    raw = {
        "auth": {"enabled": True, "data_dir": str(tmp_path), "rules": [{"effect": "allow"}]},
        "rate_limits": {"rules": [{"name": "r", "windows": [{"period": "minute", "max": 5}]}]},
        "redaction": {"rules": [{"name": "e", "detectors": ["email"], "action": "mask"}]},
        "servers": {"s": {"command": "true"}},
    }
    if with_cache:
        raw["cache"] = {"rules": [{"backend": "s", "tool": "*", "ttl": 1}]}
    plan = compile_plan(SwitchyardConfig.model_validate(raw), tmp_path)
    order = [spec.cls for spec in plan.gateway.policies]
    expected = [AccessControl, RateLimits, ResultCaching, Redaction]
    if not with_cache:
        expected.remove(ResultCaching)
    assert [c for c in order if c in expected] == expected


def test_a_configuration_change_is_a_new_policy_version(tmp_path: Path) -> None:
    def version(max_per_minute: int) -> str:
        raw = {
            "rate_limits": {
                "rules": [{"name": "r", "windows": [{"period": "minute", "max": max_per_minute}]}]
            },
            "cache": {"rules": [{"backend": "s", "ttl": 1}]},
            "servers": {"s": {"command": "true"}},
        }
        plan = compile_plan(SwitchyardConfig.model_validate(raw), tmp_path)
        (spec,) = [s for s in plan.gateway.policies if s.cls is ResultCaching]
        cache: ResultCache = spec.settings
        return cache.policy_version

    assert version(5) == version(5)
    assert version(5) != version(6)


@pytest.mark.anyio
async def test_a_hit_records_the_arguments_as_redacted_for_the_call_that_ran() -> None:
    config = RedactionConfig.model_validate(
        {"rules": [{"name": "e", "detectors": ["email"], "action": "mask"}]}
    )
    engine = compile_redaction(config, "api_key", lambda v, w: v, ValueError)
    assert engine is not None
    ran: list[bytes] = []

    async def backend(call: Call) -> Reply:
        ran.append(bytes(call.fields()["arguments"]))
        return Reply(result=b'{"content":[{"type":"text","text":"sent"}]}')

    cache = ResultCache([CacheRule("crm", "*", 60, True)], max_entries=10, max_bytes=1 << 20)
    chain = build_chain(
        [PolicySpec(ResultCaching, cache), PolicySpec(Redaction, engine)], "tools/call", backend
    )
    item = b'{"name":"send","inputSchema":{"type":"object"}}'
    route = Route(
        "tools", "crm", "send", "crm_send", Entry("tools", "crm_send", "crm", "send", item)
    )
    ctx = RequestContext(Era.LEGACY, "2025-11-25", "test", principal="api_key#alice")
    params = b'{"name":"crm_send","arguments":{"to":"alice@example.com"}}'
    sink: list[object] = []
    decisions.add_sink(sink.append)
    try:
        calls = [Call("tools/call", params, ctx, route=route) for _ in range(2)]
        replies = [await chain(c) for c in calls]
    finally:
        decisions.remove_sink(sink.append)
    assert len(ran) == 1 and b"alice@example.com" not in ran[0]
    assert replies[0].result == replies[1].result
    recorded = [c.recorded_arguments for c in calls]
    assert recorded[0] is not None and recorded[1] == recorded[0]
    assert b"alice@example.com" not in bytes(recorded[1] or b"")
    assert cache.hits == 1
