"""The cost redaction adds to one 10 KB tools/call result, measured in process.

The result goes through the real chain twice per sample, once with the Redaction policy (every
built-in detector, action `mask`, with output-schema checking) and once without it; the
difference is what redaction adds. A gateway round trip would bury a sub-millisecond cost in
network and scheduling noise on a shared machine, so the chain is driven directly.

  .venv/bin/python bench/redaction.py [--calls N] [--json]   (bench/run.py runs it last)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import string
import sys
import time
from typing import Any

from switchyard.call import Call, Identity, RequestContext
from switchyard.config.redaction import compile_redaction
from switchyard.config.schema import RedactionConfig
from switchyard.policies.base import PolicySpec, build_chain
from switchyard.policies.redaction import Redaction
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry
from switchyard.routing.router import Route
from switchyard.wire.frame import Reply

GOAL_P99_MS = 1.0
TARGET_BYTES = 10 * 1024

TOOL = {
    "name": "customers",
    "inputSchema": {"type": "object"},
    "outputSchema": {
        "type": "object",
        "properties": {
            "customers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "name": {"type": "string"},
                        "email": {"type": "string", "format": "email"},
                        "note": {"type": "string"},
                    },
                    "required": ["id", "name", "email"],
                },
            }
        },
    },
}


def result_10k(seed: int = 7) -> bytes:
    """A realistic 10 KB result: customer records (a few personal values among order numbers,
    dates, UUIDs and prose), as structuredContent and its text rendering."""
    rng = random.Random(seed)
    customers: list[dict[str, Any]] = []
    body = b""
    while True:
        i = len(customers)
        first = "".join(rng.choice(string.ascii_lowercase) for _ in range(6))
        customers.append(
            {
                "id": f"{rng.getrandbits(32):08x}-1c2d-4e5f-8a9b-{rng.getrandbits(48):012x}",
                "name": first.title(),
                "email": f"{first}.{i}@example.com",
                "note": (
                    f"Order ORD-{rng.randint(10**7, 10**8)} shipped 2026-0{rng.randint(1, 9)}-1"
                    f"{rng.randint(0, 9)}; call +44 20 7946 0{rng.randint(100, 999)} about "
                    "the delivery window and the invoice total of 1,284.50 EUR."
                    if i % 4 == 0
                    else f"Order ORD-{rng.randint(10**7, 10**8)}: no issues, 3 items, rated 5."
                ),
            }
        )
        structured = {"customers": customers}
        text = json.dumps(structured)
        body = json.dumps(
            {"content": [{"type": "text", "text": text}], "structuredContent": structured}
        ).encode()
        if len(body) >= TARGET_BYTES:
            return body


async def measure(calls: int) -> dict[str, Any]:
    config = RedactionConfig.model_validate(
        {"key": "bench-redaction-key-0123", "rules": [{"name": "all", "detectors": ["*"]}]}
    )
    engine = compile_redaction(config, "api_key", lambda v, w: v, ValueError)
    assert engine is not None
    result = result_10k()
    item = json.dumps(TOOL).encode()
    entry = Entry("tools", "crm_customers", "crm", "customers", item)
    route = Route("tools", "crm", "customers", "crm_customers", entry)

    async def backend(call: Call) -> Reply:
        return Reply(result=result)

    bare = build_chain([], "tools/call", backend)
    redacting = build_chain([PolicySpec(Redaction, engine)], "tools/call", backend)
    ctx = RequestContext(Era.LEGACY, "2025-11-25", "bench", identity=Identity("alice"))
    params = b'{"name":"crm_customers","arguments":{"limit":50}}'

    async def once(chain: Any) -> tuple[int, Reply]:
        call = Call("tools/call", params, ctx, route=route)
        start = time.perf_counter_ns()
        reply = await chain(call)
        return time.perf_counter_ns() - start, reply

    for _ in range(200):  # warm-up: caches, schema validator, the allocator
        await once(bare)
        await once(redacting)
    added: list[float] = []
    for _ in range(calls):
        base, _reply = await once(bare)
        with_redaction, reply = await once(redacting)
        added.append((with_redaction - base) / 1e6)
    assert reply.result is not None and reply.result != result  # it did redact
    added.sort()
    p99 = added[min(len(added) - 1, int(len(added) * 0.99))]
    return {
        "type": "redaction",
        "result_bytes": len(result),
        "calls": calls,
        "added_p50_ms": round(statistics.median(added), 4),
        "added_p99_ms": round(p99, 4),
        "goal_p99_ms": GOAL_P99_MS,
        "verdict": "PASS" if p99 <= GOAL_P99_MS else "MISS",
    }


def line(rec: dict[str, Any]) -> str:
    return (
        f"redaction, every built-in detector on a {rec['result_bytes']} B tools/call result "
        f"({rec['calls']} calls): added p50 {rec['added_p50_ms']:.3f} ms, p99 "
        f"{rec['added_p99_ms']:.3f} ms (goal <= {rec['goal_p99_ms']:.1f} ms): {rec['verdict']}"
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
