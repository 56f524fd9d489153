"""What a feature costs per call, in instructions: noise-free where CPU time is not.

CPU per call on a shared two-core machine moves by several percent from one run to the
next, more than the few percent a feature may cost. Instructions retired do not: valgrind's
callgrind counts them exactly, whatever else the machine is doing. Each process here runs
under callgrind with instrumentation off until its warm-up is done; every load is then
counted alone (`callgrind_control -i on`, the load, a dump), so start-up and the other loads
stay out of it. The loads are the bench's at concurrency 1 (a feature's work per call does
not change with concurrency): 16 B echo and 64 KiB results, from a legacy-session client and
from a 2026-07-28 client.

Counted: user-space instructions of the proxy process, all threads. Not counted: time in the
kernel (a proxy's socket calls), cache misses, waiting. So this is a feature's own cost, not
what a call costs end to end: read it beside the CPU figures of bench/run.py, which include
the kernel.

The floor (bench/floor.py) is counted the same way, as a third process: Switchyard ÷ floor
in instructions is the noise-free reading of the CPU goal of bench/run.py (Switchyard at most
1.3 times the floor per call), user space only. The floor forwards both eras byte for byte.

Not the audit trail. Work that depends on elapsed time is distorted here, because a process under
callgrind runs some fifty times slower: the audit writer's 50 ms batches, which at full speed
carry dozens of records in one SQLite transaction, carry one each, so the audit trail would
look several times dearer than it is. Its cost is the CPU figure of bench/run.py.

  .venv/bin/python bench/instructions.py [--calls N] [--json]
  (bench/run.py runs it with --instructions-calls N, after the in-process measurements)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from run import (  # noqa: E402  (bench/ is not a package)
    SWITCHYARD_CONFIG,
    SWITCHYARD_NOMETRICS_CONFIG,
    free_port,
)

GOAL = 1.05
LOADS = (("legacy", "echo"), ("modern", "echo"), ("legacy", "payload"), ("modern", "payload"))
CONFIGS: dict[str, str | None] = {
    "off": SWITCHYARD_NOMETRICS_CONFIG,
    "on": SWITCHYARD_CONFIG,
    "floor": None,
}
FLOOR_GOAL = 1.3
WARMUP = 30


@dataclass
class Counted:
    name: str
    per_call: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: int = 0
    samples: list[object] = field(default_factory=list)


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as exc:
            if getattr(exc, "code", None) is not None:
                return  # any HTTP answer: the server is up
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def loadgen(url: str, era: str, tool: str, calls: int) -> dict[str, object]:
    argv = [sys.executable, str(BENCH / "loadgen.py"), f"--url={url}", f"--era={era}"]
    argv += ["-c", "1", "-n", str(calls), "--warmup", "0", "--max-seconds", "900"]
    argv += ["--timeout", "120"]
    if tool == "payload":
        argv += ["--tool", "payload", "--kib", "64"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1000, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def total_instructions(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def count(name: str, config: str | None, backend_url: str, calls: int, work: Path) -> Counted:
    """One proxy process under callgrind, every load counted on its own: Switchyard with
    `config`, or the floor when `config` is None."""
    workdir = work / name
    workdir.mkdir()
    port = free_port()
    out = workdir / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    if config is None:
        argv += [sys.executable, str(BENCH / "floor.py"), "--backend", backend_url]
        argv += ["--port", str(port)]
        ready = f"http://127.0.0.1:{port}/mcp"
    else:
        (workdir / "switchyard.yaml").write_text(config.format(url=backend_url))
        switchyard = REPO / ".venv" / "bin" / "switchyard"
        argv += [str(switchyard), "serve", "--config", "switchyard.yaml", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--log-level", "warning"]
        ready = f"http://127.0.0.1:{port}/readyz"
    log = (workdir / "proxy.log").open("w")
    proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    counted = Counted(name)
    try:
        wait_http(ready, 300)
        url = f"http://127.0.0.1:{port}/mcp"
        for era, tool in LOADS:
            loadgen(url, era, tool, WARMUP)
            control = ["callgrind_control"]
            subprocess.run([*control, "-i", "on", str(proc.pid)], capture_output=True, check=True)
            result = loadgen(url, era, tool, calls)
            dump = ["-d", f"{era}-{tool}"]
            subprocess.run([*control, *dump, str(proc.pid)], capture_output=True, check=True)
            subprocess.run([*control, "-i", "off", str(proc.pid)], capture_output=True, check=True)
            counted.errors += int(result.get("errors", 0))  # type: ignore[call-overload]
            counted.samples += list(result.get("error_samples") or [])  # type: ignore[call-overload]
            dumps = sorted(workdir.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
            ok = int(result.get("ok", 0))  # type: ignore[call-overload]
            counted.per_call[(era, tool)] = total_instructions(dumps[-1]) // max(ok, 1)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return counted


def measure(calls: int) -> dict[str, object]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return {"type": "instructions", "line": "instructions: valgrind is not installed"}
    with tempfile.TemporaryDirectory(prefix="switchyard-instructions-") as tmp:
        work = Path(tmp)
        port = free_port()
        backend = subprocess.Popen(
            [sys.executable, str(BENCH / "backend.py"), f"--port={port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/mcp", 60)
            url = f"http://127.0.0.1:{port}/mcp"
            # All at once: callgrind runs each on one core.
            with ThreadPoolExecutor(max_workers=len(CONFIGS)) as pool:
                futures = {
                    name: pool.submit(count, name, config, url, calls, work)
                    for name, config in CONFIGS.items()
                }
                counted = {name: f.result() for name, f in futures.items()}
        finally:
            backend.terminate()
            backend.wait(timeout=30)
    return summarize(counted, calls)


def _compared(
    counted: dict[str, Counted], base: str, label: str, goal: float, digits: int
) -> tuple[list[str], list[dict[str, object]]]:
    """Table rows and ratios of the default Switchyard (`on`) against `base`, per load."""
    rows: list[str] = []
    ratios: list[dict[str, object]] = []
    for load in LOADS:
        below, on = counted[base].per_call[load], counted["on"].per_call[load]
        ratio = on / below
        ratios.append({"load": "-".join(load), label: round(ratio, 4)})
        size = "16 B" if load[1] == "echo" else "64 KiB"
        verdict = "PASS" if ratio <= goal else "MISS"
        rows.append(f"| {load[0]} {size} | {below:,} | {on:,} | {ratio:.{digits}f} {verdict} |")
    return rows, ratios


def summarize(counted: dict[str, Counted], calls: int) -> dict[str, object]:
    metric_rows, ratios = _compared(counted, "off", "metrics", GOAL, 3)
    floor_rows, floor_ratios = _compared(counted, "floor", "floor", FLOOR_GOAL, 2)
    errors = sum(c.errors for c in counted.values())
    lines = [
        f"Metrics: instructions per call (callgrind, user space, {calls} calls per load, c=1):",
        "",
        "| load | metrics off | metrics on (the default) | on ÷ off |",
        "|---|---|---|---|",
        *metric_rows,
        "",
        f"goal: metrics on ÷ off ≤ {GOAL}"
        + (f"; {errors} calls failed (figures unreliable)" if errors else ""),
        "",
        "Switchyard (the default config) vs the floor: instructions per call, user space, c=1:",
        "",
        "| load | floor | switchyard | switchyard ÷ floor |",
        "|---|---|---|---|",
        *floor_rows,
        "",
        f"goal (CPU per call, user space only): switchyard ÷ floor ≤ {FLOOR_GOAL}",
    ]
    return {
        "type": "instructions",
        "calls": calls,
        "per_call": {
            n: {"-".join(k): v for k, v in c.per_call.items()} for n, c in counted.items()
        },
        "ratios": ratios,
        "floor_ratios": floor_ratios,
        "errors": errors,
        "error_samples": [s for c in counted.values() for s in c.samples][:5],
        "line": "\n".join(lines),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=200, help="measured calls per load")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    rec = measure(args.calls)
    print(json.dumps(rec) if args.json else rec["line"])
    ratios = rec.get("ratios") or []
    missed = any(r["metrics"] > GOAL for r in ratios)  # type: ignore[attr-defined,index]
    floor_ratios = rec.get("floor_ratios") or []
    missed = missed or any(r["floor"] > FLOOR_GOAL for r in floor_ratios)  # type: ignore[attr-defined,index]
    return 1 if missed or rec.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
