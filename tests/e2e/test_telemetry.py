"""Observing a running gateway: Prometheus metrics scraped and parsed as Prometheus does, under
load from 1,000 principals; traces exported over OTLP/HTTP to a real receiver, one trace id
from the client through the gateway to a stdio and an HTTP backend and back; access records
carrying the trace id."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_stdio_face import stdio_gateway
from tests.harness import (
    FIXTURES,
    PYTHON,
    ROOT,
    Gateway,
    free_port,
    http_get,
    register_secret,
    start_gateway,
    start_port_fixture,
)
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ISSUER = "https://issuer.telemetry.test"
PRINCIPALS = 1000
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"


# -- an OTLP/HTTP receiver -------------------------------------------------------------------


class OtlpReceiver:
    """Accepts OTLP/HTTP JSON trace exports on 127.0.0.1, as a collector would."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path == "/v1/traces":
                    receiver.content_types.append(self.headers.get("Content-Type", ""))
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def spans(self) -> list[dict[str, Any]]:
        return [
            span
            for body in list(self.bodies)
            for resource in body["resourceSpans"]
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]

    async def trace(self, trace_id: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [s for s in self.spans() if s["traceId"] == trace_id]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"{len(found)} spans of trace {trace_id} arrived: {found}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("traced")
    receiver = OtlpReceiver()
    headers_file = tmp / "web-headers.jsonl"
    web, web_port = start_port_fixture(
        [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", "0", "--name", "web"],
        "sdk-http-traced",
        env={"FIXTURE_TRACE_TOOL": "1", "FIXTURE_HEADERS_FILE": str(headers_file)},
    )
    config = {
        "tracing": {"enabled": True, "otlp_endpoint": receiver.url},
        "servers": {
            "web": {"url": f"http://127.0.0.1:{web_port}/mcp"},
            "local": {
                "command": PYTHON,
                "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "local"],
                "env": {"FIXTURE_TRACE_TOOL": "1"},
            },
        },
    }
    gw = start_gateway(config, tmp)
    try:
        gw.wait_backend("web")
        gw.wait_backend("local")
        yield {"gw": gw, "receiver": receiver, "headers": headers_file}
    finally:
        gw.stop()
        web.stop()
        receiver.close()


def _headers_seen(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [{k.lower(): v for k, v in json.loads(line)["headers"]} for line in lines]


@pytest.mark.parametrize(
    ("backend", "carrier", "era"),
    [
        ("local", "header", "legacy"),
        ("local", "meta", "modern"),
        ("web", "header", "legacy"),
        ("web", "meta", "modern"),
    ],
)
async def test_one_trace_from_client_through_gateway_to_backend_and_back(
    traced: dict[str, Any], http: aiohttp.ClientSession, backend: str, carrier: str, era: str
) -> None:
    gw: Gateway = traced["gw"]
    receiver: OtlpReceiver = traced["receiver"]
    trace_id = f"{abs(hash((backend, carrier, time.time_ns()))):032x}"[-32:]
    client_span = "00f067aa0ba902b7"
    traceparent = f"00-{trace_id}-{client_span}-01"
    tracestate = "vendor=opaque,tenant@other=x y"
    tool = f"{backend}_trace_context"
    params: dict[str, Any] = {"name": tool, "arguments": {}}
    extra: dict[str, str] = {}
    if carrier == "header":
        extra["traceparent"] = traceparent
        extra["tracestate"] = tracestate
    else:
        params["_meta"] = {"traceparent": traceparent, "tracestate": tracestate}
    client = await RawClient(gw.url, http, era=era, extra_headers=extra).open()
    result = await client.result("tools/call", params, request_id=7)
    assert result.get("isError") is not True, result
    seen = json.loads(result["content"][0]["text"])

    # The backend was handed the same trace, with the gateway's upstream span as its parent.
    version, seen_trace, seen_parent, flags = seen["traceparent"].split("-")
    assert (version, seen_trace, flags) == ("00", trace_id, "01")
    assert seen_parent != client_span
    # The caller's tracestate went on with it, whichever way it came, in `_meta`...
    assert seen["tracestate"] == tracestate
    if backend == "web":
        # ...and to an HTTP backend as headers too, in either era.
        sent = [h for h in _headers_seen(traced["headers"]) if h.get("traceparent")]
        mine = [h for h in sent if h["traceparent"] == seen["traceparent"]]
        assert len(mine) == 1 and mine[0]["tracestate"] == tracestate

    # A legacy client's initialize carried the header too: its span is in the trace as well.
    spans = await receiver.trace(trace_id, 3 if carrier == "header" and era == "legacy" else 2)
    server = [s for s in spans if s["kind"] == 2 and s["name"].startswith("tools/call")]
    upstream = [s for s in spans if s["kind"] == 3]
    assert len(server) == 1 and len(upstream) == 1, spans
    assert server[0]["parentSpanId"] == client_span
    assert upstream[0]["parentSpanId"] == server[0]["spanId"]
    assert upstream[0]["spanId"] == seen_parent
    assert server[0]["traceState"] == upstream[0]["traceState"] == tracestate
    assert server[0]["name"] == f"tools/call {tool}"
    assert upstream[0]["name"] == "tools/call trace_context"
    attributes = _attributes(server[0])
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == tool
    assert attributes["switchyard.backend"] == backend
    assert attributes["jsonrpc.request.id"] == "7"
    assert _attributes(upstream[0])["server.address"] == backend
    assert int(server[0]["startTimeUnixNano"]) <= int(upstream[0]["startTimeUnixNano"])
    assert int(upstream[0]["endTimeUnixNano"]) <= int(server[0]["endTimeUnixNano"])
    assert all(t == "application/json" for t in receiver.content_types)

    # The access record names the same trace.
    lines = await gw.log_lines(f'"trace_id":"{trace_id}"')
    records = [json.loads(line[line.index("{") :]) for line in lines]
    record = next(r for r in records if r["method"] == "tools/call")
    assert record["method"] == "tools/call" and record["target"] == tool
    assert record["outcome"] == "ok" and record["latency_ms"] > 0


@pytest.mark.parametrize(("backend", "carrier"), [("local", "meta"), ("web", "header")])
async def test_an_invalid_tracestate_is_dropped_whole_and_the_trace_still_continues(
    traced: dict[str, Any], http: aiohttp.ClientSession, backend: str, carrier: str
) -> None:
    gw: Gateway = traced["gw"]
    trace_id = f"{abs(hash((backend, 'bad-state', time.time_ns()))):032x}"[-32:]
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    invalid = "ok=1,Upper=2"  # keys are lower case: the whole list is invalid
    params: dict[str, Any] = {"name": f"{backend}_trace_context", "arguments": {}}
    extra: dict[str, str] = {}
    if carrier == "header":
        extra = {"traceparent": traceparent, "tracestate": invalid}
    else:
        params["_meta"] = {"traceparent": traceparent, "tracestate": invalid}
    client = await RawClient(gw.url, http, era="modern", extra_headers=extra).open()
    seen = json.loads((await client.result("tools/call", params))["content"][0]["text"])
    assert seen["traceparent"].split("-")[1] == trace_id
    assert seen["tracestate"] is None
    if backend == "web":
        sent = [h for h in _headers_seen(traced["headers"]) if h.get("traceparent")]
        mine = [h for h in sent if h["traceparent"] == seen["traceparent"]]
        assert len(mine) == 1 and "tracestate" not in mine[0]
    spans = await traced["receiver"].trace(trace_id, 2)
    assert all("traceState" not in s for s in spans), spans


async def test_a_request_without_trace_context_starts_a_trace_the_backend_continues(
    traced: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = traced["gw"]
    client = await RawClient(gw.url, http, era="modern").open()
    result = await client.result("tools/call", {"name": "local_trace_context", "arguments": {}})
    _, trace_id, parent, _ = json.loads(result["content"][0]["text"])["traceparent"].split("-")
    spans = await traced["receiver"].trace(trace_id, 2)
    server = next(s for s in spans if s["kind"] == 2)
    assert "parentSpanId" not in server
    assert next(s for s in spans if s["kind"] == 3)["spanId"] == parent


# -- metrics under load from 1,000 principals ----------------------------------------------


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("measured")
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    port = free_port()
    config = {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(tmp / "keys"),
            "issuers": [
                {"issuer": ISSUER, "static_keys": [public.decode()], "algorithms": ["ES256"]}
            ],
            "rules": [{"effect": "allow", "roles": ["user"]}],
        },
        "rate_limits": {
            "rules": [
                {"name": "generous", "windows": [{"period": "minute", "max": 100000}]},
            ]
        },
        "servers": {
            "fx": {"command": PYTHON, "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "fx"]},
        },
    }
    gw = start_gateway(config, tmp, port=port)
    try:
        gw.wait_backend("fx")
        yield {"gw": gw, "key": key}
    finally:
        gw.stop()


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def _token(key: ec.EllipticCurvePrivateKey, subject: str, audience: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + 600,
        "roles": ["user"],
    }
    return register_secret(jwt.encode(claims, key, algorithm="ES256"))


def _series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by Prometheus's own parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def _scrape(http: aiohttp.ClientSession, gw: Gateway, token: str) -> str:
    async with http.get(f"{gw.base}/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await resp.text()


async def test_metrics_stay_bounded_for_1000_principals_under_load(
    measured: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = measured["gw"]
    subjects = [f"principal-{i:04d}" for i in range(PRINCIPALS)]
    tokens = [_token(measured["key"], s, gw.url) for s in subjects]
    gate = asyncio.Semaphore(16)
    outcomes: dict[str, int] = {"ok": 0, "unknown": 0}

    async def calls(token: str, i: int) -> None:
        async with gate:
            client = RawClient(
                gw.url, http, era="modern", extra_headers={"Authorization": f"Bearer {token}"}
            )
            result = await client.result(
                "tools/call", {"name": "fx_echo", "arguments": {"text": str(i)}}
            )
            assert result["content"][0]["text"] == str(i)
            outcomes["ok"] += 1
            # A name no catalog lists (a client can send any string) never becomes a label.
            resp = await client.request("tools/call", {"name": f"made-up-{i}", "arguments": {}})
            assert "error" in resp.json or resp.json["result"].get("isError"), resp.json
            outcomes["unknown"] += 1

    scraper = tokens[0]
    await asyncio.gather(*(calls(t, i) for i, t in enumerate(tokens[:100])))
    early = _series(await _scrape(http, gw, scraper))

    async def scrape_during() -> list[str]:
        texts = []
        for _ in range(10):
            texts.append(await _scrape(http, gw, scraper))
            await asyncio.sleep(0.05)
        return texts

    load = asyncio.gather(*(calls(t, i) for i, t in enumerate(tokens[100:], start=100)))
    during, _ = await asyncio.gather(scrape_during(), load)
    for text in during:
        _series(text)  # every scrape under load parses
    late = _series(await _scrape(http, gw, scraper))

    assert outcomes == {"ok": PRINCIPALS, "unknown": PRINCIPALS}
    # The series are the same after 100 principals and after 1,000: nothing grows with callers.
    assert set(late) == set(early), set(late) ^ set(early)
    assert len(late) < 400
    text = await _scrape(http, gw, scraper)
    for subject in subjects[::50]:
        assert subject not in text
    assert "made-up" not in text

    echo = (
        ("error_type", ""),
        ("gen_ai_tool_name", "fx_echo"),
        ("mcp_method_name", "tools/call"),
        ("switchyard_backend", "fx"),
    )
    assert late[("mcp_server_operation_duration_seconds_count", echo)] == PRINCIPALS
    unknown = [
        (labels, value)
        for (name, labels), value in late.items()
        if name == "mcp_server_operation_duration_seconds_count"
        and dict(labels)["gen_ai_tool_name"] == ""
        and dict(labels)["mcp_method_name"] == "tools/call"
    ]
    assert sum(v for _, v in unknown) == PRINCIPALS
    assert all(dict(labels)["error_type"] == "-32602" for labels, _ in unknown), unknown
    upstream = (("error_type", ""), ("mcp_method_name", "tools/call"), ("switchyard_backend", "fx"))
    assert late[("mcp_client_operation_duration_seconds_count", upstream)] == PRINCIPALS
    assert late[("switchyard_backend_up", (("switchyard_backend", "fx"),))] == 1
    assert late[("switchyard_stdio_processes", (("switchyard_backend", "fx"),))] >= 1
    assert late[("switchyard_requests_in_flight", ())] >= 0
    assert late[("switchyard_build_info", (("version", "0.1.0"),))] == 1
    closed = (("endpoint", "0"), ("state", "closed"), ("switchyard_backend", "fx"))
    assert late[("switchyard_backend_breaker_state", closed)] == 1


async def test_metrics_need_a_credential_when_authentication_is_on(
    measured: dict[str, Any],
) -> None:
    gw: Gateway = measured["gw"]
    status, body = await asyncio.to_thread(http_get, f"{gw.base}/metrics")
    assert status == 401 and b"mcp_" not in body
    # The refusal is counted (and logged) like any other.
    token = _token(measured["key"], "refusal-check", gw.url)
    async with aiohttp.ClientSession() as http:
        refusals = _series(await _scrape(http, gw, token))
    assert refusals[("switchyard_http_refusals_total", (("status", "401"),))] >= 1


async def test_the_dashboard_queries_only_exported_metrics(
    measured: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = measured["gw"]
    token = _token(measured["key"], "dashboard-check", gw.url)
    client = RawClient(
        gw.url, http, era="modern", extra_headers={"Authorization": f"Bearer {token}"}
    )
    await client.result("tools/call", {"name": "fx_echo", "arguments": {"text": "x"}})
    parsed = list(text_string_to_metric_families(await _scrape(http, gw, token)))
    samples = {s.name for f in parsed for s in f.samples}
    # A family with no sample yet (a feature that is off) is still declared, with its type.
    declared = {f.name + suffix for f in parsed for suffix in _SUFFIXES.get(f.type, ("",))}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    for expr in exprs:
        # Metric names: what is left once label matchers and `by (...)` lists are taken out.
        bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", re.sub(r"\{[^}]*\}", "", expr))
        names = set(re.findall(r"\b((?:mcp|switchyard)_[a-z_]+)", bare))
        assert names, expr
        missing = {n for n in names if n not in samples and n not in declared}
        assert not missing, (expr, missing)


# -- a listener of their own; JSON log lines -------------------------------------------------


async def test_metrics_on_their_own_listener_and_json_log_lines(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    metrics_port = free_port()
    config = {
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "logging": {"format": "json", "backend_stderr_level": "warning"},
        "servers": {
            "fx": {"command": PYTHON, "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "fx"]},
        },
    }
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("fx")
        client = await RawClient(gw.url, http, era="modern").open()
        await client.result("tools/call", {"name": "fx_echo", "arguments": {"text": "hi"}})
        status, _ = await asyncio.to_thread(http_get, f"{gw.base}/metrics")
        assert status == 404  # not on the main port once it has its own
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        samples = _series(body.decode())
        echo = (
            ("error_type", ""),
            ("gen_ai_tool_name", "fx_echo"),
            ("mcp_method_name", "tools/call"),
            ("switchyard_backend", "fx"),
        )
        assert samples[("mcp_server_operation_duration_seconds_count", echo)] == 1
        status, _ = await asyncio.to_thread(http_get, f"http://127.0.0.1:{metrics_port}/other")
        assert status == 404
        # The gateway's own lines are JSON objects; the stdio server's stderr is at WARNING.
        lines = await gw.log_lines("FIXTURE READY")
        line = json.loads(lines[0])
        assert line["level"] == "WARNING" and line["logger"] == "switchyard.upstream.stdio"
        assert "backend 'fx' stderr: FIXTURE READY" in line["message"]
        started = json.loads((await gw.log_lines("gateway started"))[0])
        assert started["level"] == "INFO"
    finally:
        gw.stop()


async def test_tool_errors_are_counted_for_every_pair_of_eras(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """`isError` results count as `tool_error`, whichever era the client and the backend speak:
    where the gateway already decoded a result to translate it, that decode decides; elsewhere
    the result is read for it. Two clients of each era call at once."""
    config = {
        "servers": {
            "sdk": {"command": PYTHON, "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "sdk"]},
            "rich": {
                "command": PYTHON,
                "args": [str(FIXTURES / "raw_stdio.py"), "--scenario", "rich"],
            },
        },
    }
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("sdk")
        gw.wait_backend("rich")

        async def calls(era: str) -> None:
            client = await RawClient(gw.url, http, era=era).open()
            ok = await client.result("tools/call", {"name": "sdk_echo", "arguments": {"text": "x"}})
            assert ok.get("isError") is not True and ok["content"][0]["text"] == "x", ok
            bad = {"name": "sdk_add", "arguments": {"a": "not a number", "b": 1}}
            assert (await client.result("tools/call", bad))["isError"] is True
            legacy = await client.result("tools/call", {"name": "rich_everything", "arguments": {}})
            assert legacy["isError"] is True

        await asyncio.gather(*(calls(era) for era in ("legacy", "modern", "legacy", "modern")))
        status, body = await asyncio.to_thread(http_get, f"{gw.base}/metrics")
        assert status == 200
        samples = _series(body.decode())

        def count(tool: str, error: str) -> float:
            labels = (
                ("error_type", error),
                ("gen_ai_tool_name", tool),
                ("mcp_method_name", "tools/call"),
                ("switchyard_backend", tool.split("_")[0]),
            )
            return samples.get(("mcp_server_operation_duration_seconds_count", labels), 0)

        assert count("sdk_echo", "") == 4 and count("sdk_echo", "tool_error") == 0
        assert count("sdk_add", "tool_error") == 4 and count("sdk_add", "") == 0
        assert count("rich_everything", "tool_error") == 4 and count("rich_everything", "") == 0
    finally:
        gw.stop()


async def test_switchyard_stdio_traces_through_meta_and_serves_metrics_on_its_listener(
    tmp_path: Path,
) -> None:
    receiver = OtlpReceiver()
    metrics_port = free_port()
    config = {
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "tracing": {"enabled": True, "otlp_endpoint": receiver.url},
        "servers": {
            "local": {
                "command": PYTHON,
                "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "local"],
                "env": {"FIXTURE_TRACE_TOOL": "1"},
            },
        },
    }
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    try:
        async with stdio_gateway(tmp_path, config) as client:
            await client.initialize()
            answer, _ = await client.until_answer(
                await client.request(
                    "tools/call",
                    {
                        "name": "local_trace_context",
                        "arguments": {},
                        "_meta": {
                            "traceparent": f"00-{trace_id}-b7ad6b7169203331-01",
                            "tracestate": "congo=t61rcWkgMzE",
                        },
                    },
                )
            )
            context = json.loads(answer["result"]["content"][0]["text"])
            seen = context["traceparent"]
            assert seen.startswith(f"00-{trace_id}-") and "b7ad6b7169203331" not in seen
            assert context["tracestate"] == "congo=t61rcWkgMzE"
            spans = await receiver.trace(trace_id, 2)
            server = next(s for s in spans if s["kind"] == 2)
            assert server["parentSpanId"] == "b7ad6b7169203331"
            assert {s["traceState"] for s in spans} == {"congo=t61rcWkgMzE"}
            assert next(s for s in spans if s["kind"] == 3)["spanId"] == seen.split("-")[2]
            status, body = await asyncio.to_thread(
                http_get, f"http://127.0.0.1:{metrics_port}/metrics"
            )
            assert status == 200
            call = (
                ("error_type", ""),
                ("gen_ai_tool_name", "local_trace_context"),
                ("mcp_method_name", "tools/call"),
                ("switchyard_backend", "local"),
            )
            assert (
                _series(body.decode())[("mcp_server_operation_duration_seconds_count", call)] == 1
            )
    finally:
        receiver.close()
