"""Logging setup: one line per record on stderr or a file, cheap enough for a line per request;
the access log writes one JSON object per line (see `write_decision`).

A write per record costs a system call; under load that was a measurable share of a request's
CPU. Records are buffered and flushed every FLUSH_S, and at once for warnings and errors so a
failure is never stuck in a buffer. Access records are formatted in batches as well (see
`AccessLog`).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json.encoder
import logging
import sys
import threading
import time
from typing import Final, TextIO

from switchyard.observability import decisions
from switchyard.observability.decisions import Decision
from switchyard.wire.frame import Raw

FLUSH_S: Final = 0.5
_escape: Final = json.encoder.encode_basestring_ascii
BUFFER_BYTES: Final = 1 << 16


class LineFormatter(logging.Formatter):
    """`2026-11-21 13:24:30,658 INFO name: message`, with the date part built once a second."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        message = record.getMessage()
        line = f"{self._stamp},{int(record.msecs):03d} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """`{"ts":…,"level":…,"logger":…,"message":…}`: one JSON object per line (`--log-format
    json`), every value escaped like the access records' (no value can start a forged line)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return (
            f'{{"ts":"{_timestamp(record.created)}","level":"{record.levelname}",'
            f'"logger":{_escape(record.name)},"message":{_escape(message)}}}'
        )


def use_format(kind: str) -> None:
    """Switch the gateway's own log lines to `text` or `json` (access records are JSON in
    both)."""
    formatter: logging.Formatter = JsonFormatter() if kind == "json" else LineFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


class BufferedHandler(logging.StreamHandler[TextIO]):
    def flush(self) -> None:
        return  # the flusher thread and warnings flush; see module docstring

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held: access records still to be formatted were made
        # before this record, and go out before it.
        access_log.drain()
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.flush_now()

    def flush_now(self) -> None:
        with self.lock or threading.Lock(), contextlib.suppress(OSError, ValueError):
            access_log.drain()
            self.stream.flush()


# What `write_decision` keeps of an access record until it is formatted: the `_line` arguments.
_Record = tuple[
    float,  # now
    str,  # decision
    str | int,  # outcome
    str | None,  # method
    bytes | None,  # request_id
    str | None,  # principal
    str | None,  # via
    str | None,  # issuer
    str | None,  # view
    str | None,  # face
    str | None,  # era
    str | None,  # backend
    str | None,  # target
    float | None,  # latency_ms
    int | None,  # status
    str | None,  # reason
    str | None,  # trace_id
]


class AccessLog:
    """One JSON object per line per request, written straight to the log stream.

    Every field a client or backend can influence (method, target, ids, names) is a JSON
    string: JSON encoding with `ensure_ascii` escapes CR, LF, ANSI escapes and every other
    control or line-separating character, so no value can end a record or start a forged one.
    Each field is length-capped. Building a record through `logging` would cost a LogRecord, a
    handler chain and a formatter per request; this writes the line directly. Disabled (free)
    until `setup` runs with the `switchyard.requests` logger at INFO or below.

    A request only queues its record's values; they are formatted and written `BATCH` at a
    time, and whenever the stream is flushed or another log record is written first, so the
    lines, their order among all log lines and when they reach the file are as if each was
    written at once. Interleaved with the work of requests, formatting cost about twice what
    it costs in a run of its own (docs/architecture.md, "Logging off the hot path").
    """

    NAME: Final = "switchyard.requests"
    BATCH: Final = 256

    def __init__(self) -> None:
        self.enabled = False
        self._handler: BufferedHandler | None = None
        # A deque: appends and pops are atomic, so any thread may add while another drains.
        self._pending: collections.deque[_Record] = collections.deque()

    def attach(self, handler: BufferedHandler) -> None:
        self.drain()  # what was queued for the handler before goes there
        self._handler = handler
        self.enabled = logging.getLogger(self.NAME).isEnabledFor(logging.INFO)

    def add(self, record: _Record) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.BATCH:
            self.drain()

    def drain(self) -> None:
        """Format and write every queued record, in the order they were made."""
        pending = self._pending
        handler = self._handler
        if not pending or handler is None:
            return
        # The handler's lock (reentrant: `emit` and `flush_now` hold it already) keeps two
        # threads draining at once from writing their shares out of order.
        with handler.lock or threading.Lock():
            lines = []
            with contextlib.suppress(IndexError):
                while True:
                    lines.append(_line(*pending.popleft()))
            with contextlib.suppress(OSError, ValueError):
                handler.stream.write("".join(lines))


# Longest method name kept whole (no MCP method comes near it); other fields get FIELD_CHARS.
METHOD_CHARS: Final = 128
FIELD_CHARS: Final = 512
DECISIONS: Final = frozenset({"allow", "deny", "error"})


def capped(value: str | None, limit: int = FIELD_CHARS) -> str | None:
    """`value` cut to `limit` characters, marked with how many more there were."""
    if value is None or len(value) <= limit:
        return value
    return f"{value[:limit]}…[+{len(value) - limit} chars]"


_SECOND: list[tuple[int, str]] = [(-1, "")]


def _timestamp(now: float) -> str:
    second = int(now)
    cached_second, stamp = _SECOND[0]
    if cached_second != second:
        # Formatted once per second, not per record: records come thousands a second.
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _SECOND[0] = (second, stamp)
    return f"{stamp}.{int((now - second) * 1000):03d}Z"


def write_decision(
    *,
    decision: str,
    outcome: str | int,
    method: str | None = None,
    request_id: bytes | None = None,
    principal: str | None = None,
    via: str | None = None,
    issuer: str | None = None,
    view: str | None = None,
    face: str | None = None,
    era: str | None = None,
    backend: str | None = None,
    target: str | None = None,
    latency_ms: float | None = None,
    status: int | None = None,
    reason: str | None = None,
    name: str | None = None,
    trace_id: str | None = None,
    request_bytes: int | None = None,
    result_bytes: int | None = None,
    arguments: Raw | None = None,
) -> None:
    """Write one access record: what was asked, by whom, and what the gateway decided.

    `decision` is `allow`, `deny` or `error`; `outcome` is `ok`, a JSON-RPC error code,
    `isError` (a tool result flagged as an error) or, for a refusal before any JSON-RPC
    handling, whatever the caller names (with the HTTP `status`). `request_id` is the
    JSON-RPC id as it appeared on the wire (encoded JSON). Every decision sink (the audit
    trail) gets the same decision, with the fields only sinks take (`name`, `trace_id`, sizes,
    `arguments`). Free when access logging is off and no sink is registered.
    """
    now = time.time()
    if decisions.wanted():
        decisions.deliver(
            Decision(
                at=now,
                decision=decision if decision in DECISIONS else "error",
                outcome=outcome,
                method=method,
                request_id=request_id,
                principal=principal,
                via=via,
                issuer=issuer,
                view=view,
                face=face,
                era=era,
                backend=backend,
                target=target,
                name=name,
                latency_ms=latency_ms,
                status=status,
                reason=reason,
                trace_id=trace_id,
                request_bytes=request_bytes,
                result_bytes=result_bytes,
                arguments=arguments,
            )
        )
    if not access_log.enabled:
        return
    access_log.add(
        (
            now,
            decision,
            outcome,
            method,
            request_id,
            principal,
            via,
            issuer,
            view,
            face,
            era,
            backend,
            target,
            latency_ms,
            status,
            reason,
            trace_id,
        )
    )


def _line(
    now: float,
    decision: str,
    outcome: str | int,
    method: str | None,
    request_id: bytes | None,
    principal: str | None,
    via: str | None,
    issuer: str | None,
    view: str | None,
    face: str | None,
    era: str | None,
    backend: str | None,
    target: str | None,
    latency_ms: float | None,
    status: int | None,
    reason: str | None,
    trace_id: str | None,
) -> str:
    """One access record's line, newline included."""
    # Assembled from escaped pieces rather than a dict through `json.dumps`: a record per
    # request, and this was a tenth of a small call's CPU. Same fields, order and escaping.
    line = (
        f'{{"ts":"{_timestamp(now)}","logger":"{AccessLog.NAME}",'
        f'"id":{_text(request_id.decode("utf-8", "replace") if request_id is not None else None)},'
        f'"principal":{_text(principal)},"via":{_text(via)},"view":{_text(view)},'
        f'"face":{_text(face)},"era":{_text(era)},"method":{_text(method, METHOD_CHARS)},'
        f'"backend":{_text(backend)},"target":{_text(target)},'
        f'"decision":"{decision if decision in DECISIONS else "error"}",'
        f'"outcome":{outcome if type(outcome) is int else _text(str(outcome))}'
    )
    if issuer is not None:
        line += f',"issuer":{_text(issuer)}'
        if principal is not None:
            # The qualified principal, as sessions, quotas and audit key on it.
            line += f',"principal_key":{_text(f"{issuer}#{principal}")}'
    if status is not None:
        line += f',"status":{int(status)}'
    if reason is not None:
        line += f',"reason":{_text(reason)}'
    if latency_ms is not None:
        line += f',"latency_ms":{round(latency_ms, 3)!r}'
    if trace_id is not None:
        line += f',"trace_id":{_text(trace_id, 64)}'
    return line + "}\n"


def _text(value: str | None, limit: int = FIELD_CHARS) -> str:
    """A JSON string (or null), capped, with every control, non-ASCII or line-separating
    character escaped (`ensure_ascii`): no value can end a record or start a forged one."""
    if value is None:
        return "null"
    if len(value) > limit:
        value = capped(value, limit) or ""
    return _escape(value)


def decisions_wanted() -> bool:
    """Whether a decision record goes anywhere (the access log or a sink)."""
    return access_log.enabled or decisions.wanted()


access_log = AccessLog()


def setup(level: str, path: str | None) -> BufferedHandler:
    """Route every logger to one buffered handler at `level` (stderr unless `path`)."""
    # The stream lives as long as the process: no context manager can own it.
    target: str | int = path if path else sys.stderr.fileno()
    stream: TextIO = open(  # noqa: SIM115
        target, "a", encoding="utf-8", buffering=BUFFER_BYTES, closefd=bool(path)
    )
    handler = BufferedHandler(stream)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    chosen.level = level

    def flusher() -> None:
        while True:
            time.sleep(FLUSH_S)
            handler.flush_now()

    threading.Thread(target=flusher, name="log-flusher", daemon=True).start()
    access_log.attach(handler)
    atexit.register(handler.flush_now)
    return handler


class _Chosen:
    """The log level and format in force, and which of them the command line fixed."""

    def __init__(self) -> None:
        self.level = "info"
        self.format = "text"
        self.pinned_level: str | None = None
        self.pinned_format: str | None = None


chosen = _Chosen()


def pin(level: str | None, fmt: str | None) -> None:
    """What `--log-level` / `--log-format` set: the config file's `logging:` does not override
    it, at start or on a reload."""
    chosen.pinned_level = level
    chosen.pinned_format = fmt


def _wanted(level: str | None, fmt: str) -> tuple[str, str]:
    return chosen.pinned_level or level or "info", chosen.pinned_format or fmt


def pending(level: str | None, fmt: str) -> list[str]:
    """What `configure(level, fmt)` would change, as `key: old -> new` phrases."""
    want_level, want_format = _wanted(level, fmt)
    out = []
    if want_level != chosen.level:
        out.append(f"log level: {chosen.level} -> {want_level}")
    if want_format != chosen.format:
        out.append(f"log format: {chosen.format} -> {want_format}")
    return out


def configure(level: str | None, fmt: str) -> None:
    """Apply the config file's `logging.level` (None: info) and `logging.format`, except where
    the command line pinned them."""
    want_level, want_format = _wanted(level, fmt)
    if want_level != chosen.level:
        logging.getLogger().setLevel(want_level.upper())
        chosen.level = want_level
    if want_format != chosen.format:
        use_format(want_format)
        chosen.format = want_format
