"""Latency, and on request RPS and CPU, of several targets measured interleaved: one process,
short slices in turn.

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

With `-c N`, each target has N clients calling at once (a slice is then N workers sharing its
calls) and the object also gives each target's RPS over the time of its own slices; with
`--cpu NAME=PID`, that target's process CPU per call over its own slices, every thread, read
from `schedstat` in nanoseconds. Two builds of Switchyard side by side this way compare their
CPU per call on one load without the machine's drift between runs (bench/README.md).

Prints one JSON object: each target's p50 over its measured calls, RPS, CPU per call where
asked, and failed calls (counted; a run with any is not clean). bench/run.py runs it for
each load at the end of every round (`--interleaved-calls`) and judges its c=1 latency goal,
the added p50 ÷ the floor's, on these, for each Switchyard target against its era's baselines.

  python bench/interleaved.py --target direct=legacy@http://127.0.0.1:9100/mcp \
      --target floor=legacy@http://127.0.0.1:9300/mcp \
      --target switchyard-legacy=legacy@http://127.0.0.1:9200/mcp --tool payload
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import aiohttp
import uvloop
from loadgen import Budget, Client, Stats, drive, percentile_us


def cpu_ns(pid: int) -> int | None:
    """CPU time a process has run, every thread of it, in nanoseconds (`schedstat`): exact,
    where `/proc/<pid>/stat` counts 10 ms ticks, too coarse for one slice."""
    total, seen = 0, False
    try:
        tasks = list(os.scandir(f"/proc/{pid}/task"))
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"{task.path}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
            seen = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between the listing and the read
    return total if seen else None


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    names: list[str] = []
    groups: list[list[Client]] = []
    sessions: list[aiohttp.ClientSession] = []
    stats: list[Stats] = []
    elapsed: list[float] = []
    cpu: list[int | None] = []
    pids = dict(args.cpu)
    try:
        for name, era, url in args.targets:
            http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=args.concurrency + 2),
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
            clients = [Client(http, options) for _ in range(args.concurrency)]  # type: ignore[arg-type]
            await asyncio.gather(*(c.open() for c in clients))
            names.append(name)
            groups.append(clients)
            stats.append(Stats())
            elapsed.append(0.0)
            cpu.append(0 if name in pids else None)
        far = time.monotonic() + args.max_seconds
        for clients in groups:
            warm = Budget(args.warmup, far)
            await asyncio.gather(*(drive(c, warm, None) for c in clients))
        rounds = -(-args.calls // args.slice)
        for rnd in range(rounds):
            if time.monotonic() >= far:
                break
            turn = rnd % len(groups)
            for i in [*range(turn, len(groups)), *range(turn)]:
                budget = Budget(args.slice, far)
                pid = pids.get(names[i])
                before = cpu_ns(pid) if pid is not None else None
                t0 = time.perf_counter()
                await asyncio.gather(*(drive(c, budget, stats[i]) for c in groups[i]))
                elapsed[i] += time.perf_counter() - t0
                after = cpu_ns(pid) if pid is not None else None
                spent = cpu[i]
                if spent is not None:
                    # A reading that failed leaves this target without a CPU figure.
                    ok = before is not None and after is not None
                    cpu[i] = spent + after - before if ok else None
        for clients in groups:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    finally:
        for http in sessions:
            await http.close()
    p50, rps, cpu_us, errors = {}, {}, {}, {}
    samples: list[str] = []
    for i, name in enumerate(names):
        lat = sorted(stats[i].lat_ns)
        p50[name] = percentile_us(lat, 50)
        rps[name] = round(len(lat) / elapsed[i], 1) if elapsed[i] > 0 else None
        spent = cpu[i]
        calls = len(lat) + stats[i].errors
        if spent is not None and calls:
            cpu_us[name] = round(spent / 1000 / calls, 1)
        errors[name] = stats[i].errors
        samples += [f"{name}: {e}" for e in stats[i].samples[:2]]
    return {
        "type": "interleaved",
        "tool": args.tool,
        "concurrency": args.concurrency,
        "calls": min(len(st.lat_ns) for st in stats),
        "slice": args.slice,
        "p50_us": p50,
        "rps": rps,
        "cpu_us": cpu_us,
        "errors": errors,
        "error_samples": samples[:6],
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
    ap.add_argument("-c", "--concurrency", type=int, default=1, help="calls in flight per target")
    ap.add_argument(
        "--cpu",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="report this target's process CPU per call (every thread, schedstat)",
    )
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured calls per target first")
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    if min(args.calls, args.slice, args.concurrency) < 1 or args.warmup < 0:
        ap.error("calls, slice and concurrency must be >= 1, warmup >= 0")
    cpu = []
    for spec in args.cpu:
        name, _, pid = spec.partition("=")
        if not pid.isdigit():
            ap.error(f"--cpu {spec!r}: NAME=PID")
        cpu.append((name, int(pid)))
    args.cpu = cpu
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
