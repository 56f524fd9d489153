"""What the approval gate costs, measured in process.

pass       a tools/call no rule gates, through the chain with the Approval policy, minus the
           same call through the chain without it: what every ungated call pays when
           approvals are on (with approvals off the policy is not in the chain at all)
ticket     a gated call answered with a new pending ticket (one INSERT, SQLite)
consume    an approved call's retry: the lookup and the single-use UPDATE, then the backend

.venv/bin/python bench/approvals.py [--calls N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from switchyard.call import Call, Identity, RequestContext
from switchyard.config.load import compile_plan
from switchyard.config.schema import SwitchyardConfig
from switchyard.policies.approvals import Approval, Approvals
from switchyard.policies.base import PolicySpec, build_chain
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry
from switchyard.routing.router import Route
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

RESULT = b'{"content":[{"type":"text","text":"ok"}],"resultType":"complete"}'
ALICE = Identity("alice", ("dev",))
CAROL = Identity("carol", ("approver",))


def _gate(tmp: Path) -> Approvals:
    config = SwitchyardConfig.model_validate(
        {
            "auth": {"enabled": True, "data_dir": str(tmp)},
            "storage": {"data_dir": str(tmp / "db")},
            "approvals": {
                "enabled": True,
                "secret": "bench-approval-secret-0123456789",
                "rules": [
                    {"name": "pay", "tools": ["pay"], "approver": "approver"},
                    {"name": "big", "arguments": {"amount": {"greater_than": 1000}}},
                    {"name": "wipe", "annotations": {"destructiveHint": True}, "tools": ["rm*"]},
                ],
            },
        }
    )
    gate = compile_plan(config, tmp).gateway.approvals
    assert gate is not None
    return gate


def _call(name: str, arguments: dict[str, Any]) -> Call:
    entry = Entry("tools", f"fx_{name}", "fx", name, f'{{"name":"{name}"}}'.encode())
    params = Raw(frame.encode({"name": f"fx_{name}", "arguments": arguments}))
    ctx = RequestContext(Era.MODERN, "2026-07-28", "streamable-http")
    ctx.identity, ctx.principal = ALICE, ALICE.key
    call = Call("tools/call", params, ctx)
    call.route = Route("tools", "fx", name, f"fx_{name}", entry)
    return call


async def _backend(call: Call) -> Reply:
    return Reply(result=RESULT)


def _us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 2),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 2),
    }


async def measure(calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        gate = _gate(Path(tmp))
        with_gate = build_chain([PolicySpec(Approval, gate)], "tools/call", _backend)
        without = build_chain([], "tools/call", _backend)
        args = {"text": "hello", "amount": 10, "tags": ["a", "b"]}
        passing: list[float] = []
        for _ in range(calls):
            gated, bare = _call("echo", args), _call("echo", args)
            t0 = time.perf_counter()
            await with_gate(gated)
            t1 = time.perf_counter()
            await without(bare)
            t2 = time.perf_counter()
            passing.append((t1 - t0) - (t2 - t1))
        tickets: list[float] = []
        consumes: list[float] = []
        store = await gate.ready()
        for i in range(min(calls, 2000)):
            call = _call("pay", {"amount": i})
            t0 = time.perf_counter()
            reply = await with_gate(call)
            tickets.append(time.perf_counter() - t0)
            assert reply.result is not None and b'"isError":true' in reply.result
            ticket = frame.decode_any(reply.result)["structuredContent"]["approval"]["id"]
            await gate.decide(ticket, True, CAROL, CAROL.key)
            t0 = time.perf_counter()
            done = await with_gate(_call("pay", {"amount": i}))
            consumes.append(time.perf_counter() - t0)
            assert done.result == RESULT
        assert await store.count("pending") == 0
        await gate.close()
    out: dict[str, Any] = {
        "type": "approvals",
        "calls": calls,
        "pass": _us(passing),
        "ticket": _us(tickets),
        "consume": _us(consumes),
    }
    out["line"] = (
        f"approvals (in process, SQLite): an ungated call pays p50 {out['pass']['p50_us']} us "
        f"(p99 {out['pass']['p99_us']}); a new ticket p50 {out['ticket']['p50_us']} us; an "
        f"approved retry p50 {out['consume']['p50_us']} us"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args.calls))
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("pass", "ticket", "consume"):
            r = result[name]
            print(f"{name:8} p50 {r['p50_us']:>9.1f} us   p99 {r['p99_us']:>9.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
