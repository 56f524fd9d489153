from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import LOG_DIR, SECRETS_FILE, Gateway, start_gateway


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every process the suite started logged into LOG_DIR; none may contain a test secret."""
    if _is_worker(session.config) or session.config.option.collectonly:
        return
    secrets = (
        {line for line in SECRETS_FILE.read_text().splitlines() if len(line) >= 8}
        if SECRETS_FILE.exists()
        else set()
    )
    scanned = 0
    leaks: list[str] = []
    for path in sorted(LOG_DIR.glob("*.log")):
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
