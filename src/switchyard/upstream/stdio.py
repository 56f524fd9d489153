"""Backends as child processes speaking newline-delimited JSON-RPC on stdin/stdout.

Each child runs in its own process group so shutdown reaches its descendants too (npx, shells);
shutdown is close stdin -> SIGTERM -> SIGKILL with bounded waits, then reaped: no orphan, no
zombie.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Final

from switchyard.protocol import methods
from switchyard.upstream import handshake
from switchyard.upstream.connection import MessageStream, NotificationHandler, UpstreamClosed
from switchyard.upstream.outbound import Outbound
from switchyard.wire.frame import Reply

log = logging.getLogger("switchyard.upstream.stdio")

# Grace for a backend to exit on its own after its stdin closes, then after SIGTERM.
EXIT_GRACE_S: Final = 2.0
TERM_GRACE_S: Final = 2.0
# A legacy server may ignore `server/discover` instead of answering it; don't wait long.
DISCOVER_TIMEOUT_S: Final = 5.0
STDERR_LINE_MAX: Final = 4096
# Variables a child inherits from the gateway; everything else must be configured explicitly.
INHERITED_ENV: Final = (
    "HOME",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TERM",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "SYSTEMROOT",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@dataclass(frozen=True, slots=True)
class StdioSettings:
    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    era: str = "auto"
    handshake_timeout_s: float = 30.0
    max_message_bytes: int = 8 * 1024 * 1024


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k in INHERITED_ENV if (v := os.environ.get(k)) is not None}
    env.update(extra)
    return env


class StdioConnection(MessageStream):
    def __init__(
        self, backend: str, settings: StdioSettings, on_notification: NotificationHandler
    ) -> None:
        super().__init__(backend, on_notification)
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        s = self.settings
        try:
            self.process = await self._spawn()
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise OSError(f"cannot run {s.command!r}: {exc.strerror}") from exc
        log.info("backend %r: started pid %d: %s", self.backend, self.process.pid, s.command)
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"{self.backend}-stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{self.backend}-stderr"),
        ]
        await asyncio.wait_for(self._handshake(), s.handshake_timeout_s)

    async def _spawn(self) -> asyncio.subprocess.Process:
        s = self.settings
        return await asyncio.create_subprocess_exec(
            s.command,
            *s.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(s.env),
            cwd=s.cwd,
            start_new_session=True,
            limit=s.max_message_bytes,
        )

    async def _handshake(self) -> None:
        async def request(method: str, params: bytes | None) -> Reply:
            timeout = (
                DISCOVER_TIMEOUT_S
                if method == methods.DISCOVER
                else self.settings.handshake_timeout_s
            )
            return await self.request(Outbound(method, params, timeout_s=timeout))

        if self.settings.era in ("auto", "modern"):
            facts = handshake.facts_from_discover(
                await request(methods.DISCOVER, handshake.discover_params())
            )
            if facts is not None:
                self.facts = facts
                return
            if self.settings.era == "modern":
                raise handshake.HandshakeFailed(
                    "backend does not speak 2026-07-28 (server/discover failed)"
                )
        if self._closed.is_set():
            raise UpstreamClosed(self._close_reason)
        self.facts = await handshake.legacy_handshake(request, self.notify, self.declared)

    async def _send(self, data: bytes) -> None:
        proc = self.process
        if proc is None or proc.stdin is None or self._closed.is_set():
            raise UpstreamClosed(self._close_reason)
        async with self._write_lock:
            proc.stdin.write(data + b"\n")
            await proc.stdin.drain()

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        reason = "process exited"
        try:
            while True:
                try:
                    line = await stdout.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        await self._dispatch(exc.partial)
                    break
                except asyncio.LimitOverrunError:
                    reason = "backend sent a message over the size limit"
                    log.error("backend %r: %s; restarting it", self.backend, reason)
                    break
                if line.strip():
                    await self._dispatch(line)
        except OSError as exc:
            reason = f"stdout failed: {exc}"
        finally:
            code = None
            if self.process.returncode is not None:
                code = self.process.returncode
            self._mark_closed(reason if code is None else f"{reason} (exit code {code})")

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        stderr = self.process.stderr
        with contextlib.suppress(OSError, ValueError):
            while True:
                try:
                    line = await stderr.readline()
                except asyncio.LimitOverrunError:
                    continue
                if not line:
                    return
                text = line[:STDERR_LINE_MAX].decode("utf-8", "replace").rstrip()
                if text:
                    log.info("backend %r stderr: %s", self.backend, text)

    async def aclose(self) -> None:
        proc = self.process
        self._mark_closed("gateway closed the connection")
        if proc is not None:
            await asyncio.shield(self._terminate(proc))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        # Phase 1: close stdin; a well-behaved server exits on EOF.
        if proc.stdin is not None and not proc.stdin.is_closing():
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if await self._exited(proc, EXIT_GRACE_S):
            self._kill_group(proc, signal.SIGKILL)  # sweep descendants it left behind
            return
        # Phase 2: SIGTERM to the whole process group.
        self._kill_group(proc, signal.SIGTERM)
        if await self._exited(proc, TERM_GRACE_S):
            self._kill_group(proc, signal.SIGKILL)
            return
        # Phase 3: SIGKILL, then reap.
        log.warning("backend %r: pid %d ignored SIGTERM; killing", self.backend, proc.pid)
        self._kill_group(proc, signal.SIGKILL)
        await self._exited(proc, TERM_GRACE_S)

    @staticmethod
    async def _exited(proc: asyncio.subprocess.Process, timeout: float) -> bool:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
            return True
        except TimeoutError:
            return False

    @staticmethod
    def _kill_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
