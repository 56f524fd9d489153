"""The access-log record writer the HTTP layer also uses for refusals."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from switchyard.observability.logging import BufferedHandler, access_log, write_decision
from tests.access_lines import DrainedStream


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = DrainedStream()
    logger = logging.getLogger(access_log.NAME)
    level = logger.level
    logger.setLevel(logging.INFO)
    access_log.attach(BufferedHandler(stream))
    try:
        yield stream
    finally:
        logger.setLevel(level)
        access_log.enabled = False
        access_log._handler = None


def test_a_refusal_is_one_json_line_with_every_value_escaped_and_capped(
    log_stream: io.StringIO,
) -> None:
    hostile = "tools/call\r\n2030-01-01 00:00:00,000 ERROR forged\x1b[2J\u2028\x85"
    write_decision(
        decision="deny",
        outcome=401,
        status=401,
        method=hostile,
        request_id=b'"r\\n1"',
        principal="p" * 2000,
        face="streamable-http",
        reason="Invalid API key",
    )
    text = log_stream.getvalue()
    assert text.count("\n") == 1 and text.isascii()
    record = json.loads(text)
    assert record["method"] == hostile  # under the cap: kept whole, decoded back exactly
    assert record["decision"] == "deny" and record["outcome"] == 401 and record["status"] == 401
    assert record["principal"] == "p" * 512 + "…[+1488 chars]"
    assert record["id"] == '"r\\n1"' and record["reason"] == "Invalid API key"
    assert record["ts"].endswith("Z") and "latency_ms" not in record


def test_an_unknown_decision_is_recorded_as_error(log_stream: io.StringIO) -> None:
    write_decision(decision="maybe", outcome="ok")
    assert json.loads(log_stream.getvalue())["decision"] == "error"


def test_nothing_is_written_while_access_logging_is_off() -> None:
    assert not access_log.enabled
    write_decision(decision="allow", outcome="ok")  # no handler, no error


# -- records are formatted in batches; what reaches the stream, and in what order, is unchanged --


@pytest.fixture
def raw_stream() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """A plain stream (reading it drains nothing) behind one handler that both the access log
    and an ordinary logger write through, as `setup` arranges for the gateway's stderr."""
    stream = io.StringIO()
    handler = BufferedHandler(stream)
    access = logging.getLogger(access_log.NAME)
    other = logging.getLogger("switchyard.test-order")
    saved = access.level, other.level, other.handlers[:], other.propagate
    access.setLevel(logging.INFO)
    other.setLevel(logging.INFO)
    other.handlers[:] = [handler]
    other.propagate = False
    access_log.attach(handler)
    try:
        yield stream, other
    finally:
        access_log.drain()
        access.setLevel(saved[0])
        other.setLevel(saved[1])
        other.handlers[:] = saved[2]
        other.propagate = saved[3]
        access_log.enabled = False
        access_log._handler = None


def _ids(text: str) -> list[str]:
    return [json.loads(line)["id"] for line in text.splitlines() if line.startswith("{")]


def test_a_record_goes_out_before_any_log_line_written_after_it(
    raw_stream: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, other = raw_stream
    write_decision(decision="allow", outcome="ok", request_id=b"1")
    write_decision(decision="allow", outcome="ok", request_id=b"2")
    assert stream.getvalue() == ""  # queued, not yet formatted
    other.info("between")
    write_decision(decision="deny", outcome=403, request_id=b"3")
    other.info("after")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5
    assert [json.loads(lines[i])["id"] for i in (0, 1, 3)] == ["1", "2", "3"]
    assert lines[2].endswith("between") and lines[4].endswith("after")


def test_a_flush_writes_every_queued_record(
    raw_stream: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, _ = raw_stream
    handler = access_log._handler
    assert handler is not None
    write_decision(decision="allow", outcome="ok", request_id=b"7")
    handler.flush_now()  # what the flusher thread does every FLUSH_S, and every warning
    assert _ids(stream.getvalue()) == ["7"]


def test_a_full_batch_is_written_without_waiting_for_a_flush(
    raw_stream: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, _ = raw_stream
    for n in range(access_log.BATCH - 1):
        write_decision(decision="allow", outcome="ok", request_id=str(n).encode())
    assert stream.getvalue() == ""
    write_decision(decision="allow", outcome="ok", request_id=b"last")
    assert _ids(stream.getvalue()) == [*map(str, range(access_log.BATCH - 1)), "last"]


def test_records_from_several_threads_are_each_written_once_and_whole(
    raw_stream: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, other = raw_stream
    per_thread = 3 * access_log.BATCH + 17

    def write(name: str) -> None:
        for n in range(per_thread):
            write_decision(decision="allow", outcome="ok", request_id=f"{name}-{n}".encode())
            if n % 97 == 0:
                other.info("%s at %d", name, n)  # drains from this thread too

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b", "c")]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: between a batch's pops and its write
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
    finally:
        sys.setswitchinterval(interval)
    access_log.drain()
    ids = _ids(stream.getvalue())
    assert len(ids) == len(set(ids)) == 3 * per_thread
    for name in ("a", "b", "c"):  # each thread's records in the order it made them
        mine = [int(i.split("-")[1]) for i in ids if i.startswith(f"{name}-")]
        assert mine == list(range(per_thread))
