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

from switchyard.protocol import codes, methods
from switchyard.upstream import handshake
from switchyard.upstream.connection import (
    MessageStream,
    NotificationHandler,
    NotSent,
    UpstreamClosed,
)
from switchyard.upstream.outbound import Outbound
from switchyard.wire import frame
from switchyard.wire.frame import Reply

log = logging.getLogger("switchyard.upstream.stdio")

# Grace for a backend to exit on its own after its stdin closes, then after SIGTERM.
EXIT_GRACE_S: Final = 2.0
TERM_GRACE_S: Final = 2.0
# A legacy server may ignore `server/discover` instead of answering it; don't wait long.
DISCOVER_SHARE: Final = 0.5
"""How much of the handshake timeout `server/discover` may take before a legacy handshake is
tried: a server still starting under load must not be mistaken for one that ignores it (an SDK
server that answers discover late refuses the `initialize` sent meanwhile)."""
STDERR_LINE_MAX: Final = 4096
# How much of an oversize message is kept to find out which request it answers.
OVERSIZE_HEAD: Final = 4096
DISCARD_CHUNK: Final = 65536
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
    stderr_level: int = logging.INFO
    """The level the process's stderr lines are logged at (`logging.backend_stderr_level`)."""


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
            timeout = self.settings.handshake_timeout_s
            if method == methods.DISCOVER:
                timeout *= DISCOVER_SHARE
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
            raise NotSent(self._close_reason)
        async with self._write_lock:
            if proc.stdin.is_closing() or proc.returncode is not None:
                raise NotSent("process exited")
            try:
                proc.stdin.write(data + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The pipe's reader is gone: the process never read this line.
                raise NotSent(f"process stdin closed: {type(exc).__name__}") from exc

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        reason = "process exited"
        # The start of a message over the size limit while the rest of it is being skipped.
        oversize: bytes | None = None
        try:
            while True:
                try:
                    line = await stdout.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if oversize is not None:
                        self._refuse_oversize(oversize)
                    elif exc.partial.strip():
                        await self._dispatch(exc.partial)
                    break
                except asyncio.LimitOverrunError as exc:
                    # Skip what cannot be this line's end, never holding more than the limit;
                    # the next newline ends the message and the reader carries on after it.
                    head = await _discard(stdout, exc.consumed)
                    oversize = head if oversize is None else oversize
                    continue
                if oversize is not None:
                    self._refuse_oversize(oversize)  # `line` was its tail
                    oversize = None
                elif line.strip():
                    await self._dispatch(line)
        except OSError as exc:
            reason = f"stdout failed: {exc}"
        finally:
            code = None
            if self.process.returncode is not None:
                code = self.process.returncode
            self._mark_closed(reason if code is None else f"{reason} (exit code {code})")

    def _refuse_oversize(self, head: bytes) -> None:
        """A message over the size limit fails only the request it answers, when its start
        names one of ours; anything else of that size is dropped."""
        limit = self.settings.max_message_bytes
        response_id = oversize_response_id(head)
        pending = self._pending.get(response_id) if isinstance(response_id, int) else None
        if pending is None or pending.done():
            log.warning(
                "backend %r sent a message over the %d-byte limit; dropped", self.backend, limit
            )
            return
        log.warning(
            "backend %r answered request %d with more than %d bytes; refused",
            self.backend,
            response_id,
            limit,
        )
        pending.set_result(
            frame.error_reply(
                codes.RESULT_TOO_LARGE,
                f"backend {self.backend!r} sent a result over the {limit}-byte limit",
                {"source": "gateway", "backend": self.backend},
            )
        )

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
                    log.log(self.settings.stderr_level, "backend %r stderr: %s", self.backend, text)

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


async def _discard(stdout: asyncio.StreamReader, count: int) -> bytes:
    """Drop `count` buffered bytes a chunk at a time; return the first `OVERSIZE_HEAD`."""
    head = bytearray()
    while count > 0:
        chunk = await stdout.read(min(count, DISCARD_CHUNK))
        if not chunk:
            break
        if len(head) < OVERSIZE_HEAD:
            head += chunk[: OVERSIZE_HEAD - len(head)]
        count -= len(chunk)
    return bytes(head)


_WHITESPACE: Final = b" \t\r\n"


def oversize_response_id(head: bytes) -> int | str | None:
    """The `id` of the response whose message starts with `head` (the rest is cut off), if
    the head shows it: a top-level `id` member and a top-level `result` or `error` member,
    both complete. Each token is decoded as JSON; nested members never count."""
    i, n = 0, len(head)

    def skip_ws(at: int) -> int:
        while at < n and head[at] in _WHITESPACE:
            at += 1
        return at

    def string_end(at: int) -> int:
        """Index after the string that starts at `at` (a quote), or -1 if cut off."""
        at += 1
        while at < n:
            c = head[at]
            if c == 0x5C:  # backslash: skip the escaped byte
                at += 2
                continue
            if c == 0x22:
                return at + 1
            at += 1
        return -1

    i = skip_ws(i)
    if i >= n or head[i] != 0x7B:  # {
        return None
    i += 1
    depth, expect_key = 1, True
    found_id: int | str | None = None
    is_response = False
    while i < n:
        c = head[i]
        if c in _WHITESPACE:
            i += 1
        elif c == 0x22:  # a string: a key of the top-level object, or some value
            end = string_end(i)
            if end < 0:
                break
            if depth == 1 and expect_key:
                try:
                    key = frame.decode_any(head[i:end])
                except frame.DecodeError:
                    return None
                i = skip_ws(end)
                if i >= n or head[i] != 0x3A:  # :
                    break
                i = skip_ws(i + 1)
                expect_key = False
                if key in ("result", "error"):
                    is_response = True
                elif key == "method":
                    return None  # a request or notification of the backend's, not an answer
                elif key == "id":
                    start = i
                    if i < n and head[i] == 0x22:
                        i = string_end(i)
                        if i < 0:
                            break
                    else:
                        while i < n and head[i] not in b",} \t\r\n":
                            i += 1
                        if i >= n:
                            break  # the number may go on past the cut
                    try:
                        value = frame.decode_any(head[start:i])
                    except frame.DecodeError:
                        return None
                    if isinstance(value, int | str) and not isinstance(value, bool):
                        found_id = value
            else:
                i = end
        elif c in b"{[":
            depth += 1
            i += 1
        elif c in b"}]":
            depth -= 1
            i += 1
        elif c == 0x2C and depth == 1:  # ,
            expect_key = True
            i += 1
        else:
            i += 1
        if found_id is not None and is_response:
            return found_id
    return None
