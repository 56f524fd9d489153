"""The pieces of metrics, tracing and structured logs, in process: exposition parsed by
Prometheus's own parser, bounded labels, trace context in and out, the OTLP exporter against a
real HTTP receiver on 127.0.0.1, and the access line's trace id and qualified principal."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.config.reload import restart_only_changes
from switchyard.config.schema import SwitchyardConfig
from switchyard.observability import logging as access
from switchyard.observability.logging import BufferedHandler, JsonFormatter
from switchyard.observability.metrics import MAX_TOOLS, Metrics, error_type
from switchyard.observability.settings import ObservabilitySettings, changes
from switchyard.observability.trace_context import tracestate
from switchyard.observability.tracing import (
    Tracer,
    TracingSettings,
    meta_context,
    with_trace_meta,
)
from switchyard.wire import frame
from switchyard.wire.frame import Raw
from tests.access_lines import DrainedStream

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = "".join(m.render())
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_histograms_parse_as_prometheus_reads_them() -> None:
    m = Metrics()
    for seconds in (0.004, 0.03, 0.03, 7.0, 400.0):
        m.request("tools/call", "search", "github", "", seconds)
    m.request("tools/call", "search", "github", "tool_error", 0.2)
    m.upstream("github", "tools/call", "-32001", 0.5)
    samples = _samples(m)
    ok = (
        ("error_type", ""),
        ("gen_ai_tool_name", "search"),
        ("mcp_method_name", "tools/call"),
        ("switchyard_backend", "github"),
    )
    name = "mcp_server_operation_duration_seconds"
    assert samples[(f"{name}_count", ok)] == 5
    assert samples[(f"{name}_sum", ok)] == pytest.approx(407.064)
    assert samples[(f"{name}_bucket", (*ok[:2], ("le", "0.01"), *ok[2:]))] == 1
    assert samples[(f"{name}_bucket", (*ok[:2], ("le", "0.05"), *ok[2:]))] == 3
    assert samples[(f"{name}_bucket", (*ok[:2], ("le", "10.0"), *ok[2:]))] == 4
    assert samples[(f"{name}_bucket", (*ok[:2], ("le", "+Inf"), *ok[2:]))] == 5
    tool_error = (("error_type", "tool_error"), *ok[1:])
    assert samples[(f"{name}_count", tool_error)] == 1
    upstream = (
        ("error_type", "-32001"),
        ("mcp_method_name", "tools/call"),
        ("switchyard_backend", "github"),
    )
    assert samples[("mcp_client_operation_duration_seconds_count", upstream)] == 1


def test_labels_stay_bounded_whatever_callers_send() -> None:
    m = Metrics()
    for i in range(MAX_TOOLS + 50):
        m.request("tools/call", f"tool-{i}", "b", "", 0.01)
    for i in range(50):
        m.request(f"made/up/{i}", None, None, "-32601", 0.01)
    tools = {
        dict(labels)["gen_ai_tool_name"]
        for (name, labels) in _samples(m)
        if name == "mcp_server_operation_duration_seconds_count"
    }
    assert len(tools) == MAX_TOOLS + 2  # the first MAX_TOOLS, `other`, and "" (no tool)
    assert "other" in tools and f"tool-{MAX_TOOLS}" not in tools
    methods = {
        dict(labels)["mcp_method_name"]
        for (name, labels) in _samples(m)
        if name == "mcp_server_operation_duration_seconds_count"
    }
    assert methods == {"tools/call", "other"}


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.request("tools/call", 'a"b\\c\nd', "b", "", 0.01)
    tools = {dict(labels).get("gen_ai_tool_name") for (_, labels) in _samples(m)}
    assert 'a"b\\c\nd' in tools


def test_error_types() -> None:
    assert error_type("ok") == ""
    assert error_type("isError") == "tool_error"
    assert error_type(-32602) == "-32602"
    assert error_type("cancelled") == "cancelled"


# -- tracing ---------------------------------------------------------------------------------


def test_a_valid_traceparent_is_continued_and_an_invalid_one_starts_a_trace() -> None:
    tracer = Tracer()
    span = tracer.server_span("tools/call", PARENT, "k=v")
    assert span.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_id == "00f067aa0ba902b7"
    assert span.sampled and span.tracestate == "k=v"
    assert span.traceparent == f"00-{span.trace_id}-{span.span_id}-01"
    unsampled = tracer.server_span("tools/call", PARENT[:-2] + "00", None)
    assert not unsampled.sampled and unsampled.traceparent.endswith("-00")
    for bad in ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage", PARENT + "x", None):
        fresh = tracer.server_span("ping", bad, "k=v")
        assert fresh.parent_id is None and fresh.tracestate is None
        assert len(fresh.trace_id) == 32 and fresh.trace_id != "0" * 32
    child = tracer.client_span(span, "tools/call", "github", "search")
    assert (child.trace_id, child.parent_id) == (span.trace_id, span.span_id)
    assert child.name == "tools/call search" and child.span_id != span.span_id


def test_trace_context_goes_into_meta_beside_what_is_there() -> None:
    span = Tracer().server_span("tools/call", PARENT, "k=v")
    fields = {
        "name": Raw(b'"t"'),
        "_meta": Raw(b'{"progressToken":5,"traceparent":"old","tracestate":"x=y"}'),
    }
    out = with_trace_meta(fields, span)
    meta = frame.decode_any(out["_meta"])
    assert meta == {"progressToken": 5, "traceparent": span.traceparent, "tracestate": "k=v"}
    assert bytes(out["name"]) == b'"t"'
    assert meta_context(out) == (span.traceparent, "k=v")
    bare = with_trace_meta({"name": Raw(b'"t"')}, Tracer().server_span("ping", None, None))
    assert set(frame.decode_any(bare["_meta"])) == {"traceparent"}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("k=v", "k=v"),
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        # Optional whitespace around members and empty members are allowed, and dropped.
        (" rojo=1 ,\t, congo=2\t", "rojo=1,congo=2"),
        ("tenant1@vendor=x,a_b-c*d/e=y", "tenant1@vendor=x,a_b-c*d/e=y"),
        ("k=with space inside", "k=with space inside"),
        ("k=trailing \t", "k=trailing"),  # the blank after a value is the list's whitespace
        ("k=" + "v" * 256, "k=" + "v" * 256),
        (",".join(f"k{i}=v" for i in range(32)), ",".join(f"k{i}=v" for i in range(32))),
        (" , ", None),
        ("", None),
        (None, None),
        # Invalid: the whole list is dropped, never a part of it or a raw copy.
        (",".join(f"k{i}=v" for i in range(33)), None),  # 33 members
        ("k=" + "v" * 511, None),  # over 512 characters
        ("k=" + "v" * 257, None),  # a value over 256 characters
        ("Upper=v", None),  # keys are lower case
        ("1key=v", None),  # a simple key starts with a letter
        ("k" * 257 + "=v", None),  # a key over 256 characters
        ("t@" + "s" * 15 + "=v", None),  # a system id over 14 characters
        ("t@1sys=v", None),  # a system id starts with a letter
        ("k=v,k=w", None),  # a key twice
        ("k=v=w", None),  # `=` is not a value character
        ("k=", None),  # an empty value
        ("novalue", None),
        ("k=caf\u00e9", None),  # printable ASCII only
        ("k=v\nx=y", None),  # no line breaks
    ],
)
def test_tracestate_is_kept_only_when_valid_and_normalised(
    sent: str | None, kept: str | None
) -> None:
    assert tracestate(sent) == kept


def test_a_span_keeps_a_valid_tracestate_and_drops_an_invalid_one_whole() -> None:
    tracer = Tracer()
    assert tracer.server_span("ping", PARENT, "a=1, b=2").tracestate == "a=1,b=2"
    dropped = tracer.server_span("ping", PARENT, "a=1,B=2")
    assert dropped.tracestate is None and dropped.parent_id == "00f067aa0ba902b7"
    assert tracer.server_span("ping", PARENT, "a=" + "x" * 600).tracestate is None
    # A tracestate that is not a string is no tracestate; the traceparent beside it stands.
    odd = {"_meta": Raw(b'{"traceparent":"%s","tracestate":7}' % PARENT.encode())}
    assert meta_context(odd) == (PARENT, None)
    # Dropped from the meta handed on, too (the caller's raw value never goes further).
    out = with_trace_meta({"_meta": Raw(b'{"tracestate":"a=1,B=2"}')}, dropped)
    assert set(frame.decode_any(out["_meta"])) == {"traceparent"}


class _Receiver:
    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_spans_are_exported_as_otlp_json(receiver: _Receiver) -> None:
    tracer = Tracer()
    tracer.configure(TracingSettings(enabled=True, endpoint=receiver.url, flush_s=0.05))
    try:
        server = tracer.server_span("tools/call", PARENT, "rojo=1,congo=2")
        client = tracer.client_span(server, "tools/call", "b", "t")
        client.fail("-32001")
        tracer.end(client)
        tracer.end(server)
        unsampled = tracer.server_span("tools/call", PARENT[:-2] + "00", None)
        tracer.end(unsampled)
        _wait(lambda: sum(len(_spans(b)) for b in receiver.bodies) >= 2)
    finally:
        tracer.close()
    spans = [s for b in receiver.bodies for s in _spans(b)]
    assert len(spans) == 2  # the unsampled one is not sent
    by_kind = {s["kind"]: s for s in spans}
    assert by_kind[2]["parentSpanId"] == "00f067aa0ba902b7"
    assert by_kind[3]["parentSpanId"] == by_kind[2]["spanId"]
    assert by_kind[3]["status"] == {"code": 2}
    assert by_kind[2]["traceState"] == by_kind[3]["traceState"] == "rojo=1,congo=2"
    resource = receiver.bodies[0]["resourceSpans"][0]["resource"]["attributes"]
    assert resource == [{"key": "service.name", "value": {"stringValue": "switchyard"}}]


def test_a_failing_collector_costs_dropped_spans_not_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = _Receiver(status=500)
    tracer = Tracer()
    url = failing.url + "?token=s3cret-value"
    tracer.configure(TracingSettings(enabled=True, endpoint=url, flush_s=0.05))
    try:
        with caplog.at_level(logging.WARNING, logger="switchyard.tracing"):
            tracer.end(tracer.server_span("ping", None, None))
            _wait(lambda: tracer.dropped == 1)
    finally:
        tracer.close()
        failing.close()
    assert "HTTP 500" in caplog.text and "s3cret" not in caplog.text


# -- log lines -------------------------------------------------------------------------------


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = DrainedStream()
    logger = logging.getLogger(access.AccessLog.NAME)
    level = logger.level
    logger.setLevel(logging.INFO)
    saved = access.access_log._handler, access.access_log.enabled
    access.access_log.attach(BufferedHandler(out))
    try:
        yield out
    finally:
        access.access_log._handler, access.access_log.enabled = saved
        logger.setLevel(level)


def test_the_access_line_carries_the_qualified_principal_and_trace_id(
    stream: io.StringIO,
) -> None:
    access.write_decision(
        decision="allow",
        outcome="ok",
        method="tools/call",
        principal="alice",
        issuer="https://idp.example",
        view="team",
        target="t",
        latency_ms=1.5,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )
    record = json.loads(stream.getvalue())
    assert record["principal"] == "alice"
    assert record["principal_key"] == "https://idp.example#alice"
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (record["view"], record["method"], record["target"]) == ("team", "tools/call", "t")
    assert (record["outcome"], record["latency_ms"]) == ("ok", 1.5)


def test_json_log_lines_are_one_escaped_object() -> None:
    record = logging.LogRecord(
        "switchyard.x",
        logging.WARNING,
        __file__,
        1,
        "backend %r said %s",
        ("b", "a\nb\x1b[2J"),
        None,
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING" and parsed["logger"] == "switchyard.x"
    assert parsed["message"] == "backend 'b' said a\nb\x1b[2J"


def _spans(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for r in body["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]


def test_which_observability_keys_a_reload_applies_and_how_it_says_so() -> None:
    base = SwitchyardConfig.model_validate({})
    reloadable = SwitchyardConfig.model_validate(
        {
            "metrics": {"enabled": False},
            "tracing": {"enabled": True, "otlp_endpoint": "http://c:4318/v1/traces?k=secret"},
            "logging": {"format": "json", "level": "debug"},
        }
    )
    assert restart_only_changes(base, reloadable) == []
    listening = SwitchyardConfig.model_validate({"metrics": {"listen": "127.0.0.1:9464"}})
    assert restart_only_changes(base, listening) == ["metrics.listen"]
    off = SwitchyardConfig.model_validate(
        {"metrics": {"listen": "127.0.0.1:9464", "enabled": False}}
    )
    assert restart_only_changes(listening, off) == ["metrics.enabled (with metrics.listen)"]
    stderr = SwitchyardConfig.model_validate({"logging": {"backend_stderr_level": "debug"}})
    assert restart_only_changes(base, stderr) == ["logging.backend_stderr_level"]

    old = ObservabilitySettings(metrics=True)
    new = ObservabilitySettings(
        metrics=False,
        tracing=TracingSettings(
            enabled=True, endpoint="https://user:pw@c.example:4318/v1/traces?k=s", sample_ratio=0.25
        ),
    )
    assert changes(old, new) == [
        "metrics: on -> off",
        "tracing: off -> on",
        "tracing.otlp_endpoint: none -> https://c.example:4318",
        "tracing.sample_ratio: 1 -> 0.25",
    ]
    assert changes(new, new) == []


def test_a_new_exporter_takes_the_spans_that_end_after_the_swap(receiver: _Receiver) -> None:
    other = _Receiver()
    tracer = Tracer()
    tracer.configure(TracingSettings(enabled=True, endpoint=receiver.url, flush_s=0.05))
    try:
        before = tracer.server_span("ping", PARENT, None)
        tracer.end(before)
        started = tracer.server_span("tools/call", PARENT, None)
        tracer.configure(TracingSettings(enabled=True, endpoint=other.url, flush_s=0.05))
        tracer.end(started)
        _wait(lambda: bool(receiver.bodies) and bool(other.bodies))
    finally:
        tracer.close()
        other.close()
    assert [s["spanId"] for b in receiver.bodies for s in _spans(b)] == [before.span_id]
    assert [s["spanId"] for b in other.bodies for s in _spans(b)] == [started.span_id]


def test_the_command_lines_log_level_and_format_win_over_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(access, "chosen", access._Chosen())
    assert access.pending(None, "text") == []
    assert access.pending("debug", "json") == [
        "log level: info -> debug",
        "log format: text -> json",
    ]
    access.pin("warning", None)
    assert access.pending("debug", "json") == [
        "log level: info -> warning",
        "log format: text -> json",
    ]
    access.pin(None, "text")
    assert access.pending("error", "json") == ["log level: info -> error"]
