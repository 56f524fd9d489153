"""c=1 latency of several targets measured interleaved: one process, short slices in turn.

bench/run.py measures each target in a run of its own, a few seconds before or after the
others. On a shared two-core machine the speed of everything can change by a factor of two
within a minute (the load generator's own CPU per call, the same work every time, has read
210 and 590 µs in one bench), so the difference of two p50s taken a minute apart can be
mostly the machine's. Here one client per target (each with its own connection, a legacy
session or 2026-07-28 exchanges, as `loadgen.py` speaks) calls its target `--slice` times,
then the next target does, in an order that rotates every round of slices, until each has
made `--calls` measured calls. A slow minute then falls on every target alike, and the
difference of p50s is the targets'. Each slice starts with a call whose caches the other
targets cooled; with slices of 50 that call is outside the median (measured: the p50 over
every call and over all but the first five of each slice give the same ratio to 0.01).

Prints one JSON object: each target's p50 over its measured calls. bench/run.py runs it for
each load at the end of every round (`--interleaved-calls`) and judges its c=1 latency goal,
the added p50 ÷ the floor's, on these, for each Switchyard target against its era's baselines.

  python bench/interleaved.py --target direct=legacy@http://127.0.0.1:9100/mcp \
      --target floor=legacy@http://127.0.0.1:9300/mcp \
      --target switchyard-legacy=legacy@http://127.0.0.1:9200/mcp --tool payload
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import aiohttp
import uvloop
from loadgen import Client


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    names: list[str] = []
    clients: list[Client] = []
    sessions: list[aiohttp.ClientSession] = []
    try:
        for name, era, url in args.targets:
            http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2),
                timeout=aiohttp.ClientTimeout(total=args.timeout),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
            sessions.append(http)
            options = SimpleNamespace(
                url=url,
                era=era,
                tool=args.tool,
                kib=args.kib,
                text_bytes=16,
                protocol_version=args.protocol_version,
            )
            client = Client(http, options)  # type: ignore[arg-type]
            await client.open()
            names.append(name)
            clients.append(client)
        for client in clients:
            for _ in range(args.warmup):
                await client.call()
        lat: list[list[int]] = [[] for _ in clients]
        deadline = time.monotonic() + args.max_seconds
        rounds = -(-args.calls // args.slice)
        for rnd in range(rounds):
            if time.monotonic() >= deadline:
                break
            turn = rnd % len(clients)
            for i in [*range(turn, len(clients)), *range(turn)]:
                client, into = clients[i], lat[i]
                for _ in range(args.slice):
                    t0 = time.perf_counter_ns()
                    await client.call()
                    into.append(time.perf_counter_ns() - t0)
        for client in clients:
            await client.close()
    finally:
        for http in sessions:
            await http.close()
    p50 = {}
    for name, samples in zip(names, lat, strict=True):
        samples.sort()
        p50[name] = round(samples[(len(samples) - 1) // 2] / 1000, 1)
    return {
        "type": "interleaved",
        "tool": args.tool,
        "calls": min(len(s) for s in lat),
        "slice": args.slice,
        "p50_us": p50,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--target", action="append", required=True, metavar="NAME=ERA@URL")
    ap.add_argument("--tool", choices=["echo", "payload"], default="echo")
    ap.add_argument("--kib", type=int, default=64)
    ap.add_argument("--protocol-version", default="2025-11-25")
    ap.add_argument("--calls", type=int, default=3000, help="measured calls per target")
    ap.add_argument("--slice", type=int, default=50, help="calls in a row per target")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured calls per target first")
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    if min(args.calls, args.slice) < 1 or args.warmup < 0:
        ap.error("calls and slice must be >= 1, warmup >= 0")
    args.targets = []
    for spec in args.target:
        name, _, rest = spec.partition("=")
        era, _, url = rest.partition("@")
        if not name or era not in ("legacy", "modern"):
            ap.error(f"--target {spec!r}: NAME=legacy@URL or NAME=modern@URL")
        if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            ap.error("loopback targets only")
        args.targets.append((name, era, url))
    print(json.dumps(uvloop.run(measure(args))), flush=True)


if __name__ == "__main__":
    main()
