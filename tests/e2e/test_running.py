"""Running the gateway as a newcomer does: where it listens, refused flags and ports, readiness
while backends start, `switchyard stdio` on odd standard streams, unreachable backends. Each
test runs the real `switchyard` command and asserts what the user reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import (
    BIN,
    FIXTURES,
    PYTHON,
    free_port,
    http_get,
    log_path,
    start_gateway,
    stdio_fixture,
)

pytestmark = pytest.mark.e2e

SWITCHYARD = str(BIN / "switchyard")


def _write(tmp: Path, config: dict[str, Any]) -> Path:
    path = tmp / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _touching(marker: Path) -> dict[str, Any]:
    """A stdio backend whose only effect is to leave `marker` behind when spawned."""
    return {"command": PYTHON, "args": ["-c", f"open({str(marker)!r}, 'w').close()"]}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--port", "99999"],
            "switchyard serve: error: argument --port: must be a number from 0 to 65535 "
            "(0: any free port), got '99999'",
        ),
        (
            ["--port", "-1"],
            "switchyard serve: error: argument --port: must be a number from 0 to 65535 "
            "(0: any free port), got '-1'",
        ),
        (
            ["--port", "http"],
            "switchyard serve: error: argument --port: must be a number from 0 to 65535 "
            "(0: any free port), got 'http'",
        ),
        (
            ["--host", "localhost:8080"],
            "switchyard serve: error: argument --host: 'localhost:8080': give the host alone, "
            "and the port with --port",
        ),
        (
            ["--host", "no-such-host.invalid", "--port", "0"],
            "switchyard: --host 'no-such-host.invalid': cannot resolve it: ",
        ),
    ],
)
def test_bad_flags_are_refused_before_anything_starts(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    marker = tmp_path / "spawned"
    config = _write(tmp_path, {"servers": {"b": _touching(marker)}})
    done = subprocess.run(
        [SWITCHYARD, "serve", "--config", str(config), *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert not marker.exists(), "a backend was spawned"


def test_a_port_in_use_is_reported_at_once_and_no_backend_is_spawned(tmp_path: Path) -> None:
    marker = tmp_path / "spawned"
    config = _write(tmp_path, {"servers": {"b": _touching(marker)}})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [SWITCHYARD, "serve", "--config", str(config), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"switchyard: cannot listen on 127.0.0.1:{port}: address already in use\n" in (
        done.stderr
    )
    assert "started pid" not in done.stderr
    assert not marker.exists(), "a backend was spawned"


def test_the_gateway_logs_every_url_it_serves_once_bound(tmp_path: Path) -> None:
    config = {
        "servers": {"fx": stdio_fixture()},
        "virtual_servers": {"team": {"tools": [{"backends": ["fx"]}]}},
    }
    gw = start_gateway(config, tmp_path)
    try:
        asyncio.run(gw.log_lines("started pid"))  # the log is written in buffered batches
        lines = gw.log_text().splitlines()
        base = f"http://127.0.0.1:{gw.port}"
        listening = [line for line in lines if "switchyard.http: " in line]
        assert listening[0].endswith(
            f"switchyard.http: listening on {base}/mcp (Streamable HTTP) and {base}/sse (HTTP+SSE)"
        )
        assert listening[1].endswith(
            f"switchyard.http: virtual server 'team': {base}/servers/team/mcp"
        )
        # Bound first: the line comes before any backend is spawned.
        spawned = next(i for i, line in enumerate(lines) if "started pid" in line)
        assert lines.index(listening[0]) < spawned
    finally:
        gw.stop()


def _serve_on_any_port(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`switchyard serve --port 0` and the log line saying where it listens (within 30 s);
    the caller stops the process."""
    process = subprocess.Popen(
        [SWITCHYARD, "serve", "--config", str(config), "--port", "0", "--log-file", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    line = ""
    while time.monotonic() < deadline and not line:
        text = log.read_text() if log.exists() else ""
        line = next((x for x in text.splitlines() if "listening on" in x), "")
        time.sleep(0.05)
    return process, line


def test_port_zero_logs_the_port_the_system_chose(tmp_path: Path) -> None:
    config = _write(tmp_path, {"servers": {"fx": stdio_fixture()}})
    process, line = _serve_on_any_port(config, log_path("port-zero"))
    try:
        assert line, "no listening line"
        url = line.split("listening on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")
        status, _ = http_get(url.removesuffix("/mcp") + "/healthz")
        assert status == 200
    finally:
        process.terminate()
        process.wait(15)


def test_readiness_says_starting_until_backends_made_their_first_attempt(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    # The backend starts only once the test opens the gate: until then the gateway is bound
    # and answers, and readiness says so.
    script = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.02)\n"
        f"os.execv(sys.executable, [sys.executable, {str(FIXTURES / 'raw_stdio.py')!r}])\n"
    )
    config = {
        "gateway": {"startup_wait": 60},
        "servers": {"slow": {"command": PYTHON, "args": ["-c", script]}},
    }
    gw = start_gateway(config, tmp_path, ready=False)
    try:
        status, body = http_get(f"{gw.base}/readyz")
        assert status == 503
        seen = json.loads(body)
        assert seen["ready"] is False and seen["status"] == "starting"
        assert seen["backends"]["slow"]["state"] == "starting"
        gate.touch()
        gw.wait_backend("slow", "up")
        # The backend is up a step before start-up finishes (its first listing is still being
        # checked): readiness may say "starting" a moment longer, but never anything else.
        deadline = time.monotonic() + 30
        while True:
            status, body = http_get(f"{gw.base}/readyz")
            seen = json.loads(body)
            if seen["status"] != "starting" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200 and seen["status"] == "ready"
    finally:
        gw.stop()


def test_an_unreachable_backend_is_named_by_url_and_reason_without_secrets(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    config = {
        "gateway": {"startup_wait": 10},
        "servers": {
            "ok": stdio_fixture(),
            "gone": {"url": f"http://robot:hunter2@127.0.0.1:{port}/mcp?token=s3cr3t"},
            "nowhere": {"url": "https://no-such-host.invalid/mcp", "type": "http"},
        },
    }
    gw = start_gateway(config, tmp_path)
    try:
        gone = gw.wait_backend("gone", "down")
        assert gone["error"] == (
            f"BackendUnreachable: cannot reach http://127.0.0.1:{port}/mcp?[redacted] "
            "(Streamable HTTP): connection refused; "
            f"BackendUnreachable: cannot reach http://127.0.0.1:{port}/mcp?[redacted] "
            "(HTTP+SSE): connection refused"
        )
        nowhere = gw.wait_backend("nowhere", "down")
        assert nowhere["error"] == (
            "BackendUnreachable: cannot reach https://no-such-host.invalid/mcp "
            "(Streamable HTTP): the host name does not resolve"
        )
        log = gw.log_text()
        assert (
            f"backend 'gone': failed to start: BackendUnreachable: cannot reach "
            f"http://127.0.0.1:{port}/mcp?[redacted]" in log
        )
        assert "hunter2" not in log and "s3cr3t" not in log and "robot" not in log
    finally:
        gw.stop()


def _stdio(config: Path, **streams: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWITCHYARD, "stdio", "--config", str(config)],
        capture_output="stdout" not in streams,
        text=True,
        timeout=60,
        **streams,
    )


def test_stdio_with_stdin_closed_explains_and_exits(tmp_path: Path) -> None:
    marker = tmp_path / "spawned"
    config = _write(tmp_path, {"servers": {"b": _touching(marker)}})
    done = subprocess.run(
        f"exec {SWITCHYARD} stdio --config {config} <&-",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "switchyard stdio: stdin is closed; this command speaks MCP on stdin/stdout and must "
        "be started by an MCP client (or use `switchyard serve` for HTTP)\n"
    )
    assert not marker.exists()


def test_stdio_with_stdout_closed_explains_and_exits(tmp_path: Path) -> None:
    config = _write(tmp_path, {"servers": {"fx": stdio_fixture()}})
    done = subprocess.run(
        f"exec {SWITCHYARD} stdio --config {config} >&- </dev/null",
        shell=True,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "switchyard stdio: stdout is closed;" in done.stderr


def _stdio_on_dev_null(
    config: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`switchyard stdio` with /dev/null for both standard streams: it serves until EOF."""
    with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        return subprocess.run(
            [SWITCHYARD, "stdio", "--config", str(config)],
            stdin=null_in,
            stdout=null_out,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )


def test_stdio_on_dev_null_and_a_regular_file_serves_and_ends_cleanly(tmp_path: Path) -> None:
    config = _write(tmp_path, {"servers": {"fx": stdio_fixture()}})
    done = _stdio_on_dev_null(config)
    assert done.returncode == 0, done.stderr
    assert "Fatal Python error" not in done.stderr
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}) + "\n",
    )
    answers = tmp_path / "answers.jsonl"
    with requests.open("rb") as file_in, answers.open("wb") as file_out:
        done = subprocess.run(
            [SWITCHYARD, "stdio", "--config", str(config)],
            stdin=file_in,
            stdout=file_out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert "Fatal Python error" not in done.stderr
    assert json.loads(answers.read_text().splitlines()[0]) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {},
    }


def test_stdio_on_a_terminal_says_what_it_is_and_serves(tmp_path: Path) -> None:
    config = _write(tmp_path, {"servers": {"fx": stdio_fixture()}})
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
        try:
            os.execv(SWITCHYARD, [SWITCHYARD, "stdio", "--config", str(config)])
        finally:
            os._exit(127)  # never go on as a copy of the test process
    reaped = False
    seen = b""
    try:
        deadline = time.monotonic() + 60
        sent = False
        while time.monotonic() < deadline and b'"id":7,"result"' not in seen:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
            if not sent and b"gateway started" in seen:
                os.write(fd, b'{"jsonrpc":"2.0","id":7,"method":"ping"}\n')
                sent = True
        text = seen.decode(errors="replace")
        assert (
            "switchyard stdio: stdin is a terminal. This command speaks MCP (one JSON-RPC "
            "message per line) on stdin/stdout, for a client that starts it; type messages, "
            "or press Ctrl-D to end. For HTTP, run `switchyard serve`." in text.replace("\r", "")
        )
        assert '{"jsonrpc":"2.0","id":7,"result":{}}' in text
        os.write(fd, b"\x04")  # Ctrl-D: end of input
        _, status = os.waitpid(pid, 0)
        reaped = True
        assert os.waitstatus_to_exitcode(status) == 0
        assert "Fatal Python error" not in text
    finally:
        os.close(fd)
        if not reaped:  # a reaped pid may already belong to another process
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, 9)
                os.waitpid(pid, 0)


def _threshold_probe(tmp: Path) -> tuple[dict[str, str], Path]:
    """An environment whose Python writes its collector thresholds to a file as it exits."""
    site = tmp / "site"
    site.mkdir()
    out = tmp / "thresholds"
    (site / "sitecustomize.py").write_text(
        "import atexit, gc\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(repr(gc.get_threshold())))\n"
    )
    return {**os.environ, "PYTHONPATH": str(site)}, out


def test_serving_processes_collect_young_objects_at_the_raised_threshold_only(
    tmp_path: Path,
) -> None:
    config = _write(tmp_path, {"servers": {"fx": stdio_fixture()}})
    env, out = _threshold_probe(tmp_path)

    listed = subprocess.run(
        [SWITCHYARD, "backends", "--config", str(config)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert out.read_text() == "(700, 10, 10)"  # a one-shot command keeps CPython's defaults

    done = _stdio_on_dev_null(config, env)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "(10000, 10, 10)"

    out.unlink()
    process, line = _serve_on_any_port(config, log_path("collector-threshold"), env)
    process.terminate()
    assert process.wait(15) == 0
    assert line, "no listening line"
    assert out.read_text() == "(10000, 10, 10)"
