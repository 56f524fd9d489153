"""The access record is assembled from escaped pieces: whatever a client or backend puts in a
field, the line is one ASCII JSON object with exactly the fields given (capped), never two."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.observability import logging as access
from switchyard.observability.logging import FIELD_CHARS, METHOD_CHARS, BufferedHandler
from tests.access_lines import DrainedStream


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = DrainedStream()
    handler = BufferedHandler(out)
    logger = logging.getLogger(access.AccessLog.NAME)
    level = logger.level
    logger.setLevel(logging.INFO)
    saved = access.access_log._handler, access.access_log.enabled
    access.access_log.attach(handler)
    try:
        yield out
    finally:
        access.access_log._handler, access.access_log.enabled = saved
        logger.setLevel(level)


def _capped(value: str, limit: int = FIELD_CHARS) -> str:
    return access.capped(value, limit) or ""


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    principal=st.text(),
    method=st.text(max_size=300),
    target=st.one_of(st.none(), st.text(max_size=1500)),
    outcome=st.one_of(st.integers(-40000, 40000), st.text()),
    reason=st.one_of(st.none(), st.text()),
    latency=st.floats(0, 1e6, allow_nan=False),
)
def test_any_field_values_make_exactly_one_json_object_line(
    stream: io.StringIO,
    principal: str,
    method: str,
    target: str | None,
    outcome: int | str,
    reason: str | None,
    latency: float,
) -> None:
    stream.seek(0)
    stream.truncate()
    access.write_decision(
        decision="deny",
        outcome=outcome,
        method=method,
        request_id=b'"r\\n1"',
        principal=principal,
        via="api_key",
        face="streamable-http",
        era="legacy",
        backend="b",
        target=target,
        latency_ms=latency,
        status=403,
        reason=reason,
    )
    text = stream.getvalue()
    assert text.isascii() and text.endswith("\n") and text.count("\n") == 1
    record = json.loads(text)
    expected = {
        "logger": "switchyard.requests",
        "id": '"r\\n1"',
        "principal": _capped(principal),
        "via": "api_key",
        "view": None,
        "face": "streamable-http",
        "era": "legacy",
        "method": _capped(method, METHOD_CHARS),
        "backend": "b",
        "target": None if target is None else _capped(target),
        "decision": "deny",
        "outcome": outcome if isinstance(outcome, int) else _capped(outcome),
        "status": 403,
        "latency_ms": round(latency, 3),
    }
    if reason is not None:
        expected["reason"] = _capped(reason)
    assert {k: v for k, v in record.items() if k != "ts"} == expected
    assert list(record)[:2] == ["ts", "logger"]
