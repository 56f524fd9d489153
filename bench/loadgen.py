"""Bounded MCP ``tools/call`` load generator: raw JSON-RPC over aiohttp on uvloop.

One run per process; prints one JSON object on stdout. bench/run.py drives it.

Eras:
  legacy  each virtual client sends ``initialize``, keeps ``Mcp-Session-Id``, sends
          ``notifications/initialized``, then loops ``tools/call`` (and DELETEs the session
          at the end).
  modern  2026-07-28 single exchanges: no initialize; every POST carries
          ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers and the
          protocol version and client capabilities in ``params._meta``.

Responses may be application/json or text/event-stream. Every response must be a JSON-RPC
result with the expected id whose text content is what the tool must return (the echoed text,
or exactly ``kib`` KiB); anything else counts as an error. A run is bounded twice: by the
call count (warm-up + measured) and by ``--max-seconds`` of wall time.

Latency runs from the send until the matching response has been read and checked.
``--cpu NAME=PID`` reports CPU (utime+stime from /proc/PID/stat, that process only, all its
threads) per measured call over exactly the measured window.

  python bench/loadgen.py --url http://127.0.0.1:9100/mcp --era legacy -c 32 -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import aiohttp
import msgspec
import uvloop

MODERN_VERSION = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ENCODE = msgspec.json.Encoder().encode
DECODE = msgspec.json.Decoder().decode


class CallError(Exception):
    pass


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of one process (all its threads, not its children), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # fields[0] is field 3 (state)
    return int(fields[11]) + int(fields[12])  # fields 14 (utime) and 15 (stime)


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile_us(sorted_ns: list[int], q: float) -> float | None:
    """Nearest-rank percentile, in microseconds."""
    if not sorted_ns:
        return None
    k = max(1, min(len(sorted_ns), -(-len(sorted_ns) * q // 100)))  # ceil(n * q / 100)
    return round(sorted_ns[int(k) - 1] / 1000, 1)


def sse_message(buf: bytes, rid: int) -> Any:
    """The JSON-RPC message answering ``rid`` among the complete SSE events in buf, or None."""
    buf = buf.replace(b"\r\n", b"\n")
    for event in buf.split(b"\n\n")[:-1]:  # the last piece is incomplete (or empty)
        data = b"\n".join(
            line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if not data:
            continue
        msg = DECODE(data)
        if isinstance(msg, dict) and msg.get("id") == rid:
            return msg
    return None


class Stats:
    def __init__(self) -> None:
        self.lat_ns: list[int] = []
        self.errors = 0
        self.samples: list[str] = []
        self.kinds: Counter[str] = Counter()

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])


class Budget:
    """Bounded ticket dispenser shared by the virtual clients of one phase."""

    def __init__(self, count: int, deadline: float) -> None:
        self.left = count
        self.deadline = deadline

    def take(self) -> bool:
        if self.left <= 0 or time.monotonic() >= self.deadline:
            return False
        self.left -= 1
        return True


class Client:
    """One virtual client: one logical MCP connection (a legacy session or modern exchanges)."""

    def __init__(self, http: aiohttp.ClientSession, args: argparse.Namespace) -> None:
        self.http = http
        self.url: str = args.url
        self.era: str = args.era
        self.tool: str = args.tool
        self.arguments: dict[str, Any]
        if args.tool == "payload":
            self.arguments = {"kib": args.kib}
            self.expect_len = args.kib * 1024
            self.expect_text: str | None = None
        else:
            self.arguments = {"text": "x" * args.text_bytes}
            self.expect_len = args.text_bytes
            self.expect_text = self.arguments["text"]
        self.headers = {
            "Content-Type": "application/json",
            "Accept": ACCEPT,
            "Accept-Encoding": "identity",
        }
        self.params: dict[str, Any] = {"name": self.tool, "arguments": self.arguments}
        if self.era == "modern":
            self.headers |= {
                "MCP-Protocol-Version": MODERN_VERSION,
                "Mcp-Method": "tools/call",
                "Mcp-Name": self.tool,
            }
            self.params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        self.protocol_version: str = args.protocol_version
        self.next_id = 1

    async def post(self, body: bytes, rid: int | None) -> tuple[Any, str]:
        """POST one message; return (the JSON-RPC answer to rid or None, response kind)."""
        async with self.http.post(self.url, data=body, headers=self.headers) as resp:
            if resp.status >= 400:
                text = (await resp.read())[:200].decode(errors="replace")
                raise CallError(f"http {resp.status}: {text}")
            if rid is None:  # notification: 202, no body expected
                await resp.read()
                return None, "ack"
            if "text/event-stream" in resp.headers.get("Content-Type", ""):
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    if b"\n\n" in buf or b"\r\n\r\n" in buf:
                        msg = sse_message(buf, rid)
                        if msg is not None:
                            return msg, "sse"
                return sse_message(buf + b"\n\n", rid), "sse"
            raw = await resp.read()
            return (DECODE(raw) if raw else None), "json"

    async def open(self) -> None:
        if self.era == "modern":
            return
        body = ENCODE(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": self.protocol_version,
                    "capabilities": {},
                    "clientInfo": {"name": "switchyard-bench", "version": "1"},
                },
            }
        )
        async with self.http.post(self.url, data=body, headers=self.headers) as resp:
            sid = resp.headers.get("Mcp-Session-Id")
            ctype = resp.headers.get("Content-Type", "")
            raw = await resp.read()
            if resp.status != 200:
                raise CallError(f"initialize: http {resp.status}: {raw[:200]!r}")
        msg = sse_message(raw, 0) if "text/event-stream" in ctype else DECODE(raw)
        if not isinstance(msg, dict) or not isinstance(msg.get("result"), dict):
            raise CallError(f"initialize: no result: {str(msg)[:200]}")
        if sid:
            self.headers["Mcp-Session-Id"] = sid
        self.headers["MCP-Protocol-Version"] = msg["result"].get(
            "protocolVersion", self.protocol_version
        )
        await self.post(ENCODE({"jsonrpc": "2.0", "method": "notifications/initialized"}), None)

    async def close(self) -> None:
        if "Mcp-Session-Id" in self.headers:
            async with self.http.delete(self.url, headers=self.headers) as resp:
                await resp.read()

    async def call(self) -> str:
        rid = self.next_id
        self.next_id += 1
        body = ENCODE({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": self.params})
        msg, kind = await self.post(body, rid)
        self.check(msg, rid)
        return kind

    def check(self, msg: Any, rid: int) -> None:
        if not isinstance(msg, dict):
            raise CallError(f"no JSON-RPC message: {str(msg)[:200]}")
        if msg.get("id") != rid:
            raise CallError(f"id {msg.get('id')!r} != {rid}")
        result = msg.get("result")
        if not isinstance(result, dict):
            raise CallError(f"not a result: {str(msg)[:200]}")
        if result.get("isError"):
            raise CallError(f"tool error: {str(result)[:200]}")
        try:
            text = result["content"][0]["text"]
        except (KeyError, IndexError, TypeError):
            raise CallError(f"no text content: {str(result)[:200]}") from None
        if len(text) != self.expect_len or (
            self.expect_text is not None and text != self.expect_text
        ):
            raise CallError(f"wrong result text ({len(text)} chars)")


async def drive(client: Client, budget: Budget, stats: Stats | None) -> None:
    while budget.take():
        t0 = time.perf_counter_ns()
        try:
            kind = await client.call()
        except Exception as e:  # every failure is counted, none ends the run
            if stats is not None:
                stats.error(repr(e))
            continue
        if stats is not None:
            stats.lat_ns.append(time.perf_counter_ns() - t0)
            stats.kinds[kind] += 1


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    deadline = time.monotonic() + args.max_seconds
    cpu_pids: dict[str, int] = {}
    for spec in args.cpu:
        name, _, pid = spec.partition("=")
        cpu_pids[name] = int(pid)
    connector = aiohttp.TCPConnector(limit=args.concurrency + 2)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=args.timeout),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    ) as http:
        clients = [Client(http, args) for _ in range(args.concurrency)]
        opened = await asyncio.gather(*(c.open() for c in clients), return_exceptions=True)
        live = [c for c, o in zip(clients, opened, strict=True) if not isinstance(o, BaseException)]
        for o in opened:
            if isinstance(o, BaseException):
                stats.error(f"open: {o!r}")
        elapsed = 0.0
        cpu: dict[str, float | None] = {}
        if live:
            warm = Budget(args.warmup, deadline)
            await asyncio.gather(*(drive(c, warm, None) for c in live))
            budget = Budget(args.requests, deadline)
            ticks0 = {name: cpu_ticks(pid) for name, pid in cpu_pids.items()}
            own0 = own_cpu_s()
            t0 = time.perf_counter()
            await asyncio.gather(*(drive(c, budget, stats) for c in live))
            elapsed = time.perf_counter() - t0
            own1 = own_cpu_s()
            calls = len(stats.lat_ns) + stats.errors
            for name, pid in cpu_pids.items():
                before, after = ticks0[name], cpu_ticks(pid)
                if calls and before is not None and after is not None:
                    cpu[f"cpu_{name}_us"] = round((after - before) * 1e6 / CLK_TCK / calls, 1)
                    cpu[f"cpu_{name}_ticks"] = after - before
            cpu["cpu_client_us"] = round((own1 - own0) * 1e6 / calls, 1) if calls else None
            await asyncio.gather(*(c.close() for c in live), return_exceptions=True)
    lat = sorted(stats.lat_ns)
    ok = len(lat)
    return {
        "era": args.era,
        "tool": args.tool,
        "concurrency": args.concurrency,
        "planned": args.requests,
        "ok": ok,
        "errors": stats.errors,
        "truncated": ok + stats.errors < args.requests,
        "elapsed_s": round(elapsed, 4),
        "rps": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_us": percentile_us(lat, 50),
        "p90_us": percentile_us(lat, 90),
        "p99_us": percentile_us(lat, 99),
        "max_us": round(lat[-1] / 1000, 1) if lat else None,
        "kinds": dict(stats.kinds),
        "error_samples": stats.samples,
        **cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--url", required=True)
    ap.add_argument("--era", choices=["legacy", "modern"], default="legacy")
    ap.add_argument("--protocol-version", default="2025-11-25", help="legacy initialize version")
    ap.add_argument("--tool", choices=["echo", "payload"], default="echo")
    ap.add_argument("--text-bytes", type=int, default=16, help="echo text size")
    ap.add_argument("--kib", type=int, default=64, help="payload result size")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-n", "--requests", type=int, default=2000, help="measured calls (total)")
    ap.add_argument("--warmup", type=int, default=100, help="unmeasured calls first (total)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="wall cap for the whole run")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    ap.add_argument("--cpu", action="append", default=[], metavar="NAME=PID")
    args = ap.parse_args()
    if min(args.concurrency, args.requests) < 1 or args.warmup < 0 or args.max_seconds <= 0:
        ap.error("concurrency and requests must be >= 1, warmup >= 0, max-seconds > 0")
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        ap.error("loopback targets only")
    print(ENCODE(uvloop.run(run(args))).decode(), flush=True)


if __name__ == "__main__":
    main()
