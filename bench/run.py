"""Switchyard benchmark: the same tools/call load against four targets, in one run.

  direct             the SDK backend itself (bench/backend.py, JSON responses)
  floor              bench/floor.py in front of it: a raw ASGI byte forwarder (the null proxy)
  switchyard-legacy  Switchyard in front of it; clients use legacy sessions (initialize)
  switchyard-modern  Switchyard in front of it; clients use 2026-07-28 single exchanges

direct-modern and floor-modern drive direct and floor over the 2026-07-28 wire, and
switchyard-modern is compared with them: the SDK backend spends more per call on a 2026-07-28
request than on a legacy session's (bench/README.md), which a legacy baseline would count as
Switchyard's. switchyard-legacy is an era translation (the backend speaks 2026-07-28), so it
keeps the legacy baselines: that backend cost is part of what a legacy client sees.

Rate limits (--limits on|off): two more Switchyard processes with one `rate_limits:` rule that
selects every call and never refuses (a window, a concurrency cap and a daily budget), counting
in memory (limits-memory) and in Redis (limits-redis, --redis-url); driven like
switchyard-legacy, and reported as the CPU and p50 they add to it.

Stdio load (--stdio on|off|only): a second Switchyard process whose backend is the same SDK
server spawned over stdio and pinned to the legacy era, driven by legacy sessions (stdio-legacy)
and by 2026-07-28 single exchanges (stdio-modern); the report gives each p50 and the ratio
modern ÷ legacy (goal: at most 1.5), the cost of a modern call reaching a session-keeping stdio
backend.

Audit load: a third Switchyard process with the audit trail on (SQLite, the default settings)
serves audit-legacy and audit-modern; the report gives its CPU per call ÷ switchyard-legacy's
and switchyard-modern's (goal: at most 1.15). Then bench/audit_verify.py writes
--audit-records records through the audit writer and times `switchyard audit verify` over them
(goal: 1,000,000 in under 30 s).

Every governance feature on: a fourth Switchyard process with the audit trail, a rate-limit
rule selecting every call (in memory), redaction with every built-in detector and tool pinning
(trust on first use) serves all-legacy and all-modern; the report gives its CPU per call and
p50 against the same era with everything off and against the floor.

Observability cost: metrics are on by default, so switchyard-legacy/-modern carry them; two
more Switchyard processes serve nometrics-legacy/-modern (`metrics.enabled: false`) and
tracing-legacy/-modern (`tracing:` on, every request sampled, spans exported over OTLP/HTTP to a
discarding receiver in this process). The report gives CPU per call, metrics on ÷ off (goal: at
most 1.05) and tracing on ÷ off (reported; no goal at 100 % sampling).

Loads: small results (echo, 16 bytes) and large results (payload, 64 KiB), each at c=1 and
c=32. Each round runs every load against every target in turn (the target order rotates per
round); each run is warm-up calls, then a bounded measured count, under a wall-time cap.
Figures are medians over rounds. The goals against the floor and direct (CPU per call, c=1
latency, RPS) are judged on bench/interleaved.py, run at the end of every round at each
concurrency: direct, the floor and Switchyard in short slices in turn (50 calls at c=1, 800 at
higher concurrency), so that the machine's drift between runs falls on each alike; the rounds'
runs of their own are shown beside. Knobs: flags below, or the BENCH_* environment variables.
See bench/README.md.

  .venv/bin/python bench/run.py            (or: make bench)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
Record = dict[str, Any]

GOAL_CPU = 1.3  # Switchyard CPU/call ÷ floor CPU/call: at most
GOAL_ADDED_P50 = 1.3  # Switchyard added p50 ÷ floor added p50, c=1: at most
GOAL_RPS = 0.85  # Switchyard RPS ÷ direct RPS, c>1: at least
GOAL = {"cpu": GOAL_CPU, "p50": GOAL_ADDED_P50, "rps": GOAL_RPS}
COARSE_TICKS = 50  # a CPU window under this many clock ticks (±1 tick = ±2%) is coarse


@dataclass(frozen=True)
class Target:
    name: str
    service: str  # the process that receives the load: backend, floor or switchyard
    era: str  # how the load generator speaks: legacy or modern


TARGETS = {
    t.name: t
    for t in (
        Target("direct", "backend", "legacy"),
        Target("floor", "floor", "legacy"),
        Target("switchyard-legacy", "switchyard", "legacy"),
        Target("switchyard-modern", "switchyard", "modern"),
        Target("direct-modern", "backend", "modern"),
        Target("floor-modern", "floor", "modern"),
        Target("stdio-legacy", "switchyard-stdio", "legacy"),
        Target("stdio-modern", "switchyard-stdio", "modern"),
        Target("limits-memory", "switchyard-limits-memory", "legacy"),
        Target("limits-redis", "switchyard-limits-redis", "legacy"),
        Target("audit-legacy", "switchyard-audit", "legacy"),
        Target("audit-modern", "switchyard-audit", "modern"),
        Target("all-legacy", "switchyard-all", "legacy"),
        Target("all-modern", "switchyard-all", "modern"),
        Target("nometrics-legacy", "switchyard-nometrics", "legacy"),
        Target("nometrics-modern", "switchyard-nometrics", "modern"),
        Target("tracing-legacy", "switchyard-tracing", "legacy"),
        Target("tracing-modern", "switchyard-tracing", "modern"),
    )
}
LIMIT_TARGETS = ("limits-memory", "limits-redis")
STDIO_TARGETS = ("stdio-legacy", "stdio-modern")
GOAL_STDIO_P50 = 1.5  # stdio-modern p50 ÷ stdio-legacy p50: at most
SWITCHYARD = ("switchyard-legacy", "switchyard-modern")
AUDIT = {"audit-legacy": "switchyard-legacy", "audit-modern": "switchyard-modern"}
GOAL_AUDIT_CPU = 1.15  # Switchyard with audit on, CPU/call ÷ the same with it off: at most
ALL_ON = {"all-legacy": "switchyard-legacy", "all-modern": "switchyard-modern"}
GOAL_AUDIT_VERIFY_S = 30.0  # seconds to verify 1,000,000 records: under
DEFAULT_TARGETS = (
    "direct,floor,direct-modern,floor-modern,switchyard-legacy,switchyard-modern,"
    "audit-legacy,audit-modern,"
    "all-legacy,all-modern,nometrics-legacy,nometrics-modern,tracing-legacy,tracing-modern"
)
# Metrics on (switchyard-*, the default) ÷ off; tracing on ÷ off (metrics on in both).
METRICS = {"switchyard-legacy": "nometrics-legacy", "switchyard-modern": "nometrics-modern"}
TRACING = {"tracing-legacy": "switchyard-legacy", "tracing-modern": "switchyard-modern"}
GOAL_METRICS_CPU = 1.05  # Switchyard with metrics on, CPU/call ÷ the same with them off: at most


@dataclass(frozen=True)
class Load:
    tool: str  # echo (small result) or payload (large result)
    concurrency: int
    calls: int


# (flag, environment variable, type, default, help)
KNOBS: list[tuple[str, str, type, str, str]] = [
    ("--rounds", "BENCH_ROUNDS", int, "5", "interleaved rounds"),
    ("--small-calls", "BENCH_SMALL_CALLS", int, "5000", "measured calls per run, 16 B echo"),
    ("--large-calls", "BENCH_LARGE_CALLS", int, "4000", "measured calls per run, large results"),
    ("--warmup", "BENCH_WARMUP", int, "200", "unmeasured calls before each measured window"),
    ("--max-seconds", "BENCH_MAX_SECONDS", float, "60", "wall-time cap per run, warm-up included"),
    ("--concurrency", "BENCH_CONCURRENCY", str, "1,32", "comma-separated concurrency levels"),
    ("--kib", "BENCH_KIB", int, "64", "large result size, KiB"),
    ("--targets", "BENCH_TARGETS", str, DEFAULT_TARGETS,
     f"comma-separated subset of: {', '.join(TARGETS)}"),
    ("--protocol-version", "BENCH_PROTOCOL_VERSION", str, "2025-11-25",
     "legacy initialize version (2025-06-18 or 2025-11-25)"),
    ("--switchyard", "BENCH_SWITCHYARD", str, str(Path(sys.executable).parent / "switchyard"),
     "the switchyard executable"),
    ("--switchyard-args", "BENCH_SWITCHYARD_ARGS", str, "",
     "extra arguments for switchyard serve, e.g. '--log-level warning'"),
    ("--ready-timeout", "BENCH_READY_TIMEOUT", float, "30", "seconds to wait for each service"),
    ("--stdio", "BENCH_STDIO", str, "on", "stdio-backend load: on, off, or only (just that load)"),
    ("--stdio-calls", "BENCH_STDIO_CALLS", int, "2000", "measured calls per stdio run, 16 B echo"),
    ("--stdio-concurrency", "BENCH_STDIO_CONCURRENCY", str, "1,8",
     "comma-separated concurrency levels of the stdio load"),
    ("--stdio-isolation", "BENCH_STDIO_ISOLATION", str, "per_session",
     "isolation of the stdio backend (per_session, per_principal or shared)"),
    ("--redaction-calls", "BENCH_REDACTION_CALLS", int, "2000",
     "calls of the in-process redaction measurement (bench/redaction.py); 0 skips it"),
    ("--approvals-calls", "BENCH_APPROVALS_CALLS", int, "3000",
     "calls of the in-process approval-gate measurement (bench/approvals.py); 0 skips it"),
    ("--cache-calls", "BENCH_CACHE_CALLS", int, "2000",
     "calls of the in-process result-cache measurement (bench/caching.py); 0 skips it"),
    ("--instructions-calls", "BENCH_INSTRUCTIONS_CALLS", int, "200",
     "calls per load of the instruction counts, metrics on ÷ off and Switchyard ÷ floor "
     "(bench/instructions.py, under valgrind); 0 skips it"),
    ("--interleaved-calls", "BENCH_INTERLEAVED_CALLS", int, "3000",
     "measured calls per target of the interleaved c=1 measurement (bench/interleaved.py); "
     "0 skips it"),
    ("--interleaved-load-calls", "BENCH_INTERLEAVED_LOAD_CALLS", int, "4000",
     "measured calls per target of the interleaved measurement at each concurrency over 1; "
     "0 skips it"),
    ("--limits", "BENCH_LIMITS", str, "on",
     "rate-limit load (limits-memory, limits-redis against switchyard-legacy): on or off"),
    ("--redis-url", "BENCH_REDIS_URL", str, "redis://127.0.0.1:6379/0",
     "Redis for limits-redis"),
    ("--audit-records", "BENCH_AUDIT_RECORDS", int, "1000000",
     "records written then verified by bench/audit_verify.py (0: skip)"),
    ("--out-dir", "BENCH_OUT_DIR", Path, str(BENCH / "results"), "where results and logs go"),
]  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for flag, var, kind, default, text in KNOBS:
        # A string default goes through `type` like a command-line value (clean errors).
        ap.add_argument(flag, type=kind, default=os.environ.get(var, default),
                        help=f"{text} (${var}, default {default})")  # fmt: skip
    args = ap.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.stdio_concurrency = [int(c) for c in args.stdio_concurrency.split(",") if c.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := [t for t in args.targets if t not in TARGETS or t in STDIO_TARGETS]:
        ap.error(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}")
    if args.stdio not in ("on", "off", "only"):
        ap.error("--stdio is on, off or only")
    if args.stdio_isolation not in ("per_session", "per_principal", "shared"):
        ap.error("--stdio-isolation is per_session, per_principal or shared")
    if args.limits not in ("on", "off"):
        ap.error("--limits is on or off")
    if args.limits == "on" and args.stdio != "only":
        for name in ("switchyard-legacy", *LIMIT_TARGETS):  # the baseline, then the two
            if name not in args.targets:
                args.targets.append(name)
    if args.stdio == "only":
        args.targets = []
    elif "direct" not in args.targets:
        args.targets.insert(0, "direct")  # every ratio is relative to it
    args.stdio_targets = list(STDIO_TARGETS) if args.stdio != "off" else []
    counts = (args.rounds, args.small_calls, args.large_calls, args.kib, *args.concurrency)
    counts += (args.stdio_calls, *args.stdio_concurrency)
    if min(counts) < 1 or args.warmup < 0 or not 0 < args.max_seconds <= 3600:
        ap.error("rounds, calls, kib, concurrency must be >= 1; 0 < max-seconds <= 3600")
    return args


# ---- processes -------------------------------------------------------------------------


class SetupError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Service:
    """A process this runner starts on 127.0.0.1 and always stops (TERM, then KILL)."""

    def __init__(self, name: str, argv: list[str], port: int, logs: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.log = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("wb") as log:
            # Own session: a terminal's Ctrl-C reaches only this runner, which then stops it.
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, path: str, timeout: float, need_200: bool) -> None:
        """Poll GET path until it answers (with 200 if need_200); bounded by timeout."""
        url = f"http://127.0.0.1:{self.port}{path}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SetupError(f"{self.name} exited with code {self.exit_code()} at start-up")
            try:
                with urllib.request.urlopen(url, timeout=1.0):
                    return  # 2xx/3xx
            except urllib.error.HTTPError:
                if not need_200:
                    return  # it speaks HTTP: up
            except OSError:
                pass
            time.sleep(0.1)
        want = "200" if need_200 else "an HTTP response"
        raise SetupError(f"{self.name}: GET {url} gave no {want} within {timeout:.0f} s")

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            text = []
        return "\n".join("    " + line for line in text) or "    (empty)"

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


SWITCHYARD_CONFIG = """\
servers:
  bench:
    url: {url}
    type: streamable-http
    prefix: ""
"""
# The stdio load's backend is spawned by Switchyard. Spawns are not what is measured: the
# allowance is raised above the load's concurrency (legacy sessions open one process each).
SWITCHYARD_AUDIT_CONFIG = (
    SWITCHYARD_CONFIG
    + """\
storage:
  data_dir: audit-db
audit:
  enabled: true
  hmac_key: "${{BENCH_AUDIT_HMAC}}"
  keys_dir: audit-keys
"""
)
SWITCHYARD_NOMETRICS_CONFIG = SWITCHYARD_CONFIG + "metrics:\n  enabled: false\n"
SWITCHYARD_TRACING_CONFIG = (
    SWITCHYARD_CONFIG
    + """\
tracing:
  enabled: true
  otlp_endpoint: {otlp}
"""
)
SWITCHYARD_STDIO_CONFIG = """\
servers:
  bench:
    command: {python}
    args: [{backend}, --stdio]
    era: legacy
    isolation: {isolation}
    spawn_burst: 64
    prefix: ""
"""
# Every governance feature at once, each selecting every call and refusing none.
SWITCHYARD_ALL_CONFIG = (
    SWITCHYARD_AUDIT_CONFIG
    + """\
redaction:
  key: bench-redaction-key-0123
  rules:
    - {{name: all, detectors: ["*"], action: mask}}
pinning:
  mode: tofu
"""
)
# Selects every call, refuses none: what is measured is the check itself (all three kinds of
# limit, counted per principal), not refusals.
LIMITS_CONFIG = """\
rate_limits:
  store: {store}
  key_prefix: {prefix}
  rules:
    - name: bench
      windows: [{{period: minute, max: 100000}}]
      concurrency: 10000
      budget: {{calls: 1000000000000}}
"""


def start_switchyard(args: argparse.Namespace, name: str, config: Path) -> Service:
    if not os.access(args.switchyard, os.X_OK):
        raise SetupError(f"no switchyard executable at {args.switchyard} (make install?)")
    port = free_port()
    argv = [args.switchyard, "serve", "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port), *shlex.split(args.switchyard_args)]
    svc = Service(name, argv, port, config.parent)
    svc.start()
    return svc


@contextlib.contextmanager
def services(args: argparse.Namespace, logs: Path) -> Iterator[dict[str, Service]]:
    """The backend, then the proxies the selected targets need; all stopped on exit."""
    py = sys.executable
    needed = {TARGETS[t].service for t in args.targets}
    svcs: dict[str, Service] = {}
    try:
        if needed:
            port = free_port()
            argv = [py, str(BENCH / "backend.py"), f"--port={port}"]
            backend = Service("backend", argv, port, logs)
            svcs["backend"] = backend
            backend.start()
            backend.wait_ready("/mcp", args.ready_timeout, need_200=False)
        if "floor" in needed:
            port = free_port()
            argv = [py, str(BENCH / "floor.py"), f"--backend={backend.url}", f"--port={port}"]
            svcs["floor"] = Service("floor", argv, port, logs)
            svcs["floor"].start()
        if "switchyard" in needed:
            config = logs / "switchyard.yaml"
            config.write_text(SWITCHYARD_CONFIG.format(url=backend.url))
            svcs["switchyard"] = start_switchyard(args, "switchyard", config)
        for store in ("memory", "redis"):
            name = f"switchyard-limits-{store}"
            if name in needed:
                config = logs / f"{name}.yaml"
                text = SWITCHYARD_CONFIG.format(url=backend.url)
                text += LIMITS_CONFIG.format(store=store, prefix=f"switchyard-bench:{logs.name}")
                if store == "redis":
                    check_redis(args.redis_url)
                    text += f"storage:\n  redis_url: {json.dumps(args.redis_url)}\n"
                config.write_text(text)
                svcs[name] = start_switchyard(args, name, config)
        if "switchyard-audit" in needed:
            config = logs / "switchyard-audit.yaml"
            config.write_text(SWITCHYARD_AUDIT_CONFIG.format(url=backend.url))
            os.environ.setdefault("BENCH_AUDIT_HMAC", "bench-audit-hmac-key-0123456789")
            svcs["switchyard-audit"] = start_switchyard(args, "switchyard-audit", config)
        if "switchyard-all" in needed:
            config = logs / "switchyard-all.yaml"
            text = SWITCHYARD_ALL_CONFIG.format(url=backend.url)
            text += LIMITS_CONFIG.format(store="memory", prefix=f"switchyard-bench:{logs.name}")
            config.write_text(text.replace("audit-db", "all-db").replace("audit-keys", "all-keys"))
            os.environ.setdefault("BENCH_AUDIT_HMAC", "bench-audit-hmac-key-0123456789")
            svcs["switchyard-all"] = start_switchyard(args, "switchyard-all", config)
        if "switchyard-nometrics" in needed:
            config = logs / "switchyard-nometrics.yaml"
            config.write_text(SWITCHYARD_NOMETRICS_CONFIG.format(url=backend.url))
            svcs["switchyard-nometrics"] = start_switchyard(args, "switchyard-nometrics", config)
        if "switchyard-tracing" in needed:
            config = logs / "switchyard-tracing.yaml"
            otlp = f"http://127.0.0.1:{otlp_sink()}/v1/traces"
            config.write_text(SWITCHYARD_TRACING_CONFIG.format(url=backend.url, otlp=otlp))
            svcs["switchyard-tracing"] = start_switchyard(args, "switchyard-tracing", config)
        if args.stdio_targets:
            config = logs / "switchyard-stdio.yaml"
            config.write_text(
                SWITCHYARD_STDIO_CONFIG.format(
                    python=json.dumps(py),
                    backend=json.dumps(str(BENCH / "backend.py")),
                    isolation=args.stdio_isolation,
                )
            )
            svcs["switchyard-stdio"] = start_switchyard(args, "switchyard-stdio", config)
        if "floor" in svcs:
            svcs["floor"].wait_ready("/mcp", args.ready_timeout, need_200=False)
        for name in (
            "switchyard",
            "switchyard-stdio",
            "switchyard-audit",
            "switchyard-all",
            "switchyard-nometrics",
            "switchyard-tracing",
            *(f"switchyard-limits-{s}" for s in ("memory", "redis")),
        ):
            if name in svcs:
                svcs[name].wait_ready("/readyz", args.ready_timeout, need_200=True)
        yield svcs
    except SetupError as e:
        for svc in svcs.values():
            if svc.name in str(e) or not svc.alive():
                e.add_note(
                    f"  {svc.name}: {' '.join(svc.argv)}\n  log {svc.log}:\n{svc.log_tail()}"
                )
        raise
    finally:
        for svc in reversed(svcs.values()):
            svc.stop()
        if "switchyard-limits-redis" in svcs:
            drop_redis_keys(args.redis_url, f"switchyard-bench:{logs.name}")


def otlp_sink() -> int:
    """A receiver on 127.0.0.1 that accepts OTLP/HTTP exports and discards them (its CPU is
    this process's, not the gateway's); returns its port."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True).start()
    return int(server.server_address[1])


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as e:
        raise SetupError(f"limits-redis: no Redis at {url} ({e}); or --limits off") from None


def drop_redis_keys(url: str, prefix: str) -> None:
    import redis

    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(url, socket_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


# ---- measuring -------------------------------------------------------------------------


def measure(args: argparse.Namespace, svcs: dict[str, Service], t: Target, load: Load) -> Record:
    """One bounded load run in a fresh load-generator process."""
    svc = svcs[t.service]
    argv = [
        sys.executable, str(BENCH / "loadgen.py"), f"--url={svc.url}", f"--era={t.era}",
        f"--protocol-version={args.protocol_version}", f"--tool={load.tool}",
        f"--kib={args.kib}", f"--concurrency={load.concurrency}", f"--requests={load.calls}",
        f"--warmup={args.warmup}", f"--max-seconds={args.max_seconds}",
    ]  # fmt: skip
    if t.service != "switchyard-stdio":  # a stdio backend is several processes: not counted
        argv.append(f"--cpu=backend={svcs['backend'].pid}")
    if t.service != "backend":
        argv.append(f"--cpu=proxy={svc.pid}")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=args.max_seconds + 45, cwd=REPO
        )
        if done.returncode != 0:
            raise RuntimeError(f"loadgen exit {done.returncode}: {done.stderr.strip()[-500:]}")
        result: Record = json.loads(done.stdout.strip().splitlines()[-1])
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        result = {"ok": 0, "errors": load.calls, "failed": repr(e)[:600], "error_samples": []}
    if not svc.alive():
        result["failed"] = f"{svc.name} exited with code {svc.exit_code()} during the run"
    return result


def run_all(args: argparse.Namespace, svcs: dict[str, Service], out: Path, run_id: str) -> None:
    loads = [Load("echo", c, args.small_calls) for c in args.concurrency]
    loads += [Load("payload", c, args.large_calls) for c in args.concurrency]
    targets = [TARGETS[t] for t in args.targets]
    stdio_loads = [Load("echo", c, args.stdio_calls) for c in args.stdio_concurrency]
    stdio_targets = [TARGETS[t] for t in args.stdio_targets]
    for rnd in range(1, args.rounds + 1):
        plan = [(load, rotated(targets, rnd)) for load in loads] if targets else []
        if stdio_targets:  # --stdio off: none
            plan += [(load, rotated(stdio_targets, rnd)) for load in stdio_loads]
        for load, order in plan:
            for target in order:
                rec = {
                    "type": "run",
                    "run_id": run_id,
                    "round": rnd,
                    "target": target.name,
                    "load": "small" if load.tool == "echo" else "large",
                    **measure(args, svcs, target, load),
                }
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                progress(rec)
                if not all(s.alive() for s in svcs.values()):
                    raise SetupError(rec.get("failed", "a service exited"))
        if args.interleaved_calls > 0:
            interleaved(args, svcs, out, run_id, rnd)


INTERLEAVED = {
    "legacy": ("direct", "floor", "switchyard-legacy"),
    "modern": ("direct-modern", "floor-modern", "switchyard-modern"),
}
"""The three targets per era of the goals against the floor and direct, measured interleaved
(`interleaved.py`)."""
LOAD_SLICE = 800
"""Calls per slice of the interleaved measurement at a concurrency over 1: 25 per client at
c=32, long enough that a slice's ramp up and down is a small share of it."""


def interleaved(
    args: argparse.Namespace, svcs: dict[str, Service], out: Path, run_id: str, rnd: int
) -> None:
    """bench/interleaved.py once per load and concurrency at the end of round `rnd`, over the
    eras whose three targets all run, with the CPU of every proxy: the goals against the floor
    and direct are judged on these (`Summary.crossed_added`, `Summary.crossed_ratio`)."""
    names = [
        name for era in INTERLEAVED.values() if all(n in args.targets for n in era) for name in era
    ]
    if not names:
        return
    specs = [f"--target={n}={TARGETS[n].era}@{svcs[TARGETS[n].service].url}" for n in names]
    specs += [
        f"--cpu={n}={svcs[TARGETS[n].service].pid}"
        for n in names
        if TARGETS[n].service != "backend"
    ]
    levels = [(1, args.interleaved_calls, 50)] if args.interleaved_calls > 0 else []
    if args.interleaved_load_calls > 0:
        levels += [(c, args.interleaved_load_calls, LOAD_SLICE) for c in args.concurrency if c > 1]
    for concurrency, calls, slice_ in levels:
        for tool in ("echo", "payload"):
            argv = [
                sys.executable, str(BENCH / "interleaved.py"), *specs, f"--tool={tool}",
                f"--kib={args.kib}", f"--calls={calls}", f"--warmup={args.warmup}",
                f"--slice={slice_}", f"--concurrency={concurrency}",
                f"--protocol-version={args.protocol_version}",
            ]  # fmt: skip
            print(f"r{rnd} interleaved c={concurrency}: {tool}", file=sys.stderr)
            rec: Record
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
            except subprocess.TimeoutExpired as e:
                rec = {"type": "interleaved", "failed": repr(e)[:500]}
            else:
                try:
                    rec = json.loads(done.stdout.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    rec = {"type": "interleaved", "failed": done.stderr.strip()[-500:]}
            rec["tool"] = tool
            rec["concurrency"] = concurrency
            rec["load"] = "small" if tool == "echo" else "large"
            rec["round"] = rnd
            rec["requested"] = calls
            with out.open("a") as f:
                f.write(json.dumps({"run_id": run_id, **rec}) + "\n")


def interleaved_lines(lines: list[Record], kib: int) -> list[str]:
    """The interleaved measurements, per load and era: each target's p50 (median over rounds),
    the added p50 ÷ the floor's in each round, and the ratio judged (`Summary.crossed_added`)."""
    rows = [
        "| load | era | direct p50 | floor p50 (added) | Switchyard p50 (added) | "
        "per round | added ÷ floor's |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for load in ("small", "large"):
        label = load_label(load, kib)
        recs = crossed_at(lines, load, 1)
        for rec in recs:
            if "failed" in rec:
                why = f"failed: {rec['failed'][:200]}"
            elif not crossed_clean(rec):
                why = f"cut short: {rec['calls']} calls"
            else:
                continue
            rows.append(f"| {label} | - | r{rec['round']} {why} |||||")
        for era, names in INTERLEAVED.items():
            added = added_medians(recs, names)
            if added is None:
                continue
            a, b = added
            here = [r for r in recs if measured(r, names)]
            d, f_, s = (med([r["p50_us"][t] for r in here]) for t in names)
            assert d is not None and f_ is not None and s is not None
            direct, floor, sw = names
            each = []
            for r in here:
                p50 = r["p50_us"]
                fa = p50[floor] - p50[direct]
                each.append(f"{(p50[sw] - p50[direct]) / fa:.2f}" if fa > 0 else "-")
            ratio = a / b if b > 0 else None
            verdict = (
                "n/a" if ratio is None
                else "ERRORS" if any(not crossed_clean(r) for r in recs)
                else "PASS" if round(ratio, 2) <= GOAL_ADDED_P50 else "MISS"
            )  # fmt: skip
            shown = "-" if ratio is None else f"{ratio:.2f}"
            rows.append(
                f"| {label} | {era} | {fmt_us(d)} | {fmt_us(f_)} ({fmt_us(b, True)}) | "
                f"{fmt_us(s)} ({fmt_us(a, True)}) | {', '.join(each)} | {shown} {verdict} "
                f"(goal ≤ {GOAL_ADDED_P50}) |"
            )
    return rows


def interleaved_cost_lines(lines: list[Record], kib: int) -> list[str]:
    """The interleaved measurements' CPU per call and RPS, per load, concurrency and era:
    each target's median over rounds, Switchyard ÷ the floor (CPU) and ÷ direct (RPS) in each
    round, and the ratios judged (median over rounds of each round's)."""
    rows = [
        "| load | c | era | floor CPU/call | Switchyard CPU/call | per round | CPU ÷ floor's "
        "| direct RPS | Switchyard RPS | RPS ÷ direct |",
        "|---|---:|---|---:|---:|---|---|---:|---:|---|",
    ]
    levels = sorted({int(r.get("concurrency", 1)) for r in lines})
    for load in ("small", "large"):
        label = load_label(load, kib)
        for c in levels:
            recs = crossed_at(lines, load, c)
            for era, (direct, floor, sw) in INTERLEAVED.items():
                cpu = crossed_paired(recs, "cpu_us", sw, floor)
                # RPS ÷ direct is a goal at c=32 only: at c=1 it is one over the latency.
                rps = crossed_paired(recs, "rps", sw, direct) if c > 1 else None
                if cpu is None and rps is None:
                    continue
                each = [f"{x:.2f}" for x in cpu.each] if cpu is not None else []
                dirty = " ERRORS" if any(not crossed_clean(r) for r in recs) else ""
                goal = f"{dirty} (goal ≤ {GOAL_CPU})"
                cpu_cells = (
                    ["-", "-", "-"]
                    if cpu is None
                    else [fmt_us(cpu.b), fmt_us(cpu.a), f"{cpu.ratio:.2f}{goal}"]
                )
                rps_cells = (
                    ["-", "-", "-"]
                    if rps is None
                    else [f"{rps.b:.0f}", f"{rps.a:.0f}", f"{rps.ratio:.2f}{dirty}"]
                )
                rows.append(
                    f"| {label} | {c} | {era} | {cpu_cells[0]} | {cpu_cells[1]} | "
                    f"{', '.join(each)} | {cpu_cells[2]} | {' | '.join(rps_cells)} |"
                )
    return rows


def audit_verify(args: argparse.Namespace, logs: Path, out: Path) -> None:
    """bench/audit_verify.py in a process of its own: write, then verify, N records."""
    argv = [sys.executable, str(BENCH / "audit_verify.py"), f"--records={args.audit_records}"]
    argv += [f"--dir={logs / 'audit-verify'}", f"--switchyard={args.switchyard}"]
    print(f"audit: writing and verifying {args.audit_records} records", file=sys.stderr)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, cwd=REPO)
        rec: Record = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        rec = {"type": "audit_verify", "failed": repr(e)[:600], "records": args.audit_records}
    with out.open("a") as f:
        f.write(json.dumps(rec) + "\n")


def rotated(targets: list[Target], rnd: int) -> list[Target]:
    """The target order of round `rnd`: rotated by one each round."""
    shift = (rnd - 1) % len(targets)
    return targets[shift:] + targets[:shift]


def progress(r: Record) -> None:
    head = f"r{r['round']} {r['load']:<5} c={r['concurrency']:<3} {r['target']:<18}"
    if "failed" in r:
        print(f"{head} FAILED: {r['failed']}", file=sys.stderr, flush=True)
        return
    keys = [k for k in ("proxy", "backend", "client") if f"cpu_{k}_us" in r]
    cpu = "  ".join(f"{k} {fmt_us(r[f'cpu_{k}_us'])}" for k in keys)
    line = f"{head} p50 {fmt_us(r['p50_us']):>9}  p99 {fmt_us(r['p99_us']):>9}  "
    line += f"{r['rps']:>6.0f} rps  CPU/call: {cpu}"
    if r["errors"]:
        line += f"  ERRORS {r['errors']}: {r['error_samples'][:1]}"
    if r.get("truncated"):
        line += "  TRUNCATED by --max-seconds"
    print(line, file=sys.stderr, flush=True)


# ---- summary ---------------------------------------------------------------------------


def fmt_us(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    sign = "-" if v < 0 else ("+" if signed else "")
    a = abs(v)
    return f"{sign}{a / 1000:.2f} ms" if a >= 1000 else f"{sign}{a:.0f} µs"


def med(values: list[Any]) -> float | None:
    xs = [x for x in values if x is not None]
    return float(statistics.median(xs)) if xs else None


def clean(r: Record) -> bool:
    return not r.get("failed") and not r["errors"] and not r.get("truncated")


def measured(rec: Record, names: tuple[str, ...]) -> bool:
    """An interleaved measurement that has a p50 for every one of `names`."""
    p50 = rec.get("p50_us") or {}
    return "failed" not in rec and all(p50.get(n) is not None for n in names)


def load_label(load: str, kib: int) -> str:
    return "16 B echo" if load == "small" else f"{kib} KiB"


def crossed_at(lines: Sequence[Record], load: str, concurrency: int) -> list[Record]:
    """The interleaved measurements (`interleaved`) of one load at one concurrency, one per
    round."""
    return [r for r in lines if r["load"] == load and r.get("concurrency", 1) == concurrency]


def both_measured(rec: Record, key: str, a: str, b: str) -> bool:
    """An interleaved measurement that ran and has `key` (cpu_us, rps) for `a` and `b`."""
    figures = rec.get(key) or {}
    return "failed" not in rec and bool(figures.get(a)) and bool(figures.get(b))


@dataclass(frozen=True)
class Paired:
    """`a` ÷ `b` over interleaved measurements (`crossed_paired`)."""

    ratio: float
    """The median of the ratios taken within each measurement."""
    a: float
    b: float
    """The medians of each target's own figure."""
    each: list[float]
    """Each measurement's ratio, in round order."""


def crossed_paired(recs: list[Record], key: str, a: str, b: str) -> Paired | None:
    """Over the measurements that have `key` (cpu_us, rps) for both `a` and `b`: a ÷ b taken
    within each (the same slices of the same minute), and its median; None where none has
    both."""
    done = [r for r in recs if both_measured(r, key, a, b)]
    each = [r[key][a] / r[key][b] for r in done]
    ratio = med(each)
    first, second = med([r[key][a] for r in done]), med([r[key][b] for r in done])
    if ratio is None or first is None or second is None:
        return None
    return Paired(ratio, first, second, each)


def added_medians(recs: list[Record], names: tuple[str, ...]) -> tuple[float, float] | None:
    """Switchyard's and the floor's added p50 over direct's (`names`: direct, floor,
    Switchyard), each the median over the measurements that have all three; None if none has."""
    direct, floor, sw = names
    done = [r for r in recs if measured(r, names)]
    a = med([r["p50_us"][sw] - r["p50_us"][direct] for r in done])
    b = med([r["p50_us"][floor] - r["p50_us"][direct] for r in done])
    return None if a is None or b is None else (a, b)


def crossed_clean(rec: Record) -> bool:
    """An interleaved measurement that ran, made every call it was asked for, and had no call
    fail (a failed call is counted and checked like the rounds' `errors`)."""
    return (
        "failed" not in rec
        and rec.get("calls", 0) >= rec.get("requested", 0)
        and not any(rec.get("errors", {}).values())
    )


def added_p50(run: Record, direct: Record) -> float | None:
    """p50 through a proxy minus p50 direct, both from the same round."""
    if run.get("p50_us") is None or direct.get("p50_us") is None:
        return None
    return float(run["p50_us"] - direct["p50_us"])


def _cpu_ratio(run: Record, base: Record) -> float | None:
    """The gateway process's CPU per call of `run` over `base`'s (same round)."""
    a, b = run.get("cpu_proxy_us"), base.get("cpu_proxy_us")
    return float(a) / float(b) if a is not None and b else None


def p50_ratio(run: Record, base: Record) -> float | None:
    if run.get("p50_us") is None or not base.get("p50_us"):
        return None
    return float(run["p50_us"] / base["p50_us"])


def rps_ratio(run: Record, direct: Record) -> float | None:
    return float(run["rps"] / direct["rps"]) if direct.get("rps") else None


LoadKey = tuple[str, int]  # ("small" | "large", concurrency)


class Summary:
    def __init__(
        self,
        records: list[Record],
        targets: list[str],
        kib: int,
        crossed: Sequence[Record] = (),
    ) -> None:
        self.targets = targets
        self.kib = kib
        self.cells: dict[tuple[str, str, int], list[Record]] = {}
        for r in records:
            self.cells.setdefault((r["target"], r["load"], r["concurrency"]), []).append(r)
        self.loads = sorted({(k[1], k[2]) for k in self.cells}, key=lambda k: (k[0] != "small", k))
        self.crossed = list(crossed)
        """The interleaved c=1 measurements (`interleaved`), one per load and round."""

    def crossed_added(self, sw: str, load: LoadKey) -> tuple[float, float, bool] | None:
        """Switchyard's and the floor's added p50 at c=1 over `sw`'s era baselines, each the
        median over rounds of the interleaved measurements' (direct's p50 taken in the same
        slices), and whether every one of them completed cleanly; None where none ran."""
        era = next((names for names in INTERLEAVED.values() if names[2] == sw), None)
        if era is None or load[1] != 1:
            return None
        recs = crossed_at(self.crossed, load[0], 1)
        if not recs:
            return None
        added = added_medians(recs, era)
        if added is None:
            return 0.0, 0.0, False  # every one failed: ERRORS, not the rounds' figure
        return *added, all(crossed_clean(r) for r in recs)

    def crossed_ratio(
        self, key: str, a: str, b: str, load: LoadKey
    ) -> tuple[float | None, float | None, float | None, bool] | None:
        """`a` ÷ `b` in `key` (cpu_us, rps) from the interleaved measurements of `load`
        (`crossed_paired`) and whether every one completed cleanly; None where none ran, and
        no figures (and not clean) where none measured both."""
        recs = crossed_at(self.crossed, *load)
        if not recs:
            return None
        found = crossed_paired(recs, key, a, b)
        if found is None:
            return None, None, None, False
        return found.ratio, found.a, found.b, all(crossed_clean(r) for r in recs)

    def label(self, load: LoadKey) -> str:
        return load_label(load[0], self.kib)

    def runs(self, target: str, load: LoadKey) -> list[Record]:
        return [r for r in self.cells.get((target, *load), []) if not r.get("failed")]

    def median(self, target: str, load: LoadKey, key: str) -> float | None:
        return med([r.get(key) for r in self.runs(target, load)])

    def paired(
        self, a: str, b: str, load: LoadKey, fn: Callable[[Record, Record], float | None]
    ) -> float | None:
        """Median over rounds of fn(run of a, run of b from the same round)."""
        bs = {r["round"]: r for r in self.runs(b, load)}
        return med([fn(r, bs[r["round"]]) for r in self.runs(a, load) if r["round"] in bs])

    def table(self) -> list[str]:
        lines = [
            "| target | load | c | p50 | p99 | RPS | proxy CPU/call | backend CPU/call "
            "| client CPU/call | calls ok | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for load in self.loads:
            for t in self.targets:
                every = self.cells.get((t, *load), [])
                if not every:
                    continue
                errs = sum(r["errors"] for r in every)
                notes = [f"{sum(1 for r in every if r.get('failed'))} runs failed"]
                notes = notes * any(r.get("failed") for r in every)
                notes += ["truncated"] * any(r.get("truncated") for r in every)
                rps = self.median(t, load, "rps")
                cells = [
                    t,
                    self.label(load),
                    str(load[1]),
                    fmt_us(self.median(t, load, "p50_us")),
                    fmt_us(self.median(t, load, "p99_us")),
                    "-" if rps is None else f"{rps:.0f}",
                    *(fmt_us(self.median(t, load, f"cpu_{k}_us")) for k in ("proxy", "backend")),
                    fmt_us(self.median(t, load, "cpu_client_us")),
                    str(sum(r["ok"] for r in every)),
                    " ".join([f"**{errs}**" if errs else "0", *notes]),
                ]
                lines.append("| " + " | ".join(cells) + " |")
        return lines

    def baseline(self, kind: str, target: str) -> str:
        modern = f"{kind}-modern"
        return modern if TARGETS[target].era == "modern" and modern in self.targets else kind

    def ratios(self) -> tuple[list[str], list[Record]]:
        sws = [t for t in SWITCHYARD if t in self.targets]
        loads = [k for k in self.loads if any(self.cells.get((t, *k)) for t in sws)]
        rows = [("CPU/call ÷ floor's", "cpu", f"≤ {GOAL_CPU}", load) for load in loads]
        rows += [
            ("added p50 ÷ floor's", "p50", f"≤ {GOAL_ADDED_P50}", load)
            for load in loads
            if load[1] == 1
        ]
        rows += [("RPS ÷ direct", "rps", f"≥ {GOAL_RPS}", load) for load in loads if load[1] > 1]
        lines = [
            "| ratio | load | c | goal | " + " | ".join(sws) + " |",
            "|---|---|---:|---|" + "---|" * len(sws),
        ]
        found: list[Record] = []
        for title, kind, goal, load in rows:
            recs = [self.ratio(kind, sw, load) for sw in sws]
            found += recs
            cells = [title, self.label(load), str(load[1]), goal, *(r["cell"] for r in recs)]
            lines.append("| " + " | ".join(cells) + " |")
        return lines, found

    def stdio_ratios(self) -> tuple[list[str], list[Record]]:
        """stdio-modern p50 ÷ stdio-legacy p50, paired within each round, then medianed."""
        lines = [
            "| load | c | stdio-legacy p50 | stdio-modern p50 | modern ÷ legacy | goal |",
            "|---|---:|---:|---:|---|---|",
        ]
        found: list[Record] = []
        for load in [k for k in self.loads if self.runs("stdio-modern", k)]:
            value = self.paired("stdio-modern", "stdio-legacy", load, p50_ratio)
            dirty = any(not clean(r) for t in STDIO_TARGETS for r in self.cells.get((t, *load), []))
            if dirty:
                verdict = "ERRORS"
            elif value is None:
                verdict = "n/a"
            else:
                value = round(value, 2)
                verdict = "PASS" if value <= GOAL_STDIO_P50 else "MISS"
            legacy = fmt_us(self.median("stdio-legacy", load, "p50_us"))
            modern = fmt_us(self.median("stdio-modern", load, "p50_us"))
            cell = f"{'-' if value is None else f'{value:.2f}'} {verdict}"
            lines.append(
                f"| {self.label(load)} | {load[1]} | {legacy} | {modern} | {cell} "
                f"| ≤ {GOAL_STDIO_P50} |"
            )
            found.append(
                {
                    "type": "ratio",
                    "kind": "stdio_p50",
                    "target": "stdio-modern",
                    "load": load[0],
                    "concurrency": load[1],
                    "value": value,
                    "verdict": verdict,
                    "baseline": "stdio-legacy",
                    "coarse": False,
                    "cell": cell,
                }
            )
        return lines, found

    def limit_costs(self) -> list[str]:
        base = "switchyard-legacy"
        present = [t for t in LIMIT_TARGETS if t in self.targets]
        lines = [
            "| load | c | "
            + " | ".join(f"{t} CPU/call (added)" for t in present)
            + " | "
            + " | ".join(f"{t} p50 (added)" for t in present)
            + " |",
            "|---|---:|" + "---:|" * (2 * len(present)),
        ]
        for load in [k for k in self.loads if self.runs(base, k)]:
            cpu, p50 = [], []
            for t in present:
                a = self.median(t, load, "cpu_proxy_us")
                b = self.median(base, load, "cpu_proxy_us")
                added = None if a is None or b is None else a - b
                cpu.append(f"{fmt_us(a)} ({fmt_us(added, True)})")
                added_p = self.paired(t, base, load, added_p50)
                p50.append(f"{fmt_us(self.median(t, load, 'p50_us'))} ({fmt_us(added_p, True)})")
            lines.append(f"| {self.label(load)} | {load[1]} | " + " | ".join(cpu + p50) + " |")
        return lines

    def all_on_costs(self) -> list[str]:
        """Everything on against everything off (same era) and against the floor."""
        pairs = [
            (on, off) for on, off in ALL_ON.items() if on in self.targets and off in self.targets
        ]
        if not pairs:
            return []
        lines = [
            "| load | c | era | CPU/call off | CPU/call on | on ÷ off | on ÷ floor's "
            "| p50 off | p50 on |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for load in self.loads:
            for on, off in pairs:
                a = self.median(on, load, "cpu_proxy_us")
                b = self.median(off, load, "cpu_proxy_us")
                f = self.median(self.baseline("floor", off), load, "cpu_proxy_us")
                if a is None or b is None:
                    continue
                vs_off = f"{a / b:.2f}" if b else "-"
                vs_floor = f"{a / f:.2f}" if f else "-"
                p_off = fmt_us(self.median(off, load, "p50_us"))
                p_on = fmt_us(self.median(on, load, "p50_us"))
                lines.append(
                    f"| {self.label(load)} | {load[1]} | {TARGETS[on].era} | {fmt_us(b)} "
                    f"| {fmt_us(a)} | {vs_off} | {vs_floor} | {p_off} | {p_on} |"
                )
        return lines

    def cost_ratios(
        self, pairs_map: dict[str, str], kind: str, goal: float | None
    ) -> tuple[list[str], list[Record]]:
        """A feature on ÷ off, CPU per call of the gateway process, per load and era (audit,
        metrics, tracing); `goal` None: reported without a verdict."""
        pairs = [
            (on, off) for on, off in pairs_map.items() if on in self.targets and off in self.targets
        ]
        if not pairs:
            return [], []
        lines = [
            "| load | c | era | off | on | on ÷ off | goal |",
            "|---|---:|---|---:|---:|---|---|",
        ]
        found: list[Record] = []
        for load in self.loads:
            for on, off in pairs:
                a = self.median(on, load, "cpu_proxy_us")
                b = self.median(off, load, "cpu_proxy_us")
                if a is None or b is None:
                    continue
                dirty = any(not clean(r) for t in (on, off) for r in self.cells.get((t, *load), []))
                # Paired within each round, then medianed: the on and off runs of one round
                # are back to back, so a round disturbed by something else on the machine moves
                # both, and one outlying round does not move the verdict.
                ratio = self.paired(on, off, load, _cpu_ratio)
                value = round(ratio, 2) if ratio is not None else None
                verdict = (
                    "ERRORS" if dirty else "n/a" if value is None else "info" if goal is None
                    else "PASS" if value <= goal else "MISS"
                )  # fmt: skip
                cell = f"{'-' if value is None else f'{value:.2f}'} {verdict}"
                lines.append(
                    f"| {self.label(load)} | {load[1]} | {TARGETS[on].era} | {fmt_us(b)} "
                    f"| {fmt_us(a)} | {cell} | {'-' if goal is None else f'≤ {goal}'} |"
                )
                found.append(
                    {
                        "type": "ratio",
                        "kind": kind,
                        "target": on,
                        "load": load[0],
                        "concurrency": load[1],
                        "value": value,
                        "verdict": verdict,
                        "baseline": off,
                        "coarse": False,
                        "cell": cell,
                    }
                )
        return lines, found

    def ratio(self, kind: str, sw: str, load: LoadKey) -> Record:
        floor, direct = self.baseline("floor", sw), self.baseline("direct", sw)
        value: float | None = None
        detail = ""
        coarse = False
        crossed_dirty = False
        inputs: tuple[str, ...]
        if kind == "cpu":
            inputs = (sw, floor)
            # Paired within each round, then medianed, as the RPS and feature-cost ratios are:
            # this machine's speed drifts from round to round (the floor's own CPU per call has
            # moved by half between the rounds of one run), and a ratio of medians can divide
            # a figure from a slow round by one from a fast round. The cell still shows both
            # medians.
            value = self.paired(sw, floor, load, _cpu_ratio)
            a = self.median(sw, load, "cpu_proxy_us")
            b = self.median(floor, load, "cpu_proxy_us")
            if a is not None and b:
                detail = f"{fmt_us(a)} vs {fmt_us(b)}"
            ticks = [r.get("cpu_proxy_ticks") or 0 for t in inputs for r in self.runs(t, load)]
            coarse = bool(ticks) and min(ticks) < COARSE_TICKS
            crossed_cpu = self.crossed_ratio("cpu_us", sw, floor, load)
            if crossed_cpu is not None:
                # Judged on the interleaved measurements (nanoseconds of CPU over each target's
                # own slices, `schedstat`): runs of their own, seconds apart, measure the
                # machine's drift as much as the targets (bench/README.md).
                own = f"; runs of their own {value:.2f}" if value is not None else ""
                value, a, b, crossed_ok = crossed_cpu
                crossed_dirty = not crossed_ok
                coarse = False
                detail = f"interleaved {fmt_us(a)} vs {fmt_us(b)}{own}"
        elif kind == "p50":
            inputs = (sw, floor, direct)
            a = self.paired(sw, direct, load, added_p50)
            b = self.paired(floor, direct, load, added_p50)
            if a is not None and b is not None:
                value = a / b if b > 0 else None  # a floor that adds nothing: no ratio
                detail = f"{fmt_us(a, True)} vs {fmt_us(b, True)}"
            crossed = self.crossed_added(sw, load)
            if crossed is not None:
                # Judged on the interleaved measurements: runs of their own, a minute apart,
                # measure the machine's drift as much as the targets (bench/README.md).
                own = f"; runs of their own {value:.2f}" if value is not None else ""
                a, b, crossed_ok = crossed
                crossed_dirty = not crossed_ok
                value = a / b if b > 0 else None
                detail = f"interleaved {fmt_us(a, True)} vs {fmt_us(b, True)}{own}"
        else:
            inputs = (sw, direct)
            value = self.paired(sw, direct, load, rps_ratio)
            a, b = self.median(sw, load, "rps"), self.median(direct, load, "rps")
            floor_ratio = self.paired(floor, direct, load, rps_ratio)
            if a is not None and b is not None:
                detail = f"{a:.0f} vs {b:.0f}"
            if floor_ratio is not None:
                detail += f"; floor {floor_ratio:.2f}"  # what a bare hop keeps, same rounds
            crossed_rps = self.crossed_ratio("rps", sw, direct, load)
            if crossed_rps is not None:
                own = f"; runs of their own {value:.2f}" if value is not None else ""
                value, a, b, crossed_ok = crossed_rps
                crossed_dirty = not crossed_ok
                floor_crossed = self.crossed_ratio("rps", floor, direct, load)
                kept = floor_crossed[0] if floor_crossed is not None else None
                detail = f"interleaved {a or 0:.0f} vs {b or 0:.0f}"
                detail += f"; floor {kept:.2f}" if kept is not None else ""
                detail += own
        if crossed_dirty or any(
            not clean(r) for t in inputs for r in self.cells.get((t, *load), [])
        ):
            verdict = "ERRORS"
        elif value is None:
            verdict = "n/a"
        else:
            value = round(value, 2)  # judged as shown
            met = value >= GOAL_RPS if kind == "rps" else value <= GOAL[kind]
            verdict = "PASS" if met else "MISS"
        cell = f"{'-' if value is None else f'{value:.2f}'} {verdict}"
        cell += f" ({detail}{', coarse' * coarse})" if detail else ""
        return {
            "type": "ratio",
            "kind": kind,
            "target": sw,
            "load": load[0],
            "concurrency": load[1],
            "value": value,
            "verdict": verdict,
            "baseline": direct if kind == "rps" else floor,
            "coarse": coarse,
            "cell": cell,
        }


# ---- main ------------------------------------------------------------------------------


def audit_verify_line(rec: Record) -> str:
    if rec.get("failed"):
        return f"\naudit verify of {rec['records']} records: FAILED {rec['failed']}"
    per_million = rec["verify_s"] * 1_000_000 / rec["records"]
    verdict = "PASS" if rec["verified"] and per_million < GOAL_AUDIT_VERIFY_S else "MISS"
    if not rec["verified"]:
        verdict = f"NOT VERIFIED {rec.get('verify_output')}"
    return (
        f"\naudit: {rec['records']} records written in {rec['write_s']:.1f} s "
        f"({rec['write_rps']}/s through the writer), verified in {rec['verify_s']:.1f} s "
        f"({rec['verify_rps']}/s, peak RSS {rec['verify_peak_rss_mib']} MiB): "
        f"{per_million:.1f} s per million, goal < {GOAL_AUDIT_VERIFY_S:.0f} s: {verdict}"
    )


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("switchyard", "mcp", "aiohttp", "uvicorn", "uvloop", "httptools", "msgspec"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(REPO), "describe", "--always", "--dirty"]
        out["git"] = subprocess.run(git, capture_output=True, text=True, timeout=10).stdout.strip()
    return out


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # treated like Ctrl-C: stop the services, report what was measured


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    run_id = time.strftime("%Y%m%dT%H%M%S")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{run_id}.jsonl"
    logs = args.out_dir / f"{run_id}.logs"
    logs.mkdir()
    meta: Record = {
        "type": "meta",
        "run_id": run_id,
        **{k: v for k, v in vars(args).items() if k not in ("out_dir", "switchyard")},
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
        "versions": versions(),
    }
    out.write_text(json.dumps(meta) + "\n")
    names = [*args.targets, *args.stdio_targets]
    print(f"run {run_id}: {', '.join(names)}; {args.rounds} round(s)", file=sys.stderr)
    status = 0
    try:
        with services(args, logs) as svcs:
            run_all(args, svcs, out, run_id)
        if args.audit_records > 0:
            audit_verify(args, logs, out)
    except SetupError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        for note in getattr(e, "__notes__", []):
            print(note, file=sys.stderr)
        if any(t in args.targets for t in SWITCHYARD):
            print(
                "(to measure without Switchyard: --targets direct,floor --stdio off)",
                file=sys.stderr,
            )
        status = 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        status = 130
    lines = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    records = [r for r in lines if r.get("type") == "run"]
    verified = [r for r in lines if r.get("type") == "audit_verify"]
    crossed = [r for r in lines if r.get("type") == "interleaved"]
    if records:
        report(records, crossed, args, meta, out)
    if crossed:
        print(
            f"\nc=1 latency measured interleaved, after each round ({args.interleaved_calls} "
            "calls per target in slices of 50, in turn; bench/interleaved.py), medians over "
            "rounds:\n"
        )
        print("\n".join(interleaved_lines(crossed, args.kib)))
        print(
            "\nCPU per call and RPS measured interleaved, after each round (c=1 as above; "
            f"over c=1 {args.interleaved_load_calls} calls per target in slices of {LOAD_SLICE}, "
            "in turn), medians over rounds; CPU is the proxy process's, every thread, over its "
            "own slices:\n"
        )
        print("\n".join(interleaved_cost_lines(crossed, args.kib)))
    if status == 0 and args.redaction_calls > 0:
        in_process("redaction.py", args.redaction_calls, "redaction", out, run_id)
    if status == 0 and args.approvals_calls > 0:
        in_process("approvals.py", args.approvals_calls, "approvals", out, run_id)
    if status == 0 and args.cache_calls > 0:
        in_process("caching.py", args.cache_calls, "result cache", out, run_id)
    if status == 0 and args.instructions_calls > 0:
        in_process("instructions.py", args.instructions_calls, "instructions", out, run_id, 1800)
    for rec in verified:
        print(audit_verify_line(rec))
    if status == 0 and any(not clean(r) for r in records):
        status = 1
    if status == 0 and any(not crossed_clean(r) for r in crossed):
        status = 1
    if status == 0 and any(not r.get("verified") for r in verified):
        status = 1
    if status == 0:
        shutil.rmtree(logs)  # process logs are kept only when something went wrong
    else:
        print(f"process logs: {logs}", file=sys.stderr)
    return status


def in_process(
    script: str, calls: int, label: str, out: Path, run_id: str, timeout_s: float = 600
) -> None:
    """One of the measurements of their own (bench/redaction.py, approvals.py, caching.py,
    instructions.py) in a process of its own: its JSON record appended to the results, its
    line printed. Exit 1 is a missed goal, still a measurement."""
    argv = [sys.executable, str(BENCH / script), f"--calls={calls}", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        print(f"\n{label}: measurement failed: {done.stderr.strip()[-500:]}")
        return
    rec = json.loads(done.stdout)
    with out.open("a") as f:
        f.write(json.dumps({"run_id": run_id, **rec}) + "\n")
    print("\n" + rec["line"])


def report(
    records: list[Record],
    crossed: list[Record],
    args: argparse.Namespace,
    meta: Record,
    out: Path,
) -> None:
    summary = Summary(records, [*args.targets, *args.stdio_targets], args.kib, crossed)
    v = meta["versions"]
    rounds = len({r["round"] for r in records})
    print(f"\n## Switchyard bench {meta['run_id']}\n")
    print(
        f"{rounds} round(s), medians over rounds. Per run: {args.warmup} warm-up calls, then "
        + (
            f"{args.small_calls} (16 B echo) or {args.large_calls} ({args.kib} KiB) "
            if args.targets
            else ""
        )
        + ("and " if args.targets and args.stdio_targets else "")
        + (f"{args.stdio_calls} (stdio load) " if args.stdio_targets else "")
        + f"measured calls, capped at {args.max_seconds:.0f} s. {meta['cpus']} CPUs; load average "
        f"{meta['loadavg_start']:.2f} at start, {os.getloadavg()[0]:.2f} at end. "
        f"switchyard {v['switchyard']} (git {v.get('git') or '-'}), mcp {v['mcp']}, "
        f"aiohttp {v['aiohttp']}, uvicorn {v['uvicorn']}, Python {v['python']}."
        + (f" Switchyard extra args: {args.switchyard_args}." if args.switchyard_args else "")
        + "\n"
    )
    print("\n".join(summary.table()))
    if any(t in args.targets for t in SWITCHYARD):
        lines, ratios = summary.ratios()
        print(
            "\nSwitchyard ratios (paired within each round, then medianed; judged on the "
            "interleaved measurements where they ran, the rounds' runs of their own beside):\n"
        )
        print("\n".join(lines))
        with out.open("a") as f:
            for rec in ratios:
                f.write(json.dumps({"run_id": meta["run_id"], **rec}) + "\n")
        verdicts = [r["verdict"] for r in ratios]
        tally = [f"{verdicts.count(k)} {k}" for k in ("MISS", "ERRORS", "n/a") if k in verdicts]
        print(f"\ngoals met: {verdicts.count('PASS')}/{len(verdicts)}", *tally, sep=", ")
        if any(r["coarse"] for r in ratios):
            print(f"(coarse: a CPU window under {COARSE_TICKS} clock ticks; raise the call counts)")
    if any(t in args.targets for t in LIMIT_TARGETS):
        print("\nRate limits: what the check adds to switchyard-legacy (paired per round):\n")
        print("\n".join(summary.limit_costs()))
    if args.stdio_targets:
        print(f"\nStdio backend ({args.stdio_isolation}): 2026-07-28 calls vs legacy sessions:\n")
        lines, ratios = summary.stdio_ratios()
        print("\n".join(lines))
        with out.open("a") as f:
            for rec in ratios:
                f.write(json.dumps({"run_id": meta["run_id"], **rec}) + "\n")
    audit_lines, audit_ratios = summary.cost_ratios(AUDIT, "audit_cpu", GOAL_AUDIT_CPU)
    if audit_lines:
        print("\nAudit trail on (SQLite) vs off: CPU per call, same era, same rounds:\n")
        print("\n".join(audit_lines))
        with out.open("a") as f:
            for rec in audit_ratios:
                f.write(json.dumps({"run_id": meta["run_id"], **rec}) + "\n")
    all_lines = summary.all_on_costs()
    if all_lines:
        print(
            "\nEvery feature on (audit, a rate-limit rule, redaction with every built-in "
            "detector, pinning) vs none:\n"
        )
        print("\n".join(all_lines))
    for title, pairs_map, kind, goal in (
        ("Metrics on (the default) vs off", METRICS, "metrics_cpu", GOAL_METRICS_CPU),
        ("Tracing on (every request sampled, OTLP export) vs off", TRACING, "tracing_cpu", None),
    ):
        cost_lines, cost_records = summary.cost_ratios(pairs_map, kind, goal)
        if cost_lines:
            print(f"\n{title}: CPU per call, same era, same rounds:\n")
            print("\n".join(cost_lines))
            with out.open("a") as f:
                for rec in cost_records:
                    f.write(json.dumps({"run_id": meta["run_id"], **rec}) + "\n")
    for r in [r for r in records if not clean(r)][:10]:
        why = r.get("failed") or ("truncated by --max-seconds" * bool(r.get("truncated")))
        print(f"- r{r['round']} {r['target']} {r['load']} c={r['concurrency']}: "
              f"{r['errors']} errors {why} {r.get('error_samples', [])[:2]}")  # fmt: skip
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    sys.exit(main())
