"""Which backends may exist at all, and where a backend may send Switchyard: nowhere else."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.harness import BIN, FIXTURES, PYTHON, Gateway, start_port_fixture

pytestmark = [pytest.mark.e2e]


def _check(tmp_path: Path, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [str(BIN / "switchyard"), "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


ALLOWED = {"urls": ["http://127.0.0.1:*/mcp"], "commands": ["switchyard", f"{PYTHON}"]}


@pytest.mark.parametrize(
    ("server", "refusal"),
    [
        ({"url": "http://evil.example/mcp"}, "servers.x.url: 'http://evil.example/mcp' is not in"),
        (
            {"url": "http://127.0.0.1:9/other"},
            "servers.x.url: 'http://127.0.0.1:9/other' is not in",
        ),
        ({"command": "/bin/sh", "args": ["-c", "true"]}, "servers.x.command: '/bin/sh' is not in"),
    ],
)
def test_a_backend_outside_the_allow_list_is_refused_at_load(
    tmp_path: Path, server: dict[str, object], refusal: str
) -> None:
    result = _check(tmp_path, {"gateway": {"allowed_backends": ALLOWED}, "servers": {"x": server}})
    assert result.returncode == 2
    assert refusal in result.stderr


def test_backends_inside_the_allow_list_load(tmp_path: Path) -> None:
    servers = {
        "a": {"url": "http://127.0.0.1:8123/mcp"},
        "b": {"command": "switchyard", "args": ["demo", "clock"]},
        "c": {"command": PYTHON, "args": ["-V"]},
    }
    result = _check(tmp_path, {"gateway": {"allowed_backends": ALLOWED}, "servers": servers})
    assert result.returncode == 0, result.stderr


def test_a_backend_redirect_is_never_followed(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    record = tmp_path / "headers.jsonl"
    args = [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", "0", "--json-response"]
    target, target_port = start_port_fixture(
        args, "redirect-target", env={"FIXTURE_HEADERS_FILE": str(record)}
    )

    class Redirect(BaseHTTPRequestHandler):
        def _redirect(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{target_port}/mcp")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_DELETE = _redirect

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
        gw = gateway_factory({"servers": {"hop": {"url": url}}}, ready=False)
        backend = gw.wait_backend("hop", "down")
        assert "302" in backend["error"], backend
    finally:
        server.shutdown()
        target.stop()
    requests = record.read_text().splitlines() if record.exists() else []
    assert requests == []  # the redirect's target never heard from Switchyard
