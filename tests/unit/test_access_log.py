"""The access-log record writer the HTTP layer also uses for refusals."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from switchyard.observability.logging import BufferedHandler, access_log, write_decision


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
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
