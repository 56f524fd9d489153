"""server-everything's client-facing features through Switchyard, for both official SDK clients.

server-everything (the reference server, legacy era) runs behind one gateway over stdio as `ev`.
Sampling, form elicitation, roots, progress, logging, resource subscriptions, completion and
cancellation are driven by the official TypeScript SDK client (tests/node/ts_features.mjs) over
`/mcp`, `/sse` and `switchyard stdio`, and by the official Python SDK client over the same faces
in the legacy era and over `/mcp` in the modern era. Every client answers sampling, elicitation
and roots with fixed values, so what server-everything makes of them is exact; each client is
first run against server-everything directly, and what it sees through Switchyard must match.
(Tasks are test_tasks.py's.)
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import (
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    LoggingLevel,
    LoggingMessageNotificationParams,
    PromptReference,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    Root,
    TextContent,
)

from tests.e2e.test_reference_servers import (
    DYNAMIC_TEXT,
    EVERYTHING,
    NODE,
    STATIC_DOC,
    everything_stdio,
)
from tests.harness import BIN, NODE_DIR, Gateway, create_key, free_port, start_gateway

pytestmark = [
    pytest.mark.e2e,
    # logging/setLevel and resources/subscribe are handshake-era APIs: exactly what is tested.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

TS_FEATURES = NODE_DIR / "ts_features.mjs"
FACES = ["streamable-http", "sse", "stdio"]

# The fixed answers of the clients. The TypeScript ones are ts_features.mjs's constants.
TS_SAMPLED, TS_MODEL = "switchyard sampled this", "ts-fixed-model"
TS_ROOT = Root(uri="file:///srv/switchyard-ts", name="ts-root")
PY_SAMPLED, PY_MODEL = "switchyard sampled this (python)", "py-fixed-model"
PY_ROOT = Root(uri="file:///srv/switchyard-py", name="py-root")
ELICITED = {"name": "Ada Lovelace", "check": True, "email": "ada@example.com", "integer": 7}

# What server-everything makes of them (the direct baselines below check these first).
ELICITATION_REQUEST = {
    "message": "Please provide inputs for the following fields:",
    "properties": [
        "name",
        "check",
        "firstLine",
        "email",
        "homepage",
        "birthdate",
        "integer",
        "number",
        "untitledSingleSelectEnum",
        "untitledMultipleSelectEnum",
        "titledSingleSelectEnum",
        "titledMultipleSelectEnum",
        "legacyTitledEnum",
    ],
    "required": ["name"],
}
ELICITATION_TEXTS = [
    "✅ User provided the requested information!",
    "User inputs:\n- Name: Ada Lovelace\n- Agreed to terms: true\n- Email: ada@example.com\n"
    "- Favorite Integer: 7",
    "\nRaw result: " + json.dumps({"action": "accept", "content": ELICITED}, indent=2),
]
PROGRESS = [(1.0, 2.0), (2.0, 2.0)]  # trigger-long-running-operation, duration 1, steps 2
LONG_RUN_DONE = "Long running operation completed. Duration: 1 seconds, Steps: 2."
COMPLETIONS = {"department": ["Engineering"], "name": ["David", "Eve", "Frank"], "resource": ["42"]}
ROOTS_LOG = {
    "level": "info",
    "logger": "everything-server",
    "data": "Roots updated: 1 root(s) received from client",
}
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
SIMULATED_LOG = re.compile(r"^[A-Z][a-z]+[- ]level[- ]message$")  # toggle-simulated-logging's
SUBSCRIBER_UPDATES = [
    "Started simulated resource updated notifications for session undefined at a 5 second pace."
    " Client will receive updates for any resources the it is subscribed to.",
    "Stopped simulated resource updates for session undefined",
]
AFTER_CANCEL = "Echo: after cancel"
CANCEL_AFTER_S = 0.3  # a call is abandoned this long after it starts...
CANCEL_BOUND_S = 0.5  # ...and must be over within this (the call itself would take 1 s)
EVENT_WAIT_S = 2.0  # server-everything sends these at once; the bound only ends a failing wait
RUN_S = 60.0


def sampled_text(model: str, text: str) -> str:
    result = {"model": model, "role": "assistant", "content": {"type": "text", "text": text}}
    return "LLM sampling result: \n" + json.dumps(result, indent=2)


def roots_text(root: Root) -> str:
    return f"Current MCP Roots (1 total):\n\n1. {root.name}\n   URI: {root.uri}\n\n"


def _texts(result: Any) -> list[str]:
    return [c.text for c in result.content if isinstance(c, TextContent)]


# --- the shared gateway ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Per-session isolation: the tests below check that one client's backend session is its own.
    ev = {"command": str(NODE), "args": [str(EVERYTHING), "stdio"], "isolation": "per_session"}
    gw = start_gateway({"servers": {"ev": ev}}, tmp_path_factory.mktemp("features"))
    try:
        gw.wait_backend("ev")
        yield gw
    finally:
        gw.stop(timeout=5)


def _switchyard_stdio(gateway: Gateway) -> list[str]:
    return ["stdio", "--config", str(gateway.config_path), "--log-level", "warning"]


# --- the official TypeScript SDK client ----------------------------------------------------


def run_ts_features(*args: str) -> tuple[int, dict[str, Any]]:
    cmd = [str(NODE), str(TS_FEATURES), *args, "--timeout", str(RUN_S)]
    done = subprocess.run(cmd, capture_output=True, timeout=RUN_S + 30, cwd=NODE_DIR, check=False)
    stderr = done.stderr.decode(errors="replace")
    try:
        out = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"ts_features exited {done.returncode}:\n{stderr[-3000:]}") from None
    assert "connection" not in out["failures"], (out.get("error"), stderr[-3000:])
    return done.returncode, out


def _ts_args(face: str, gateway: Gateway) -> list[str]:
    if face == "streamable-http":
        return ["--transport", face, "--url", gateway.url]
    if face == "sse":
        return ["--transport", face, "--url", f"{gateway.base}/sse"]
    return [
        "--transport",
        "stdio",
        "--command",
        str(BIN / "switchyard"),
        "--args",
        json.dumps(_switchyard_stdio(gateway)),
    ]


@pytest.fixture(scope="module")
def ts_direct() -> dict[str, Any]:
    """ts_features.mjs against server-everything itself, over its stdio."""
    code, out = run_ts_features(
        "--transport",
        "stdio",
        "--command",
        str(NODE),
        "--args",
        json.dumps([str(EVERYTHING), "stdio"]),
        "--prefix",
        "",
    )
    assert code == 0 and out["failures"] == [], out
    return out


def _ts_texts(result: dict[str, Any]) -> list[str]:
    return [c["text"] for c in result["content"] if c["type"] == "text"]


def _ts_progress(out: dict[str, Any]) -> list[tuple[float, float]]:
    """The TypeScript SDK handles a notification a microtask later but a response at once, so
    the last progress notification, read in the same chunk as the response, may find its
    handler gone (it does so directly too). Every other one must arrive, in order."""
    return [(n["progress"], n["total"]) for n in out["progress"]["notifications"]]


def test_typescript_direct_baseline(ts_direct: dict[str, Any]) -> None:
    """Pin what server-everything answers the TypeScript client; the rest compares to it."""
    out = ts_direct
    assert _ts_texts(out["sampling"]["result"]) == [sampled_text(TS_MODEL, TS_SAMPLED)]
    assert out["sampling"]["requests"] == [
        {
            "messages": [
                {
                    "role": "user",
                    "content": {
                        "type": "text",
                        "text": "Resource trigger-sampling-request context: rail yards",
                    },
                }
            ],
            "systemPrompt": "You are a helpful test server.",
            "temperature": 0.7,
            "maxTokens": 16,
        }
    ]
    assert out["elicitation"]["requests"] == [{**ELICITATION_REQUEST, "mode": None}]
    assert _ts_texts(out["elicitation"]["result"]) == ELICITATION_TEXTS
    assert out["roots"]["requests"] == 1
    assert _ts_texts(out["roots"]["result"])[0].startswith(roots_text(TS_ROOT))
    assert ROOTS_LOG in out["logs"]  # directly, roots may be synced 350 ms after connecting
    assert _ts_progress(out) in (PROGRESS, PROGRESS[:1])
    assert _ts_texts(out["progress"]["result"]) == [LONG_RUN_DONE]
    assert {k: out["completion"][k]["values"] for k in COMPLETIONS} == COMPLETIONS
    assert out["cancellation"]["rejected"]["name"] == "McpError"
    assert _ts_texts(out["cancellation"]["after"]) == [AFTER_CANCEL]
    assert out["subscription"]["updates"] == [STATIC_DOC]
    assert out["subscription"]["toggled"] == SUBSCRIBER_UPDATES


@pytest.mark.parametrize("face", FACES)
def test_typescript_sdk_client_features(
    face: str, gateway: Gateway, ts_direct: dict[str, Any]
) -> None:
    code, out = run_ts_features(*_ts_args(face, gateway))
    assert out["serverInfo"]["name"] == "switchyard"
    assert out["protocolVersion"] == "2025-11-25"
    direct = ts_direct

    # Sampling and elicitation: the backend's requests reach the client as it sent them, and
    # the client's fixed answers reach the backend.
    assert out["sampling"]["requests"] == direct["sampling"]["requests"], out["sampling"]
    assert out["sampling"]["result"] == direct["sampling"]["result"]
    assert _ts_texts(out["sampling"]["result"]) == [sampled_text(TS_MODEL, TS_SAMPLED)]
    assert out["elicitation"]["requests"] == direct["elicitation"]["requests"], out["elicitation"]
    assert out["elicitation"]["result"] == direct["elicitation"]["result"]

    # Roots: asked once, listed as the client gave them, and logged (the level is debug).
    assert out["roots"]["requests"] == 1, out["roots"]
    assert out["roots"]["result"] == direct["roots"]["result"]
    assert out["roots"]["logs"] == [ROOTS_LOG], out["roots"]

    # Progress: the two steps, in order (the last one may race the response, see _ts_progress).
    assert _ts_progress(out) in (PROGRESS, PROGRESS[:1]), out["progress"]
    assert _ts_texts(out["progress"]["result"]) == [LONG_RUN_DONE]

    # Logging: setLevel debug is accepted; toggle-simulated-logging logs at once.
    assert out["setLevel"] == {"ok": True, "result": {}}
    first = out["logging"]["first"]
    assert first is not None, out["logs"]
    assert first["level"] in LEVELS and SIMULATED_LOG.match(first["data"]), first
    assert out["logging"]["toggled"] == direct["logging"]["toggled"]

    # Completion: prompt arguments (one depending on the other) and a template variable.
    for key, values in COMPLETIONS.items():
        assert out["completion"][key] == direct["completion"][key], key
        assert out["completion"][key]["values"] == values, key

    # Cancellation: the aborted call rejects at once and the session keeps working.
    cancelled = out["cancellation"]
    assert cancelled.get("rejected") == direct["cancellation"]["rejected"], cancelled
    assert cancelled["settledMs"] < CANCEL_BOUND_S * 1000, cancelled
    assert _ts_texts(cancelled["after"]) == [AFTER_CANCEL]

    # Resource subscription: server-everything sends an update of the subscribed URI as soon
    # as toggle-subscriber-updates starts them (it does directly, see ts_direct).
    assert out["subscription"]["toggled"] == SUBSCRIBER_UPDATES
    assert out["subscription"]["updates"] == direct["subscription"]["updates"], out["subscription"]

    assert code == 0 and out["failures"] == [], out["failures"]


# --- the official Python SDK client --------------------------------------------------------


@dataclass
class Recorder:
    """A client's fixed answers to the server, and what the server sent it."""

    root: Root = field(default_factory=lambda: PY_ROOT)
    listening: bool = False
    """Resource updates are taken from a listen stream (2026-07-28), not the message handler."""
    sampling: list[dict[str, Any]] = field(default_factory=list)
    elicitation: list[dict[str, Any]] = field(default_factory=list)
    roots: int = 0
    logs: list[dict[str, Any]] = field(default_factory=list)
    updates: list[str] = field(default_factory=list)
    _changed: anyio.Event | None = None

    def tick(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, found: Callable[[], Any], timeout: float) -> Any:
        """found()'s first truthy value, or None once `timeout` has passed."""
        with anyio.move_on_after(timeout):
            while not (value := found()):
                self._changed = anyio.Event()
                await self._changed.wait()
            return value
        return None

    async def sample(self, ctx: Any, params: Any) -> CreateMessageResult:
        self.sampling.append(params.model_dump(by_alias=True, exclude_none=True, mode="json"))
        self.tick()
        content = TextContent(type="text", text=PY_SAMPLED)
        return CreateMessageResult(role="assistant", content=content, model=PY_MODEL)

    async def elicit(self, ctx: Any, params: Any) -> ElicitResult:
        schema = params.requested_schema
        self.elicitation.append(
            {
                "message": params.message,
                "properties": list(schema["properties"]),
                "required": schema.get("required", []),
            }
        )
        self.tick()
        return ElicitResult(action="accept", content=ELICITED)

    async def list_roots(self, ctx: Any) -> ListRootsResult:
        self.roots += 1
        self.tick()
        return ListRootsResult(roots=[self.root])

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append(params.model_dump(by_alias=True, exclude_none=True, mode="json"))
        self.tick()

    async def message(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification) and not self.listening:
            self.updates.append(message.params.uri)
            self.tick()

    def callbacks(self) -> dict[str, Any]:
        return {
            "sampling_callback": self.sample,
            "elicitation_callback": self.elicit,
            "list_roots_callback": self.list_roots,
            "logging_callback": self.log,
            "message_handler": self.message,
        }

    def simulated_logs(self, since: int = 0) -> list[dict[str, Any]]:
        return [m for m in self.logs[since:] if SIMULATED_LOG.match(str(m.get("data")))]


async def _attempt(out: dict[str, Any], key: str, body: Callable[[], Awaitable[Any]]) -> None:
    """Record a feature's observation, or how it failed; the tests assert on the record."""
    try:
        out[key] = await body()
    except Exception as exc:
        out[key] = {"error": f"{type(exc).__name__}: {exc}"}


async def exercise(client: Client, rec: Recorder, prefix: str, *, modern: bool) -> dict[str, Any]:
    """Each feature in turn, as ts_features.mjs does; what each observed."""
    out: dict[str, Any] = {}

    async def call(tool: str, arguments: dict[str, Any] | None = None, **kw: Any) -> Any:
        return await client.call_tool(f"{prefix}{tool}", arguments or {}, **kw)

    async def set_level() -> Any:
        return (await client.set_logging_level("debug")).model_dump(exclude_none=True)

    async def roots() -> Any:
        before = len(rec.logs)
        result = await call("get-roots-list")
        return {"requests": rec.roots, "texts": _texts(result), "logs": rec.logs[before:]}

    async def sampling() -> Any:
        result = await call("trigger-sampling-request", {"prompt": "rail yards", "maxTokens": 16})
        return {"requests": rec.sampling, "texts": _texts(result)}

    async def elicitation() -> Any:
        result = await call("trigger-elicitation-request")
        return {"requests": rec.elicitation, "texts": _texts(result)}

    async def progress() -> Any:
        seen: list[tuple[float, float | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total))

        args = {"duration": 1, "steps": 2}
        result = await call("trigger-long-running-operation", args, progress_callback=on_progress)
        return {"notifications": seen, "texts": _texts(result)}

    async def logging() -> Any:
        before = len(rec.logs)
        started = _texts(await call("toggle-simulated-logging"))
        try:
            first = await rec.wait_for(lambda: rec.simulated_logs(before), EVENT_WAIT_S)
        finally:
            stopped = _texts(await call("toggle-simulated-logging"))
        return {"first": first[0] if first else None, "toggled": started + stopped}

    async def completion() -> Any:
        prompt = PromptReference(type="ref/prompt", name=f"{prefix}completable-prompt")
        template = ResourceTemplateReference(type="ref/resource", uri=DYNAMIC_TEXT)
        department = await client.complete(prompt, {"name": "department", "value": "E"})
        name = await client.complete(prompt, {"name": "name", "value": ""}, {"department": "Sales"})
        resource = await client.complete(template, {"name": "resourceId", "value": "42"})
        return {
            "department": department.completion.values,
            "name": name.completion.values,
            "resource": resource.completion.values,
        }

    async def cancellation() -> Any:
        t0 = time.monotonic()
        with anyio.move_on_after(CANCEL_AFTER_S) as scope:
            await call("trigger-long-running-operation", {"duration": 1, "steps": 1})
        settled = time.monotonic() - t0 - CANCEL_AFTER_S
        after = _texts(await call("echo", {"message": "after cancel"}))
        return {"cancelled": scope.cancelled_caught, "settled_s": settled, "after": after}

    async def subscription() -> Any:
        toggled = _texts(await call("toggle-subscriber-updates"))
        try:
            update = await rec.wait_for(lambda: STATIC_DOC in rec.updates, EVENT_WAIT_S)
        finally:
            toggled += _texts(await call("toggle-subscriber-updates"))
        return {"updated": bool(update), "updates": rec.updates, "toggled": toggled}

    async def legacy_subscription() -> Any:
        await client.subscribe_resource(STATIC_DOC)
        try:
            return await subscription()
        finally:
            await client.unsubscribe_resource(STATIC_DOC)

    async def modern_subscription() -> Any:
        # 2026-07-28 has no resources/subscribe: a subscriptions/listen stream instead.
        rec.listening = True
        async with client.listen(resource_subscriptions=[STATIC_DOC]) as sub:

            async def follow() -> None:
                async for event in sub:
                    if isinstance(event, ResourceUpdated):
                        rec.updates.append(event.uri)
                        rec.tick()

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                try:
                    return await subscription()
                finally:
                    tg.cancel_scope.cancel()

    if not modern:
        await _attempt(out, "setLevel", set_level)
    await _attempt(out, "roots", roots)
    await _attempt(out, "sampling", sampling)
    await _attempt(out, "elicitation", elicitation)
    # Before progress: an abandoned call may hold the backend session up to its natural end
    # (see test_an_abandoned_modern_call_leaves_the_backend_to_the_others); progress outlasts it.
    await _attempt(out, "cancellation", cancellation)
    await _attempt(out, "progress", progress)
    await _attempt(out, "logging", logging)
    await _attempt(out, "completion", completion)
    await _attempt(out, "subscription", modern_subscription if modern else legacy_subscription)
    out["logs"] = rec.logs
    return out


async def _run_python(server: Any, prefix: str, *, modern: bool = False) -> dict[str, Any]:
    rec = Recorder()
    with anyio.fail_after(RUN_S):
        if modern:
            client = Client(server, log_level="debug", **rec.callbacks())
        else:
            client = Client(server, mode="legacy", **rec.callbacks())
        async with client:
            out = await exercise(client, rec, prefix, modern=modern)
            out["protocolVersion"] = client.protocol_version
            return out


@pytest.fixture(scope="module")
def py_direct() -> dict[str, Any]:
    """The Python client against server-everything itself, over its stdio."""
    return anyio.run(_run_python, everything_stdio(), "")


def _expect_python_features(out: dict[str, Any], direct: dict[str, Any], *, modern: bool) -> None:
    """Assert each feature as observed directly (resource updates last)."""
    if not modern:
        assert out["setLevel"] == {}, out["setLevel"]

    assert out["sampling"] == direct["sampling"], out["sampling"]
    assert out["sampling"]["texts"] == [sampled_text(PY_MODEL, PY_SAMPLED)]
    assert out["elicitation"] == direct["elicitation"], out["elicitation"]
    assert out["elicitation"]["texts"] == ELICITATION_TEXTS

    roots = out["roots"]
    assert roots.get("requests") == 1, roots
    assert roots["texts"] == direct["roots"]["texts"], roots
    if not modern:  # a 2026-07-28 request does not ask for log lines
        assert roots["logs"] == [ROOTS_LOG], roots

    assert (
        out["progress"]
        == direct["progress"]
        == {
            "notifications": PROGRESS,
            "texts": [LONG_RUN_DONE],
        }
    ), out["progress"]

    logging = out["logging"]
    assert logging.get("first") is not None, (logging, out["logs"])
    assert logging["first"]["level"] in LEVELS, logging
    # A 2026-07-28 client's calls borrow its principal's warm session one after another, so
    # the second toggle finds logging on and stops it, as for a client connected directly.
    assert logging["toggled"] == direct["logging"]["toggled"], logging

    assert out["completion"] == direct["completion"] == COMPLETIONS, out["completion"]

    cancelled = out["cancellation"]
    assert cancelled.get("cancelled") is True, cancelled
    assert cancelled["settled_s"] < CANCEL_BOUND_S, cancelled
    assert cancelled["after"] == [AFTER_CANCEL], cancelled

    subscription = out["subscription"]
    if modern:
        # server-everything generates these updates in the session that toggled them on: the
        # principal's warm session, where the second toggle stops them again. The listen
        # stream's subscription lives in another isolated session, so no update is generated
        # for it. Updates need one session for both: legacy clients, or per_principal.
        assert subscription["toggled"] == SUBSCRIBER_UPDATES, subscription
        assert subscription["updates"] == [], subscription
        return
    assert subscription.get("toggled") == SUBSCRIBER_UPDATES, subscription
    assert subscription["updates"] == direct["subscription"]["updates"], subscription


def test_python_direct_baseline(py_direct: dict[str, Any]) -> None:
    out = py_direct
    assert out["protocolVersion"] == "2025-11-25"
    assert out["setLevel"] == {}
    assert out["sampling"]["texts"] == [sampled_text(PY_MODEL, PY_SAMPLED)]
    assert out["sampling"]["requests"][0]["maxTokens"] == 16
    assert out["elicitation"]["requests"] == [ELICITATION_REQUEST]
    assert out["elicitation"]["texts"] == ELICITATION_TEXTS
    assert out["roots"]["requests"] == 1
    assert out["roots"]["texts"][0].startswith(roots_text(PY_ROOT))
    assert ROOTS_LOG in out["logs"]  # directly, roots may be synced 350 ms after connecting
    assert out["progress"] == {"notifications": PROGRESS, "texts": [LONG_RUN_DONE]}
    assert SIMULATED_LOG.match(out["logging"]["first"]["data"])
    assert out["completion"] == COMPLETIONS
    assert out["cancellation"]["cancelled"] is True
    assert out["cancellation"]["after"] == [AFTER_CANCEL]
    assert out["subscription"] == {
        "updated": True,
        "updates": [STATIC_DOC],
        "toggled": SUBSCRIBER_UPDATES,
    }


def _py_transport(face: str, gateway: Gateway) -> Any:
    if face == "streamable-http":
        return streamable_http_client(gateway.url)
    if face == "sse":
        return sse_client(f"{gateway.base}/sse")
    return StdioServerParameters(command=str(BIN / "switchyard"), args=_switchyard_stdio(gateway))


@pytest.mark.parametrize("face", FACES)
def test_python_sdk_client_features_legacy(
    face: str, gateway: Gateway, py_direct: dict[str, Any]
) -> None:
    out = anyio.run(_run_python, _py_transport(face, gateway), "ev_")
    assert out["protocolVersion"] == "2025-11-25"
    _expect_python_features(out, py_direct, modern=False)


def test_python_sdk_client_features_modern(gateway: Gateway, py_direct: dict[str, Any]) -> None:
    """A 2026-07-28 client: the legacy backend's sampling, elicitation and roots requests reach it
    through Switchyard's era bridge (input_required, then the retry), log lines come with the
    requests that ask for them (log_level, in _meta), and resource updates on a listen stream."""
    out = anyio.run(lambda: _run_python(gateway.url, "ev_", modern=True))
    assert out["protocolVersion"] == "2026-07-28"
    _expect_python_features(out, py_direct, modern=True)


# --- one client's backend session is its own ----------------------------------------------
#
# Each legacy client session gets its own server-everything process (isolation: per_session),
# and each 2026-07-28 call, which has no session to keep, gets one for itself. What
# server-everything keeps per session (log level, roots, subscriptions, simulated logging) must
# behave as it does for a client connected to it directly, and must never reach another client.


def _legacy(gateway: Gateway, rec: Recorder) -> Client:
    return Client(streamable_http_client(gateway.url), mode="legacy", **rec.callbacks())


@pytest.mark.anyio
async def test_an_isolated_session_reaches_its_client_between_requests(gateway: Gateway) -> None:
    """server-everything asks for roots 350 ms after `initialized`, outside any request; the
    client's roots callback answers it (directly, without any request of the client's)."""
    direct = Recorder()
    with anyio.fail_after(RUN_S):
        async with Client(everything_stdio(), mode="legacy", **direct.callbacks()):
            assert await direct.wait_for(lambda: direct.roots, 3.0) == 1

    through = Recorder()
    with anyio.fail_after(RUN_S):
        async with _legacy(gateway, through) as client:
            await client.set_logging_level("debug")
            await client.call_tool("ev_echo", {"message": "open my session"})
            asked = await through.wait_for(lambda: through.roots, 3.0)
            # The backend logs the roots it received just after the answer reaches it.
            await through.wait_for(lambda: through.logs, 3.0)
    assert asked == 1, (
        "the client's own backend session never reached it with roots/list; the gateway log "
        "says: " + _roots_failure(gateway)
    )
    assert through.logs == [ROOTS_LOG]


def _roots_failure(gateway: Gateway) -> str:
    lines = [line for line in gateway.log_text().splitlines() if "Failed to request roots" in line]
    return lines[-1] if lines else "(nothing)"


@pytest.mark.anyio
async def test_one_clients_backend_log_lines_reach_no_other_client(gateway: Gateway) -> None:
    """B's simulated logging (every 5 s, outside any request) is B's: A, which asked for debug
    logs too but never started simulated logging, must not receive B's lines."""
    a, b = Recorder(), Recorder()
    with anyio.fail_after(RUN_S):
        async with _legacy(gateway, a) as client_a, _legacy(gateway, b) as client_b:
            await client_a.set_logging_level("debug")
            await client_b.set_logging_level("debug")
            await client_b.call_tool("ev_toggle-simulated-logging", {})
            try:
                # The first line comes with the call; the second one 5 s later, on its own.
                periodic = await b.wait_for(lambda: b.simulated_logs()[1:], 8.0)
            finally:
                await client_b.call_tool("ev_toggle-simulated-logging", {})
            assert periodic, b.logs
            leaked = await a.wait_for(a.simulated_logs, 0.5)
    assert not leaked, f"client A received client B's backend log lines: {leaked}"


@pytest.mark.anyio
async def test_modern_requests_get_log_lines_only_as_they_ask(gateway: Gateway) -> None:
    """2026-07-28: a request without `io.modelcontextprotocol/logLevel` in its _meta MUST NOT
    get notifications/message, and one with it gets lines at or above that level only - also
    when a legacy client of the same gateway asked for debug lines (logging/setLevel)."""
    legacy = Recorder()
    levels: tuple[LoggingLevel | None, ...] = ("debug", None, "error")
    modern = {level: Recorder() for level in levels}
    with anyio.fail_after(RUN_S):
        async with _legacy(gateway, legacy) as legacy_client:
            await legacy_client.set_logging_level("debug")
            for level, rec in modern.items():
                async with Client(gateway.url, log_level=level, **rec.callbacks()) as client:
                    # toggle-simulated-logging logs once, at a random level, as it starts.
                    for _ in range(4):
                        await client.call_tool("ev_toggle-simulated-logging", {})
                        await client.call_tool("ev_toggle-simulated-logging", {})
    # The backend's lines do reach a request that asks for all of them: the calls borrow the
    # (anonymous) principal's warm session one after another, so the toggles alternate as for
    # a client connected directly, and each of the 4 that start simulated logging logs once...
    assert len(modern["debug"].simulated_logs()) == 4, modern["debug"].logs
    # ...but none reach one that asks for none, nor below the level asked for.
    assert modern[None].logs == [], "log lines for requests that did not ask for any"
    error = LEVELS.index("error")
    below = [m for m in modern["error"].logs if LEVELS.index(m["level"]) < error]
    assert below == [], "log lines below the level the requests asked for"


@pytest.mark.anyio
async def test_modern_clients_each_see_their_own_roots(tmp_path: Path) -> None:
    """Two 2026-07-28 callers (two principals), one after the other, each with its own root:
    get-roots-list answers each with its own (as it does for two clients connected to it
    directly). Their calls borrow their own principal's warm session, never the other's."""
    data = tmp_path / "keys"
    keys = {who: create_key(data, who, "user") for who in ("one", "two")}
    port = free_port()
    ev = {"command": str(NODE), "args": [str(EVERYTHING), "stdio"], "isolation": "per_session"}
    auth = {
        "enabled": True,
        "public_url": f"http://127.0.0.1:{port}",
        "data_dir": str(data),
        "rules": [{"effect": "allow"}],
    }
    gw = start_gateway({"auth": auth, "servers": {"ev": ev}}, tmp_path, port=port)
    listed: dict[str, str] = {}
    try:
        gw.wait_backend("ev")
        with anyio.fail_after(RUN_S):
            for who, key in keys.items():
                root = Root(uri=f"file:///srv/modern-{who}", name=f"modern-{who}")
                rec = Recorder(root=root)
                http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
                transport = streamable_http_client(gw.url, http_client=http)
                async with http, Client(transport, **rec.callbacks()) as client:  # type: ignore[arg-type]
                    assert client.protocol_version == "2026-07-28"
                    texts = _texts(await client.call_tool("ev_get-roots-list", {}))
                listed[who] = texts[0].split("\n\n")[1]
    finally:
        gw.stop(timeout=5)
    assert listed == {w: f"1. modern-{w}\n   URI: file:///srv/modern-{w}" for w in keys}


@pytest.mark.anyio
async def test_an_abandoned_modern_call_leaves_the_backend_to_the_others(gateway: Gateway) -> None:
    """A 2026-07-28 client abandons a slow call (it closes the request's stream, which is the
    cancellation); at once, another one's call that needs sampling works. (Late in this file:
    the abandoned call may keep the backend's shared session busy for up to 2 s.)"""
    with anyio.fail_after(RUN_S):
        async with Client(gateway.url) as quitter:
            with anyio.move_on_after(CANCEL_AFTER_S) as scope:
                await quitter.call_tool(
                    "ev_trigger-long-running-operation", {"duration": 2, "steps": 1}
                )
            assert scope.cancelled_caught
        rec = Recorder()
        async with Client(gateway.url, **rec.callbacks()) as client:
            args = {"prompt": "rail yards", "maxTokens": 16}
            result = await client.call_tool("ev_trigger-sampling-request", args)
    assert _texts(result) == [sampled_text(PY_MODEL, PY_SAMPLED)]
    assert len(rec.sampling) == 1


@pytest.mark.anyio
async def test_set_level_applies_to_the_clients_own_backend_session(gateway: Gateway) -> None:
    """logging/setLevel error, then get-roots-list (whose roots sync logs at info): directly,
    server-everything sends no line below error; through Switchyard, neither may it.
    (Last in this file: the level also reaches the backend's shared session, and it is put
    back to debug afterwards.)"""

    async def logs_at_error(server: Any, prefix: str) -> list[dict[str, Any]]:
        rec = Recorder()
        async with Client(server, mode="legacy", **rec.callbacks()) as client:
            try:
                await client.set_logging_level("error")
                since = len(rec.logs)
                await client.call_tool(f"{prefix}get-roots-list", {})
                return rec.logs[since:]
            finally:
                await client.set_logging_level("debug")

    with anyio.fail_after(RUN_S):
        direct = await logs_at_error(everything_stdio(), "")
        through = await logs_at_error(streamable_http_client(gateway.url), "ev_")
    assert direct == []
    assert through == direct
