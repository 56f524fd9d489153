"""The MCP conformance suite (@modelcontextprotocol/conformance 0.1.16, server scenarios) run
against servers reached directly and through Switchyard, for spec versions 2025-11-25 and
2025-06-18. See tests/conformance/README.md.

(a) server-everything (the reference server) directly, over its Streamable HTTP mode, versus
    server-everything behind Switchyard (over stdio, and over Streamable HTTP: that same
    instance), compared check by check: no check that passes directly may fail through the
    gateway.
(b) tests/fixtures/servers/conformance_server.py (every scenario's tools, resources and
    prompts) directly, then behind Switchyard over stdio and over Streamable HTTP, with the
    gateway's era toward it left on `auto` (which picks 2026-07-28 for this server) and forced
    to `legacy`: every active scenario passes, bar the checks listed in expected-failures.txt.

Every backend sits behind its own gateway with `prefix: ""`, since the scenarios call tools,
prompts and resources by their exact names. Every server starts once per module; the suite
runs against all endpoints of a part at once, each endpoint's spec versions in turn, every
run bounded in time (RUN_BUDGET_S).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.suite import (
    EXPECTED_FAILURES,
    LOOPBACK_ONLY,
    NODE,
    SPEC_VERSIONS,
    Check,
    Run,
    active_scenarios,
    describe,
    format_checks,
    hollow_passes,
    read_expected_failures,
    regressions,
    run_suite,
)
from tests.harness import (
    FIXTURES,
    LOG_DIR,
    NODE_DIR,
    PYTHON,
    Proc,
    free_port,
    log_path,
    start_gateway,
    start_port_fixture,
)

RUN_BUDGET_S = 75.0  # one suite run (one server, one spec version), all scenarios
START_S = 30.0
STOP_S = 5.0
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2 * RUN_BUDGET_S + 90)]

EVERYTHING = (
    NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
CONFORMANCE_SERVER = FIXTURES / "conformance_server.py"

# Targets: how the server under test is reached. `direct` = the server's own endpoint.
EVERYTHING_THROUGH = ("stdio", "http")  # server-everything is a handshake-era server
FIXTURE_THROUGH = ("stdio", "http", "stdio-legacy", "http-legacy")


# --- servers ---------------------------------------------------------------------------------


def _wait_listening(proc: Proc, port: int, what: str) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise AssertionError(
                f"{what} exited with {proc.process.returncode}:\n{proc.log_text()[-2000:]}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} is not listening on {port}:\n{proc.log_text()[-2000:]}")


@contextlib.contextmanager
def everything_http() -> Iterator[str]:
    """server-everything's Streamable HTTP mode, bound to 127.0.0.1; yields its /mcp URL."""
    port = free_port()
    log = log_path(f"conformance-everything-{port}")
    env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"} | {"PORT": str(port)}
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(NODE), "--require", str(LOOPBACK_ONLY), str(EVERYTHING), "streamableHttp"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    proc = Proc(process, log)
    try:
        _wait_listening(proc, port, "server-everything streamableHttp")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.stop(timeout=STOP_S)


@contextlib.contextmanager
def fixture_http() -> Iterator[str]:
    proc, port = start_port_fixture(
        [PYTHON, str(CONFORMANCE_SERVER), "--http", "--port", "0"], "conformance-fixture-http"
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.stop(timeout=STOP_S)


@contextlib.contextmanager
def through_switchyard(backend: dict[str, Any], tmp: Path) -> Iterator[str]:
    """A gateway whose only backend is `backend`, unprefixed; yields the gateway's /mcp URL."""
    # A client reached directly has the server (process) to itself: per_session is the match.
    # The suite opens a session per scenario, faster than the default per-caller spawn
    # allowance; conformance, not that allowance, is what is tested here.
    entry = {**backend, "prefix": "", "isolation": "per_session", "spawn_burst": 1000}
    gw = start_gateway({"servers": {"under_test": entry}}, tmp)
    try:
        gw.wait_backend("under_test", timeout=START_S)
        yield gw.url
    finally:
        gw.stop(timeout=STOP_S)


def _backend(target: str, stdio: dict[str, Any], url: str) -> dict[str, Any]:
    transport, _, era = target.partition("-")
    entry = stdio if transport == "stdio" else {"url": url, "type": "streamable-http"}
    return {**entry, "era": era} if era else entry


def _run_endpoints(server: str, urls: dict[str, str], tmp: Path) -> dict[tuple[str, str, str], Run]:
    """(server, target, spec version) -> the suite's results, for every target in `urls`.

    The endpoints are run concurrently, but each one's spec versions one after the other:
    the suite is a single client at a time, and two at once on one gateway would share its
    backend (whose server-to-client requests then have no single client to go to).
    """
    scenarios = {v: active_scenarios(v) for v in SPEC_VERSIONS}

    def one_endpoint(target: str) -> dict[tuple[str, str, str], Run]:
        return {
            (server, target, v): run_suite(
                urls[target], v, scenarios[v], RUN_BUDGET_S, tmp / f"{server}-{target}-{v}"
            )
            for v in SPEC_VERSIONS
        }

    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        futures = [pool.submit(one_endpoint, target) for target in urls]
        results = {key: run for future in futures for key, run in future.result().items()}
    _write_summary(server, results)
    return results


@pytest.fixture(scope="module")
def everything_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str, str], Run]:
    """(a): server-everything directly and behind a gateway per EVERYTHING_THROUGH target."""
    tmp = tmp_path_factory.mktemp("conformance-everything")
    stdio = {"command": str(NODE), "args": [str(EVERYTHING), "stdio"]}
    with contextlib.ExitStack() as stack:
        direct = stack.enter_context(everything_http())
        urls = {"direct": direct}
        for target in EVERYTHING_THROUGH:
            backend = _backend(target, stdio, direct)
            urls[target] = stack.enter_context(through_switchyard(backend, tmp))
        return _run_endpoints("everything", urls, tmp)


@pytest.fixture(scope="module")
def fixture_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str, str], Run]:
    """(b): conformance_server.py directly and behind a gateway per FIXTURE_THROUGH target."""
    tmp = tmp_path_factory.mktemp("conformance-fixture")
    stdio = {"command": PYTHON, "args": [str(CONFORMANCE_SERVER)]}
    with contextlib.ExitStack() as stack:
        direct = stack.enter_context(fixture_http())
        urls = {"direct": direct}
        for target in FIXTURE_THROUGH:
            backend = _backend(target, stdio, direct)
            urls[target] = stack.enter_context(through_switchyard(backend, tmp))
        return _run_endpoints("fixture", urls, tmp)


def _write_summary(server: str, results: dict[tuple[str, str, str], Run]) -> None:
    lines = []
    for (_, target, version), run in sorted(results.items()):
        lines.append(f"{server} {target} {version}: {run.totals}")
        lines += [f"    {c.scenario} / {c.id}: {describe(c)}" for c in run.failing()]
        lines += [f"    note: {n[:500]}" for n in run.notes]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / f"conformance-{server}-{os.getpid()}.txt"
    path.write_text("\n".join(lines) + "\n")


# --- (a) server-everything: direct vs through Switchyard -----------------------------------


@pytest.mark.parametrize("target", EVERYTHING_THROUGH)
@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_everything_no_regressions_through_switchyard(
    version: str, target: str, everything_runs: dict[tuple[str, str, str], Run]
) -> None:
    direct = everything_runs["everything", "direct", version]
    through = everything_runs["everything", target, version]
    print(f"\n[{version}] server-everything direct:             {direct.totals}")
    print(f"[{version}] server-everything via Switchyard ({target}): {through.totals}")

    # What server-everything itself passes (it lacks most test_* tools): a floor, so that a
    # broken direct run cannot make the comparison vacuous.
    assert direct.checks[("server-initialize", "server-initialize")].ok, direct.notes
    assert direct.count("SUCCESS") >= 10, (direct.totals, direct.notes)

    hollow = hollow_passes(direct)
    if hollow:
        print("not compared, passed directly only with a 'tool not found' result:")
        print(format_checks(hollow))
    better = regressions(through, direct)
    if better:
        print("pass through Switchyard, not directly (the direct result):")
        print("\n".join(f"  {d.scenario} / {d.id}: {describe(t)}" for d, t in better))
    worse = regressions(direct, through)
    assert not worse, (
        f"[{version}, {target}] {len(worse)} checks pass directly but not through Switchyard"
        f" (direct: {direct.totals}; through: {through.totals}):\n"
        + "\n".join(f"  {d.scenario} / {d.id}: {describe(t)}" for d, t in worse)
        + "".join(f"\nnote: {n}" for n in through.notes)
    )


# --- (b) the conformance fixture: directly, then through Switchyard --------------------------


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_fixture_passes_every_scenario_directly(
    version: str, fixture_runs: dict[tuple[str, str, str], Run]
) -> None:
    """The baseline for (b): a failure here is the fixture's, not the gateway's."""
    run = fixture_runs["fixture", "direct", version]
    print(f"\n[{version}] conformance_server.py direct: {run.totals}")
    assert not run.failing(), (
        f"[{version}] fixture fails directly:\n{format_checks(run.failing())}"
        + "".join(f"\nnote: {n}" for n in run.notes)
    )
    passing = {c.scenario for c in run.checks.values() if c.status == "SUCCESS"}
    assert passing == set(run.scenarios), run.totals


@pytest.mark.parametrize("target", FIXTURE_THROUGH)
@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_fixture_passes_every_scenario_through_switchyard(
    version: str, target: str, fixture_runs: dict[tuple[str, str, str], Run]
) -> None:
    direct = fixture_runs["fixture", "direct", version]
    run = fixture_runs["fixture", target, version]
    print(f"\n[{version}] conformance_server.py direct:                  {direct.totals}")
    print(f"[{version}] conformance_server.py via Switchyard ({target}): {run.totals}")

    expected = {
        (e.scenario, e.check_id): e for e in read_expected_failures() if e.applies(target, version)
    }
    failing = {c.key: c for c in run.failing()}
    for key, check in direct.checks.items():  # made directly, but not through the gateway
        if key not in run.checks:
            failing[key] = Check(*key, "FAILURE", f"not made through Switchyard ({check.status})")
    unlisted = [c for key, c in failing.items() if key not in expected]
    stale = [e for key, e in expected.items() if key not in failing]
    problems = []
    if unlisted:
        problems.append(
            f"{len(unlisted)} checks fail through Switchyard and are not in "
            f"{EXPECTED_FAILURES.name} (as `{target} {version} <scenario> <check-id>`):\n"
            + format_checks(unlisted)
        )
    if stale:
        problems.append(
            f"{len(stale)} entries of {EXPECTED_FAILURES.name} no longer fail, remove them:\n"
            + "\n".join(
                f"  line {e.line}: {e.scenario} / {e.check_id}: "
                + describe(run.checks.get((e.scenario, e.check_id)))
                for e in stale
            )
        )
    assert not problems, (
        f"[{version}, {target}] " + "\n".join(problems) + "".join(f"\nnote: {n}" for n in run.notes)
    )


def test_expected_failures_file() -> None:
    """It exists and every line is `<target> <spec-version> <scenario> <check-id>`."""
    assert EXPECTED_FAILURES.exists(), EXPECTED_FAILURES
    for entry in read_expected_failures():
        assert entry.target in ("*", *FIXTURE_THROUGH), entry
        assert entry.spec_version in ("*", *SPEC_VERSIONS), entry
