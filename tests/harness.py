"""Real processes for end-to-end tests: the gateway, fixture backends, and their logs.

Every process logs into one known directory (`SWITCHYARD_TEST_LOGS`, default `var/test-logs`)
so a test can scan everything the suite produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "servers"
NODE_DIR = ROOT / "tests" / "node"
PYTHON = sys.executable
BIN = Path(sys.executable).parent
LOG_DIR = Path(os.environ.get("SWITCHYARD_TEST_LOGS", ROOT / "var" / "test-logs"))
START_TIMEOUT_S = 60.0


SECRETS_FILE = LOG_DIR / "test-secrets.txt"


def register_secret(value: str) -> str:
    """Remember a secret a test made (key, token, client secret): after the run, every log is
    scanned for it (tests/conftest.py). Returns the value, for chaining."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with SECRETS_FILE.open("a", encoding="utf-8") as f:
        f.write(value + "\n")
    return value


def keys_cli(*args: str) -> str:
    """Run `switchyard keys ...`; a created key is registered as a secret."""
    out = subprocess.run(
        [str(BIN / "switchyard"), "keys", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    text = out.stdout.strip()
    return register_secret(text) if args[0] == "create" else text


def create_key(data_dir: Path, principal: str, role: str) -> str:
    return keys_cli("create", "--principal", principal, "--role", role, "--data-dir", str(data_dir))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_path(name: str) -> Path:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    return LOG_DIR / f"{safe}-{os.getpid()}-{time.monotonic_ns()}.log"


def http_get(
    url: str, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stdio_fixture(
    scenario: str | None = None, script: str = "raw_stdio.py", **extra: Any
) -> dict[str, Any]:
    """A `servers:` entry that runs a fixture backend over stdio."""
    args = [str(FIXTURES / script)]
    if scenario is not None:
        args += ["--scenario", scenario]
    return {"command": PYTHON, "args": args, **extra}


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def log_lines(self, marker: str, timeout: float = 10.0) -> list[str]:
        """Every log line mentioning `marker`, once at least one is there (the log is
        buffered: records reach the file within a flush interval)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = await asyncio.to_thread(self.log_text)
            lines = [line for line in text.splitlines() if marker in line]
            if lines:
                return lines
            await asyncio.sleep(0.1)
        raise AssertionError(f"no log line with {marker!r}:\n{self.log_text()[-3000:]}")


@dataclass
class Gateway(Proc):
    port: int
    config_path: Path
    probe_key: str | None = None
    """With authentication on, the API key `readyz()` shows to see backend details."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def readyz(self) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {self.probe_key}"} if self.probe_key else None
        _, body = http_get(f"{self.base}/readyz", headers=auth)
        return json.loads(body)  # type: ignore[no-any-return]

    def wait_backend(self, name: str, state: str = "up", timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.readyz()["backends"].get(name, {})
            if last.get("state") == state:
                return last
            time.sleep(0.1)
        raise AssertionError(
            f"backend {name} never reached {state}: {last}\n{self.log_text()[-3000:]}"
        )


def start_gateway(
    config: dict[str, Any],
    tmp: Path,
    *,
    ready: bool = True,
    extra_args: list[str] | None = None,
    port: int | None = None,
) -> Gateway:
    port = port or free_port()
    auth = config.get("auth") or {}
    probe_key = None
    if auth.get("enabled") and auth.get("api_keys", True) and auth.get("data_dir"):
        # Backend details on /readyz are for authenticated callers only.
        probe_key = create_key(Path(auth["data_dir"]), "readyz-probe", "probe")
    config_path = tmp / f"switchyard-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = log_path(f"gateway-{port}")
    process = subprocess.Popen(
        [
            str(BIN / "switchyard"),
            "serve",
            "--config",
            str(config_path),
            "--port",
            str(port),
            "--log-file",
            str(log),
            *(extra_args or []),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    gw = Gateway(process, log, port, config_path, probe_key)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"gateway exited with {process.returncode}:\n{gw.log_text()[-3000:]}"
            )
        with contextlib.suppress(OSError):
            status, _ = http_get(f"{gw.base}/readyz", timeout=1.0)
            if status == 200 or (status == 503 and not ready):
                return gw
        time.sleep(0.05)
    gw.stop()
    raise AssertionError(f"gateway did not become ready:\n{gw.log_text()[-3000:]}")


def start_port_fixture(
    args: list[str], name: str, env: dict[str, str] | None = None
) -> tuple[Proc, int]:
    """Start a fixture that prints `PORT <n>` once listening; return it and the port."""
    log = log_path(name)
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        env={**os.environ, **env} if env else None,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    os.set_blocking(process.stdout.fileno(), False)
    buffer = b""
    while time.monotonic() < deadline:
        chunk = process.stdout.read() or b""
        buffer += chunk
        for line in buffer.splitlines():
            if line.startswith(b"PORT "):
                return Proc(process, log), int(line.split()[1])
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise AssertionError(
        f"{name} did not report a port:\n{log.read_text(errors='replace')[-2000:]}"
    )


@contextlib.contextmanager
def sdk_http_backend(*flags: str, name: str = "web") -> Iterator[str]:
    proc, port = start_port_fixture(
        [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", "0", "--name", name, *flags],
        f"sdk-http-{name}",
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.stop()


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        nxt = {child for child, parent in parents.items() if parent in frontier}
        out |= nxt
        frontier = nxt
    return out


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
