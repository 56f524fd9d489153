"""What the result cache costs and saves on one 10 KB tools/call result, measured in process.

Three chains over the same stand-in backend (which answers at once, so only Switchyard's own
work is timed): without the cache; with it, each call a miss (new arguments: a lookup, the
backend, a store); with it, each call a hit (the same arguments again). A hit's time is what a
cached call costs in place of the backend's; a miss's extra is what caching adds to a call the
cache cannot answer. Then what list lifetimes add to a `tools/list` answered from the catalog.

  .venv/bin/python bench/caching.py [--calls N] [--json]   (bench/run.py runs it last)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

from redaction import result_10k

from switchyard.call import Call, Identity, RequestContext
from switchyard.gateway import Gateway, GatewaySettings, Plan
from switchyard.policies.base import PolicySpec, build_chain
from switchyard.policies.result_cache import CacheRule, ResultCache, ResultCaching
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry, Listing
from switchyard.routing.freshness import Freshness
from switchyard.routing.router import Route
from switchyard.upstream.backend import BackendSettings
from switchyard.upstream.stdio import StdioSettings
from switchyard.wire.frame import Raw, Reply

GOAL_HIT_P50_MS = 0.2

TOOL = {
    "name": "customers",
    "inputSchema": {"type": "object"},
    "annotations": {"readOnlyHint": True},
}


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def measure(calls: int) -> dict[str, Any]:
    result = result_10k()
    entry = Entry("tools", "crm_customers", "crm", "customers", json.dumps(TOOL).encode())
    route = Route("tools", "crm", "customers", "crm_customers", entry)

    async def backend(call: Call) -> Reply:
        return Reply(result=result)

    cache = ResultCache([CacheRule("crm", "*", 3600)], max_entries=1_000_000, max_bytes=1 << 34)
    bare = build_chain([], "tools/call", backend)
    cached = build_chain([PolicySpec(ResultCaching, cache)], "tools/call", backend)
    ctx = RequestContext(
        Era.LEGACY, "2025-11-25", "bench", principal="api_key#alice", identity=Identity("alice")
    )

    async def once(chain: Any, n: int) -> float:
        params = b'{"name":"crm_customers","arguments":{"limit":50,"page":%d}}' % n
        call = Call("tools/call", params, ctx, route=route)
        start = time.perf_counter_ns()
        reply = await chain(call)
        assert reply.result == result
        return (time.perf_counter_ns() - start) / 1e6

    for n in range(200):  # warm-up
        await once(bare, n)
        await once(cached, -1)
    base: list[float] = []
    miss: list[float] = []
    hit: list[float] = []
    for n in range(calls):
        base.append(await once(bare, n))
        miss.append(await once(cached, n))
        hit.append(await once(cached, n))
    assert cache.hits >= calls and cache.misses >= calls
    added = [m - b for m, b in zip(miss, base, strict=True)]
    return {
        "type": "result_cache",
        "result_bytes": len(result),
        "calls": calls,
        "bare_p50_ms": round(statistics.median(base), 4),
        "miss_added_p50_ms": round(statistics.median(added), 4),
        "hit_p50_ms": round(statistics.median(hit), 4),
        "hit_p99_ms": round(_p(hit, 0.99), 4),
        "goal_hit_p50_ms": GOAL_HIT_P50_MS,
        "verdict": "PASS" if statistics.median(hit) <= GOAL_HIT_P50_MS else "MISS",
    }


async def measure_lists(calls: int, backends: int = 5, tools: int = 20) -> dict[str, Any]:
    """What list lifetimes add to a 2026-07-28 `tools/list` served from the catalog: the same
    gateway (five backends of twenty tools, each listing with a lifetime) answering with them
    on (expiry checks and the aggregate) and off."""
    plan = Plan(
        gateway=GatewaySettings(policies=()),
        backends=tuple(
            BackendSettings(f"b{i}", f"b{i}", StdioSettings("true")) for i in range(backends)
        ),
    )
    gw = Gateway(plan)
    fetched = time.monotonic()
    for b in gw.backends.values():
        items = tuple(
            {"name": Raw(json.dumps(f"t{n}").encode()), "inputSchema": Raw(b'{"type":"object"}')}
            for n in range(tools)
        )
        fresh = {"tools": Freshness(3_600_000, True, fetched + 3600)}
        b.listing = Listing(b.name, b.settings.prefix, {"tools": items}, fresh)
        b.status.state = "up"
    gw._rebuild(gw._listings())
    ctx = RequestContext(Era.MODERN, "2026-07-28", "bench")
    forwarder = gw.forwarder
    hooks = (forwarder.freshen, forwarder.list_hints)

    async def once(on: bool) -> float:
        forwarder.freshen, forwarder.list_hints = hooks if on else (None, None)
        call = Call("tools/list", None, ctx)
        start = time.perf_counter_ns()
        reply = await forwarder.list(call)
        elapsed = (time.perf_counter_ns() - start) / 1e6
        assert reply.result is not None and (b'"public"' in reply.result) == on
        return elapsed

    for _ in range(200):
        await once(True)
        await once(False)
    added = []
    for _ in range(calls):
        off = await once(False)
        added.append(await once(True) - off)
    return {
        "list_entries": backends * tools,
        "list_added_p50_ms": round(statistics.median(added), 4),
        "list_added_p99_ms": round(_p(added, 0.99), 4),
    }


def line(rec: dict[str, Any]) -> str:
    return (
        f"result cache, {rec['result_bytes']} B tools/call result ({rec['calls']} calls): hit "
        f"p50 {rec['hit_p50_ms']:.3f} ms, p99 {rec['hit_p99_ms']:.3f} ms in place of the backend "
        f"(goal p50 <= {rec['goal_hit_p50_ms']:.1f} ms): {rec['verdict']}; a miss adds p50 "
        f"{rec['miss_added_p50_ms']:.3f} ms (lookup and store). List lifetimes add p50 "
        f"{rec['list_added_p50_ms']:.3f} ms, p99 {rec['list_added_p99_ms']:.3f} ms to a "
        f"{rec['list_entries']}-tool list served from the catalog"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="one JSON record, its line included")
    args = ap.parse_args()
    rec = asyncio.run(measure(args.calls))
    rec.update(asyncio.run(measure_lists(args.calls)))
    print(json.dumps({**rec, "line": line(rec)}) if args.json else line(rec))
    return 0 if rec["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
