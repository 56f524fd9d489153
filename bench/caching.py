"""What the result cache costs and saves on one 10 KB tools/call result, measured in process.

Three chains over the same stand-in backend (which answers at once, so only Switchyard's own
work is timed): without the cache; with it, each call a miss (new arguments: a lookup, the
backend, a store); with it, each call a hit (the same arguments again). A hit's time is what a
cached call costs in place of the backend's; a miss's extra is what caching adds to a call the
cache cannot answer.

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
from switchyard.policies.base import PolicySpec, build_chain
from switchyard.policies.result_cache import CacheRule, ResultCache, ResultCaching
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry
from switchyard.routing.router import Route
from switchyard.wire.frame import Reply

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


def line(rec: dict[str, Any]) -> str:
    return (
        f"result cache, {rec['result_bytes']} B tools/call result ({rec['calls']} calls): hit "
        f"p50 {rec['hit_p50_ms']:.3f} ms, p99 {rec['hit_p99_ms']:.3f} ms in place of the backend "
        f"(goal p50 <= {rec['goal_hit_p50_ms']:.1f} ms): {rec['verdict']}; a miss adds p50 "
        f"{rec['miss_added_p50_ms']:.3f} ms (lookup and store)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="one JSON record, its line included")
    args = ap.parse_args()
    rec = asyncio.run(measure(args.calls))
    print(json.dumps({**rec, "line": line(rec)}) if args.json else line(rec))
    return 0 if rec["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
