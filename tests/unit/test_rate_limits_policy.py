"""The `rate_limits:` section compiled, and the policy's answers: what selects a call, what a
refusal says, the headers it carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from switchyard.call import Call, Identity, RequestContext
from switchyard.config.load import ConfigError, compile_plan
from switchyard.config.schema import SwitchyardConfig
from switchyard.policies.rate_limits import Limiter, RateLimits, effective_hints
from switchyard.protocol import codes
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry
from switchyard.routing.router import Route
from switchyard.storage.limit_counters import MemoryLimitCounters
from switchyard.wire import frame
from switchyard.wire.frame import Reply

pytestmark = pytest.mark.anyio


def _limiter(rules: list[dict[str, Any]], tmp_path: Path, **auth: Any) -> Limiter:
    config = SwitchyardConfig.model_validate({"rate_limits": {"rules": rules}, "auth": auth})
    limiter = compile_plan(config, tmp_path).gateway.limits
    assert limiter is not None and isinstance(limiter.store, MemoryLimitCounters)
    return limiter


def _call(name: str, who: Identity | None, item: dict[str, Any] | None = None) -> Call:
    entry = Entry("tools", f"fx_{name}", "fx", name, json.dumps(item or {"name": name}).encode())
    call = Call("tools/call", None, RequestContext(Era.MODERN, "2026-07-28", "stdio"))
    call.ctx.identity = who
    call.route = Route("tools", "fx", name, f"fx_{name}", entry)
    return call


def test_hints_take_the_spec_defaults() -> None:
    assert effective_hints(b'{"name":"t"}')["destructiveHint"] is True
    assert effective_hints(b'{"annotations":{"readOnlyHint":true}}')["destructiveHint"] is False
    declared = b'{"annotations":{"destructiveHint":false,"openWorldHint":"yes"}}'
    assert effective_hints(declared) == {
        "readOnlyHint": False,
        "destructiveHint": False,
        "idempotentHint": False,
        "openWorldHint": True,  # not a boolean: the default stands
    }


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"name": "x"}, "needs windows, concurrency or a budget"),
        ({"name": "x", "cost": 9, "windows": [{"period": "minute", "max": 5}]}, "never fit"),
        ({"name": "x", "budget": {}}, "set `calls`, `result_bytes` or both"),
        (
            {"name": "x", "budget": {"result_bytes": 10, "reserve_bytes": 11}},
            "larger than result_bytes",
        ),
        (
            {
                "name": "x",
                "prompts": ["*"],
                "annotations": {"readOnlyHint": False},
                "concurrency": 1,
            },
            "only tools have annotations",
        ),
        (
            {"name": "x", "windows": [{"period": "minute", "max": 1}, {"period": "60s", "max": 2}]},
            "same period",
        ),
    ],
)
def test_impossible_rules_are_refused_at_load(
    rule: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    config = SwitchyardConfig.model_validate({"rate_limits": {"rules": [rule]}})
    with pytest.raises(ConfigError, match=problem):
        compile_plan(config, tmp_path)


def test_redis_store_needs_a_url(tmp_path: Path) -> None:
    rules = [{"name": "x", "concurrency": 1}]
    config = SwitchyardConfig.model_validate({"rate_limits": {"store": "redis", "rules": rules}})
    with pytest.raises(ConfigError, match=r"redis needs storage\.redis_url"):
        compile_plan(config, tmp_path)


def test_rules_select_by_caller_name_and_annotation(tmp_path: Path) -> None:
    limiter = _limiter(
        [
            {"name": "alice", "principals": ["alice"], "concurrency": 1},
            {"name": "ops", "roles": ["ops"], "tools": ["deploy*"], "concurrency": 1},
            {"name": "writes", "annotations": {"destructiveHint": True}, "concurrency": 1},
            {
                "name": "bulk",
                "per": "rule",
                "cost": {"bulk_*": 3},
                "windows": [{"period": "minute", "max": 10}],
            },
        ],
        tmp_path,
        enabled=True,
    )
    alice = Identity("alice", roles=("ops",))
    foreign = Identity("alice", issuer="https://idp.example")  # another issuer's alice
    read_only = {"name": "deploy_x", "annotations": {"readOnlyHint": True}}

    def names(call: Call) -> list[tuple[str, str, int]]:
        assert call.route is not None
        return [(r.name, c.key, c.cost) for r, c in limiter.select(call, call.route)]

    assert names(_call("deploy_x", alice, read_only)) == [
        ("alice", "alice:api_key#alice", 1),
        ("ops", "ops:api_key#alice", 1),
        ("bulk", "bulk:*", 1),
    ]
    assert names(_call("bulk_send", foreign)) == [
        ("writes", "writes:https://idp.example#alice", 1),
        ("bulk", "bulk:*", 3),
    ]
    assert names(_call("bulk_send", None)) == [
        ("writes", "writes:anonymous", 1),
        ("bulk", "bulk:*", 3),
    ]


async def test_a_refusal_names_the_binding_limit_and_carries_http_hints(tmp_path: Path) -> None:
    limiter = _limiter(
        [
            {"name": "fast", "windows": [{"period": "second", "max": 1}]},
            {"name": "daily", "budget": {"calls": 1}},
        ],
        tmp_path,
    )

    async def terminal(call: Call) -> Reply:
        return Reply(result=b'{"content":[]}')

    policy = RateLimits(terminal, limiter)
    ok = await policy(_call("t", None))
    assert ok.result == b'{"content":[]}' and ok.http is not None and ok.http.status is None
    headers = dict(ok.http.headers)
    assert headers[b"ratelimit-policy"] == (b'"fast-1s";q=1;w=1, "daily-daily-calls";q=1;w=86400')
    assert headers[b"ratelimit"].startswith(b'"fast-1s";r=0;t=1, "daily-daily-calls";r=0;t=')
    refused = await policy(_call("t", None))
    assert refused.error is not None and refused.http is not None
    error = frame.decode_error(refused.error)
    assert error.code == codes.RATE_LIMITED
    # Both refuse; the day's budget holds the call back longest, so it is the one named.
    assert error.data["rule"] == "daily" and error.data["limit"] == "calls"
    assert error.data["retryAfterMs"] > 1000
    hints = dict(refused.http.headers)
    assert refused.http.status == 429
    assert int(hints[b"retry-after"]) == -(-error.data["retryAfterMs"] // 1000)
    assert limiter.refused == {"fast": 1, "daily": 1}
