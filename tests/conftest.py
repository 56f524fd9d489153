from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import LOG_DIR, ROOT, SECRETS_FILE, Gateway, start_gateway


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """A run starts with an empty log directory: the final scan speaks of this run only."""
    if _is_worker(config):
        return
    if LOG_DIR.exists():
        for path in LOG_DIR.iterdir():
            if path.is_file():
                path.unlink()


def _orphans() -> dict[int, str]:
    """Processes started from this checkout (its tests or its venv) that lost their parent."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and fields[1] == "1" and str(ROOT) in cmdline:
            found[int(entry.name)] = cmdline[:160]
    return found


def _no_orphans(session: pytest.Session) -> None:
    """Every process a test started must be gone once the run ends: give stragglers a bounded
    grace, then fail the run for any left (and kill them, so nothing outlives it)."""
    left = _orphans()
    for _ in range(100):  # polling /proc: process exit has no event to wait on (10 s bound)
        if not left:
            break
        time.sleep(0.1)
        left = _orphans()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"orphan scan: {len(left)} processes outlived the run")
    if left:
        for pid, cmdline in left.items():
            if reporter is not None:
                reporter.write_line(f"orphaned process {pid}: {cmdline}", red=True)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every process the suite started logged into LOG_DIR; none may contain a test secret."""
    if _is_worker(session.config) or session.config.option.collectonly:
        return
    _no_orphans(session)
    secrets = (
        {line for line in SECRETS_FILE.read_text().splitlines() if len(line) >= 8}
        if SECRETS_FILE.exists()
        else set()
    )
    scanned = 0
    leaks: list[str] = []
    # Logs, and what tests exported of the audit trail (`*.jsonl`).
    for path in sorted([*LOG_DIR.glob("*.log"), *LOG_DIR.glob("*.jsonl")]):
        text = path.read_text(errors="replace")
        scanned += len(text)
        leaks += [f"{path.name}: {secret[:6]}..." for secret in secrets if secret in text]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"secret scan: {len(secrets)} secrets, {scanned} bytes of logs, {len(leaks)} leaks"
        )
    if leaks or (secrets and scanned == 0):
        if reporter is not None:
            for leak in leaks:
                reporter.write_line(f"secret leaked into a log: {leak}", red=True)
            if scanned == 0:
                reporter.write_line("secret scan read no logs", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(config: dict[str, Any], **kwargs: Any) -> Gateway:
        gw = start_gateway(config, tmp_path, **kwargs)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session for raw HTTP checks against a gateway."""
    async with aiohttp.ClientSession() as session:
        yield session
