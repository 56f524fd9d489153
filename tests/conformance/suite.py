"""Run the MCP conformance suite (tests/node, @modelcontextprotocol/conformance 0.1.16) against
a server URL and read its per-check results; compare two runs; the expected-failures file.

Also a small CLI, for looking at one server by hand:

    .venv/bin/python -m tests.conformance.suite URL [--spec-version V] [--against URL2]

prints every check (scenario, check id, status, error) of URL, and with ``--against`` the
checks whose status differs from URL2's (URL2 being, say, the same server reached directly).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import NODE_DIR

NODE = NODE_DIR / "node_modules" / ".bin" / "node"
LOOPBACK_ONLY = NODE_DIR / "loopback-only.cjs"  # absolute: `--require` needs ./ or /
CONFORMANCE = (
    NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
)
SPEC_VERSIONS = ("2025-11-25", "2025-06-18")
# The suite's "pending" server scenarios (0.1.16, src/scenarios/index.ts): listed by
# `conformance list` but left out of the default ("active") suite.
PENDING = frozenset({"json-schema-2020-12", "server-sse-polling"})
SCENARIO_TIMEOUT_S = 75.0  # one scenario run on its own (the suite's client waits 60 s a request)
HERE = Path(__file__).resolve().parent
EXPECTED_FAILURES = HERE / "expected-failures.txt"

OK_STATUSES = frozenset({"SUCCESS", "INFO"})  # INFO: informational, never a failure
BAD_STATUSES = frozenset({"FAILURE", "WARNING"})
_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d\d-\d\dT[\d-]+Z$")
_RUNNING = re.compile(r"^=== Running scenario: (?P<scenario>\S+) ===$", re.M)
_ACTIVE_COUNT = re.compile(r"^Running active suite \((?P<n>\d+) scenarios\)", re.M)


@dataclass(frozen=True)
class Check:
    scenario: str
    id: str  # the suite's check id; `#2`, `#3`... appended when a scenario repeats an id
    status: str  # SUCCESS | FAILURE | WARNING | INFO
    error: str = ""
    # The check's recorded tool result is the server saying the tool does not exist (as an
    # `isError` result): the check passed without the scenario's tool, see `regressions`.
    tool_missing: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.scenario, self.id)

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


@dataclass
class Run:
    """One server, one spec version: every check of every active scenario."""

    url: str
    spec_version: str
    scenarios: list[str]
    checks: dict[tuple[str, str], Check] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # timeouts, scenarios that did not run

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks.values() if c.status == status)

    @property
    def totals(self) -> str:
        c = Counter(check.status for check in self.checks.values())
        return (
            f"{c['SUCCESS']} passed, {c['FAILURE']} failed, {c['WARNING']} warnings"
            f" ({len(self.checks)} checks, {self.seconds:.1f} s)"
        )

    def failing(self) -> list[Check]:
        return [c for c in self.checks.values() if not c.ok]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}


def _node(*args: str) -> list[str]:
    return [str(NODE), "--require", str(LOOPBACK_ONLY), str(CONFORMANCE), *args]


def active_scenarios(spec_version: str) -> list[str]:
    """The active server scenarios for `spec_version`, in the suite's order."""
    done = subprocess.run(
        _node("list", "--server", "--spec-version", spec_version),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=True,
    )
    names = re.findall(r"^\s+- (\S+)", done.stdout, re.M)
    return [n for n in names if n not in PENDING]


def _read_results(out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(out_dir.iterdir()) if out_dir.exists() else []:
        m = _RESULT_DIR.match(entry.name)
        if m and (entry / "checks.json").exists():
            found[m["scenario"]] = json.loads((entry / "checks.json").read_text())
    return found


def _add(run: Run, scenario: str, raw: list[dict[str, Any]]) -> None:
    seen: Counter[str] = Counter()
    for item in raw:
        seen[item["id"]] += 1
        cid = item["id"] if seen[item["id"]] == 1 else f"{item['id']}#{seen[item['id']]}"
        run.checks[(scenario, cid)] = Check(
            scenario, cid, item["status"], str(item.get("errorMessage") or ""), _tool_missing(item)
        )


_NO_SUCH_TOOL = re.compile(r"\bTool \S+ not found\b|\bUnknown tool\b", re.I)


def _tool_missing(item: dict[str, Any]) -> bool:
    result = (item.get("details") or {}).get("result")
    if not isinstance(result, dict) or result.get("isError") is not True:
        return False
    texts = [c.get("text", "") for c in result.get("content") or [] if isinstance(c, dict)]
    return any(_NO_SUCH_TOOL.search(t) for t in texts)


def _invoke(args: list[str], timeout: float) -> tuple[str, bool]:
    """Run the suite; its stdout+stderr and whether it finished within `timeout`."""
    try:
        done = subprocess.run(
            _node(*args),
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
            env=_env(),
            check=False,
        )
        return done.stdout + done.stderr, True
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        err = exc.stderr or ""
        text = (out.decode(errors="replace") if isinstance(out, bytes) else out) + (
            err.decode(errors="replace") if isinstance(err, bytes) else err
        )
        return text, False


def run_suite(
    url: str, spec_version: str, scenarios: list[str], budget_s: float, workdir: Path
) -> Run:
    """The active suite for `spec_version` against `url`, bounded by `budget_s` in all.

    If the whole-suite run overruns, the scenario it was in is recorded as a failure
    ("timed out") and the scenarios it had not reached are run one by one with what is left
    of the budget; those the budget does not cover are recorded as failures ("not run").
    A scenario the suite ran without leaving results is a failure too.
    """
    run = Run(url, spec_version, scenarios)
    start = time.monotonic()
    deadline = start + budget_s
    out_dir = workdir / "all"
    output, finished = _invoke(
        ["server", "--url", url, "--spec-version", spec_version, "-o", str(out_dir)], budget_s
    )
    started = _RUNNING.findall(output)
    results = _read_results(out_dir)
    if finished:
        m = _ACTIVE_COUNT.search(output)
        if m is None or int(m["n"]) != len(scenarios) or started != scenarios:
            run.notes.append(
                f"the suite ran {started} but the active {spec_version} scenarios are "
                f"{scenarios}:\n{output[-3000:]}"
            )
    leftovers: list[str] = []
    for scenario in scenarios:
        if scenario in results:
            _add(run, scenario, results[scenario])
        elif scenario in started or finished:
            why = "timed out" if not finished else "left no results"
            tail = output[output.find(f"=== Running scenario: {scenario} ===") :][:1500]
            run.checks[(scenario, scenario)] = Check(scenario, scenario, "FAILURE", f"{why}")
            run.notes.append(f"{scenario}: {why} (suite output from there: {tail!r})")
        else:
            leftovers.append(scenario)
    for scenario in leftovers:
        left = deadline - time.monotonic()
        if left < 5.0:
            run.checks[(scenario, scenario)] = Check(
                scenario, scenario, "FAILURE", "not run: time budget exhausted"
            )
            run.notes.append(f"{scenario}: not run, time budget ({budget_s:.0f} s) exhausted")
            continue
        one_dir = workdir / scenario
        output, finished = _invoke(
            ["server", "--url", url, "--scenario", scenario, "-o", str(one_dir)],
            min(left, SCENARIO_TIMEOUT_S),
        )
        raw = _read_results(one_dir).get(scenario)
        if raw is not None:
            _add(run, scenario, raw)
        else:
            why = "timed out" if not finished else "left no results"
            run.checks[(scenario, scenario)] = Check(scenario, scenario, "FAILURE", why)
            run.notes.append(f"{scenario} (run alone): {why}: {output[-1500:]!r}")
    run.seconds = time.monotonic() - start
    return run


# --- comparing runs ---------------------------------------------------------------------

_RANK = {"SUCCESS": 0, "INFO": 0, "WARNING": 1, "FAILURE": 2}


def hollow_passes(run: Run) -> list[Check]:
    """Checks passed only because the server answered "no such tool" as an `isError` result.

    tools-call-simple-text and tools-call-error accept any `isError`/text result, so a server
    without `test_simple_text`/`test_error_handling` (server-everything) passes them with its
    "Tool ... not found" result. They say nothing about the server, and a gateway that answers
    an unknown tool with the JSON-RPC error -32602 the spec prescribes (2025-11-25
    server/tools, error handling: "Unknown tools" are protocol errors) fails them.
    """
    return [c for c in run.checks.values() if c.ok and c.tool_missing]


def regressions(direct: Run, through: Run) -> list[tuple[Check, Check | None]]:
    """Checks that fare worse through the gateway than directly: (direct, through or None).

    Hollow direct passes (see `hollow_passes`) are not compared.
    """
    out: list[tuple[Check, Check | None]] = []
    hollow = {c.key for c in hollow_passes(direct)}
    for key, check in direct.checks.items():
        if key in hollow:
            continue
        other = through.checks.get(key)
        if other is None:
            # The scenario took another path through the gateway (e.g. it failed before the
            # step that makes this check): missing counts as failing.
            if check.ok:
                out.append((check, None))
        elif _RANK[other.status] > _RANK[check.status]:
            out.append((check, other))
    return out


def describe(check: Check | None) -> str:
    if check is None:
        return "(check not made)"
    return check.status + (f": {check.error}" if check.error else "")


def format_checks(checks: list[Check]) -> str:
    return "\n".join(f"  {c.scenario} / {c.id}: {describe(c)}" for c in checks)


# --- the expected-failures file ------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One line of expected-failures.txt: `<target> <spec-version> <scenario> <check-id>`.

    `<target>` names the run (see test_conformance.py: `stdio`, `http`); `*` in the
    first two fields matches any.
    """

    target: str
    spec_version: str
    scenario: str
    check_id: str
    line: int

    def applies(self, target: str, spec_version: str) -> bool:
        return self.target in ("*", target) and self.spec_version in ("*", spec_version)


def read_expected_failures(path: Path = EXPECTED_FAILURES) -> list[Expected]:
    entries: list[Expected] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):  # whole-line comments only: ids may hold `#`
            continue
        fields = line.split()
        if len(fields) != 4:
            raise ValueError(
                f"{path.name}:{number}: want `<target> <spec-version> <scenario> <check-id>`,"
                f" got {raw!r}"
            )
        entries.append(Expected(*fields, line=number))
    return entries


# --- CLI -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--spec-version", default="2025-11-25", choices=SPEC_VERSIONS)
    parser.add_argument("--against", help="a second URL (e.g. the server reached directly)")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds per run")
    args = parser.parse_args()
    scenarios = active_scenarios(args.spec_version)
    with tempfile.TemporaryDirectory() as tmp:
        run = run_suite(args.url, args.spec_version, scenarios, args.budget, Path(tmp) / "a")
        print(f"{args.url} ({args.spec_version}): {run.totals}")
        print(format_checks(list(run.checks.values())))
        for note in run.notes:
            print("note:", note)
        if args.against:
            base = run_suite(
                args.against, args.spec_version, scenarios, args.budget, Path(tmp) / "b"
            )
            print(f"\n{args.against} ({args.spec_version}): {base.totals}")
            worse = regressions(base, run)
            print(f"\n{len(worse)} checks fare worse at {args.url}:")
            for d, t in worse:
                print(f"  {d.scenario} / {d.id}: {describe(d)}  ->  {describe(t)}")


if __name__ == "__main__":
    main()
