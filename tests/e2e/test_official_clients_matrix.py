"""The official clients list and call across three backends, on every face.

The official Python SDK client (`mcp`, in its default mode and in legacy mode) and the official
TypeScript SDK client (tests/node/ts_matrix.mjs) connect through `/mcp`, `/sse` and a spawned
`switchyard stdio` to one gateway with three official-SDK fixture backends, one per upstream
transport, each with its own `--name` (so its own tool names): `sio` over stdio, `sse` over
legacy HTTP+SSE and `web` over Streamable HTTP. Each client lists tools, prompts, resources and
templates, calls one tool of each backend, and drives sampling, elicitation, roots, progress,
cancellation, logging and a resource subscription against every backend. Every answer is
exact: the clients answer with fixed values, the fixtures echo them with the caller's tag.

What the protocol does not allow, rather than skipped:
- The Python client's default mode negotiates 2026-07-28 where it can (`/mcp`, `switchyard
  stdio`); `/sse` is a 2024-11-05 transport, so there it falls back to the handshake era. A
  2026-07-28 client has no `logging/setLevel` and no `resources/subscribe`: it asks for log
  lines per request (`logLevel` in `_meta`) and listens with `subscriptions/listen`.
- The TypeScript SDK (1.x) speaks the handshake era only, on every face.
Every client here therefore exercises every feature, each in the form its era has.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import (
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    LoggingMessageNotificationParams,
    ResourceUpdatedNotification,
    Root,
    TextContent,
)

from tests.e2e.test_reference_servers import NODE
from tests.harness import (
    BIN,
    FIXTURES,
    NODE_DIR,
    PYTHON,
    Gateway,
    Proc,
    start_gateway,
    start_port_fixture,
)

pytestmark = [
    pytest.mark.e2e,
    # logging/setLevel and resources/subscribe are handshake-era APIs: exactly what is tested.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

TS_MATRIX = NODE_DIR / "ts_matrix.mjs"
BACKENDS = ("sio", "sse", "web")
FACES = ("mcp", "sse", "stdio")
FIXTURE_TOOLS = (
    "add",
    "echo",
    "elicit_for",
    "haiku",
    "hold",
    "introduce",
    "note",
    "roots",
    "roots_for",
    "sample_for",
    "slow",
    "ticks",
    "touch",
)
TOOLS = sorted(
    [f"{b}_{t}" for b in BACKENDS for t in FIXTURE_TOOLS] + [f"{b}_whoami_{b}" for b in BACKENDS]
)
PROMPTS = sorted(f"{b}_greet" for b in BACKENDS)
RESOURCES = sorted(f"fixture://{b}/info" for b in BACKENDS)
TEMPLATES = sorted(f"fixture://{b}/board/{{tag}}" for b in BACKENDS)

# The clients' fixed answers (the TypeScript ones are ts_matrix.mjs's constants).
PY_SAMPLED, TS_SAMPLED = "sampled by python", "sampled by typescript"
PY_NAME, TS_NAME = "Ada (python)", "Ada (typescript)"
PY_ROOT, TS_ROOT = "file:///srv/python-root", "file:///srv/typescript-root"
TICK_MS = 150  # ticks apart enough that each is its own read, as it would be in real use
TICKS = [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]  # ticks(count=3)
HOLD_MS = 20_000  # a call that is cancelled long before it would end
CANCEL_AFTER_S = 0.5
EVENT_S = 10.0  # a cancellation reaching the backend, a resource update reaching the client
RUN_S = 120.0


def expected_calls(tag: str, sampled: str, name: str, root: str) -> dict[str, dict[str, Any]]:
    """What each backend's feature calls answer a client tagged `tag`."""
    out: dict[str, dict[str, Any]] = {}
    for b in BACKENDS:
        t = f"{tag}-{b}"
        out[b] = {
            "whoami": [b],
            "sampling": [f"{t}: {sampled}"],
            "sampling_asked": [f"Sample {t}"],
            "elicitation": [f"{t}: {name}"],
            "elicitation_asked": [f"Your name, {t}?"],
            "roots": [f"{t}: {root}"],
            "progress": TICKS,
            "progress_result": ["ticked 3"],
            "log": [f"{t} logs this"],
            "logged": [{"level": "info", "data": f"{t} logs this"}],
            "cancelled": [f"cancelled {t}"],
            "after_cancel": [f"{t} after cancel"],
            "touched": [f"touched fixture://{b}/board/{t} (1)"],
            "updates": [f"fixture://{b}/board/{t}"],
        }
    return out


# --- backends and the gateway ---------------------------------------------------------------


@dataclass
class Setup:
    gateway: Gateway
    events: Path

    def events_of(self, tag: str) -> list[str]:
        if not self.events.exists():
            return []
        return [line for line in self.events.read_text().splitlines() if line.endswith(tag)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("official")
    events = tmp / "events.txt"
    env = {"FIXTURE_EVENTS_FILE": str(events)}
    started: list[Proc] = []
    try:
        for script, name in (("sdk_sse.py", "sse"), ("sdk_http.py", "web")):
            proc, port = start_port_fixture(
                [PYTHON, str(FIXTURES / script), "--port", "0", "--name", name],
                f"official-{name}",
                env=env,
            )
            started.append(proc)
            if name == "sse":
                sse_url = f"http://127.0.0.1:{port}/sse"
            else:
                web_url = f"http://127.0.0.1:{port}/mcp"
        config = {
            "gateway": {"startup_wait": 60},
            "servers": {
                # The handshake era, isolated per principal (the default): the one client of
                # each case is provably the one the backend's requests are for.
                "sio": {
                    "command": PYTHON,
                    "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "sio"],
                    "env": env,
                    "era": "legacy",
                },
                "sse": {"url": sse_url, "type": "sse"},  # the era is detected: handshake
                "web": {"url": web_url, "type": "http"},  # the era is detected: 2026-07-28
            },
        }
        gw = start_gateway(config, tmp)
        try:
            for name in BACKENDS:
                gw.wait_backend(name)
            yield Setup(gw, events)
        finally:
            gw.stop()
    finally:
        for proc in started:
            proc.stop()


def _stdio_args(gateway: Gateway) -> list[str]:
    return ["stdio", "--config", str(gateway.config_path), "--log-level", "warning"]


# --- the official Python SDK client ---------------------------------------------------------


@dataclass
class Recorder:
    """The Python client's fixed answers, and what the gateway sent it."""

    sampling: list[str] = field(default_factory=list)
    elicitation: list[str] = field(default_factory=list)
    roots: int = 0
    logs: list[dict[str, Any]] = field(default_factory=list)
    updates: list[str] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)
    listening: bool = False
    """2026-07-28: updates are taken from the listen stream; the SDK hands them to the message
    handler as well, and one update must count once."""

    def tick(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, found: Callable[[], bool], timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while not found():
                await self.changed.wait()
            return True
        return False

    async def sample(self, ctx: Any, params: Any) -> CreateMessageResult:
        self.sampling.append(" ".join(m.content.text for m in params.messages))
        self.tick()
        content = TextContent(type="text", text=PY_SAMPLED)
        return CreateMessageResult(role="assistant", content=content, model="py-model")

    async def elicit(self, ctx: Any, params: Any) -> ElicitResult:
        self.elicitation.append(params.message)
        self.tick()
        return ElicitResult(action="accept", content={"name": PY_NAME})

    async def list_roots(self, ctx: Any) -> ListRootsResult:
        self.roots += 1
        self.tick()
        return ListRootsResult(roots=[Root(uri=PY_ROOT, name="python-root")])

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append({"level": params.level, "data": params.data})
        self.tick()

    async def message(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification) and not self.listening:
            self.updates.append(str(message.params.uri))
            self.tick()

    def callbacks(self) -> dict[str, Any]:
        return {
            "sampling_callback": self.sample,
            "elicitation_callback": self.elicit,
            "list_roots_callback": self.list_roots,
            "logging_callback": self.log,
            "message_handler": self.message,
        }


def _texts(result: Any) -> list[str]:
    return [c.text for c in result.content if isinstance(c, TextContent)]


async def _python_feature(
    out: dict[str, Any], key: str, body: Callable[[], Any], *args: Any
) -> None:
    """Record what a feature observed, or how it failed: the test asserts on the record."""
    try:
        out[key] = await body(*args)
    except Exception as exc:
        out[key] = {"error": f"{type(exc).__name__}: {exc}"}


async def _run_python(transport: Any, mode: str, tag: str, setup: Setup) -> dict[str, Any]:
    rec = Recorder()
    kwargs: dict[str, Any] = rec.callbacks()
    if mode != "legacy":
        kwargs["log_level"] = "info"  # 2026-07-28: log lines are asked for per request
    out: dict[str, Any] = {"backends": {b: {} for b in BACKENDS}}
    with anyio.fail_after(RUN_S):
        async with Client(transport, mode=mode, **kwargs) as client:  # type: ignore[arg-type]
            modern = client.protocol_version == "2026-07-28"
            rec.listening = modern
            out["protocolVersion"] = client.protocol_version
            if not modern:
                await client.set_logging_level("info")
            out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            out["prompts"] = sorted(p.name for p in (await client.list_prompts()).prompts)
            out["resources"] = sorted(str(r.uri) for r in (await client.list_resources()).resources)
            out["templates"] = sorted(
                t.uri_template for t in (await client.list_resource_templates()).resource_templates
            )
            for b in BACKENDS:
                await _python_backend(
                    client, rec, b, f"{tag}-{b}", modern, setup, out["backends"][b]
                )
    return out


async def _python_backend(
    client: Client,
    rec: Recorder,
    b: str,
    t: str,
    modern: bool,
    setup: Setup,
    seen: dict[str, Any],
) -> None:
    async def call(tool: str, args: dict[str, Any], **kw: Any) -> list[str]:
        result = await client.call_tool(f"{b}_{tool}", args, **kw)
        assert not result.is_error, _texts(result)
        return _texts(result)

    async def whoami() -> list[str]:
        return await call(f"whoami_{b}", {})

    async def sampling() -> list[str]:
        return await call("sample_for", {"tag": t})

    async def elicitation() -> list[str]:
        return await call("elicit_for", {"tag": t})

    async def roots() -> list[str]:
        return await call("roots_for", {"tag": t})

    async def progress() -> list[tuple[float, float | None]]:
        ticks: list[tuple[float, float | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            ticks.append((progress, total))

        seen["progress_result"] = await call(
            "ticks", {"count": 3, "interval_ms": TICK_MS}, progress_callback=on_progress
        )
        return ticks

    async def logging() -> list[str]:
        before = len(rec.logs)
        text = await call("note", {"text": f"{t} logs this"})
        await rec.wait_for(lambda: len(rec.logs) > before, EVENT_S)
        seen["logged"] = rec.logs[before:]
        return text

    async def cancellation() -> list[str]:
        with anyio.move_on_after(CANCEL_AFTER_S) as scope:
            await call("hold", {"tag": t, "ms": HOLD_MS})
        assert scope.cancelled_caught, "the held call ended by itself"
        for _ in range(int(EVENT_S / 0.05)):  # polling the backend's file: no event to wait on
            if setup.events_of(t):
                break
            await anyio.sleep(0.05)
        seen["after_cancel"] = await call("echo", {"text": f"{t} after cancel"})
        return setup.events_of(t)

    async def subscription() -> list[str]:
        uri = f"fixture://{b}/board/{t}"
        before = len(rec.updates)

        async def touch() -> list[str]:
            touched = await call("touch", {"tag": t})
            await rec.wait_for(lambda: len(rec.updates) > before, EVENT_S)
            return touched

        if modern:
            async with client.listen(resource_subscriptions=[uri]) as sub:

                async def follow() -> None:
                    async for event in sub:
                        if isinstance(event, ResourceUpdated):
                            rec.updates.append(event.uri)
                            rec.tick()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    touched = await touch()
                    tg.cancel_scope.cancel()
        else:
            await client.subscribe_resource(uri)
            touched = await touch()
            await client.unsubscribe_resource(uri)
        seen["updates"] = rec.updates[before:]
        return touched

    sampled, elicited = len(rec.sampling), len(rec.elicitation)
    await _python_feature(seen, "whoami", whoami)
    await _python_feature(seen, "sampling", sampling)
    seen["sampling_asked"] = rec.sampling[sampled:]
    await _python_feature(seen, "elicitation", elicitation)
    seen["elicitation_asked"] = rec.elicitation[elicited:]
    await _python_feature(seen, "roots", roots)
    await _python_feature(seen, "progress", progress)
    await _python_feature(seen, "log", logging)
    await _python_feature(seen, "cancelled", cancellation)
    await _python_feature(seen, "touched", subscription)


def _py_transport(face: str, setup: Setup) -> Any:
    gw = setup.gateway
    if face == "mcp":
        return streamable_http_client(gw.url)
    if face == "sse":
        return sse_client(f"{gw.base}/sse")
    return StdioServerParameters(command=str(BIN / "switchyard"), args=_stdio_args(gw))


@dataclass(frozen=True)
class OneOf:
    values: tuple[Any, ...]


def _assert_matrix(out: dict[str, Any], expected: dict[str, dict[str, Any]]) -> None:
    assert out["tools"] == TOOLS
    assert out["prompts"] == PROMPTS
    assert out["resources"] == RESOURCES
    assert out["templates"] == TEMPLATES
    wrong = {
        (b, key): (out["backends"][b].get(key), want)
        for b in BACKENDS
        for key, want in expected[b].items()
        if not (
            out["backends"][b].get(key) in want.values
            if isinstance(want, OneOf)
            else out["backends"][b].get(key) == want
        )
    }
    assert wrong == {}, "\n".join(f"{k}: got {g!r}, want {w!r}" for k, (g, w) in wrong.items())


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


# Default mode: 2026-07-28 where the face has it; /sse is a handshake-era transport.
PY_VERSIONS = {
    ("auto", "mcp"): "2026-07-28",
    ("auto", "stdio"): "2026-07-28",
    ("auto", "sse"): "2025-11-25",
    ("legacy", "mcp"): "2025-11-25",
    ("legacy", "sse"): "2025-11-25",
    ("legacy", "stdio"): "2025-11-25",
}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_python_sdk_client(setup: Setup, mode: str, face: str) -> None:
    tag = f"py-{mode}-{face}"
    try:
        out = anyio.run(_run_python, _py_transport(face, setup), mode, tag, setup)
    except Exception as exc:  # the SDK's own failure says what the gateway got wrong
        raise AssertionError(f"the client failed: {_innermost(exc)!r}") from exc
    assert out["protocolVersion"] == PY_VERSIONS[(mode, face)]
    _assert_matrix(out, expected_calls(tag, PY_SAMPLED, PY_NAME, PY_ROOT))


# --- the official TypeScript SDK client -----------------------------------------------------


def _ts_args(face: str, setup: Setup) -> list[str]:
    gw = setup.gateway
    if face == "mcp":
        return ["--transport", "streamable-http", "--url", gw.url]
    if face == "sse":
        return ["--transport", "sse", "--url", f"{gw.base}/sse"]
    return [
        "--transport",
        "stdio",
        "--command",
        str(BIN / "switchyard"),
        "--args",
        json.dumps(_stdio_args(gw)),
    ]


@pytest.mark.parametrize("face", FACES)
def test_typescript_sdk_client(setup: Setup, face: str) -> None:
    tag = f"ts-{face}"
    cmd = [
        str(NODE),
        str(TS_MATRIX),
        *_ts_args(face, setup),
        "--tag",
        tag,
        "--backends",
        json.dumps(BACKENDS),
        "--events",
        str(setup.events),
        "--tick-ms",
        str(TICK_MS),
        "--timeout",
        str(RUN_S),
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=RUN_S + 30, cwd=NODE_DIR, check=False)
    stderr = done.stderr.decode(errors="replace")
    try:
        out = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"ts_matrix exited {done.returncode}:\n{stderr[-3000:]}") from None
    assert "error" not in out, (out["error"], stderr[-3000:])
    assert out["protocolVersion"] == "2025-11-25"
    expected = expected_calls(tag, TS_SAMPLED, TS_NAME, TS_ROOT)
    ticks = [list(p) for p in TICKS]  # JSON has no tuples: the pairs come back as lists
    for b in BACKENDS:
        # The TypeScript SDK handles a notification a microtask later but a response at once,
        # so the last tick, read in the same chunk as the response, may find its handler gone
        # (the Python client, on the same faces, must get all three). Every other tick must
        # arrive, in order.
        expected[b]["progress"] = OneOf((ticks, ticks[:-1]))
    _assert_matrix(out, expected)


# --- the order of a session's first requests -----------------------------------------------


def test_a_session_opened_by_a_subscription_still_declares_the_clients_capabilities(
    setup: Setup,
) -> None:
    """A legacy client whose first request to a per-session backend is `resources/subscribe`:
    the upstream session that request opens is the client's own for everything after, so it
    must declare the client's capabilities, and the backend may then ask for sampling,
    elicitation and roots as if the client had called a tool first."""
    tag = "py-subscribed-first-sse"

    async def run() -> dict[str, Any]:
        rec = Recorder()
        seen: dict[str, Any] = {}
        transport = streamable_http_client(setup.gateway.url)
        with anyio.fail_after(RUN_S):
            async with Client(transport, mode="legacy", **rec.callbacks()) as client:
                await client.subscribe_resource(f"fixture://sse/board/{tag}")
                for tool in ("sample_for", "elicit_for", "roots_for"):
                    try:
                        seen[tool] = _texts(await client.call_tool(f"sse_{tool}", {"tag": tag}))
                    except MCPError as exc:
                        seen[tool] = f"MCPError: {exc}"
                touched = _texts(await client.call_tool("sse_touch", {"tag": tag}))
                await rec.wait_for(lambda: bool(rec.updates), EVENT_S)
                seen["touch"] = touched
        seen["updates"] = rec.updates
        return seen

    assert anyio.run(run) == {
        "sample_for": [f"{tag}: {PY_SAMPLED}"],
        "elicit_for": [f"{tag}: {PY_NAME}"],
        "roots_for": [f"{tag}: {PY_ROOT}"],
        "touch": [f"touched fixture://sse/board/{tag} (1)"],
        "updates": [f"fixture://sse/board/{tag}"],
    }


# --- a backend slow to start ---------------------------------------------------------------

LATE_S = 7  # longer than any fixed probe timeout a gateway might hope a backend starts within


def test_a_slow_starting_stdio_backend_is_served_in_the_era_it_speaks(
    gateway_factory: Callable[..., Gateway],
) -> None:
    """An official-SDK stdio server (it speaks both eras) that starts LATE_S seconds late, with
    its era detected and with its era stated: either way it comes up, in the 2026-07-28 era
    (a client of the gateway must not lose a backend because its machine was busy), and the
    official client can call it. Neither may fail its start because `server/discover` went
    unanswered for a while and an `initialize` then arrived after the server had already
    chosen 2026-07-28."""
    late = [str(FIXTURES / "delayed.py"), str(LATE_S), "sdk_stdio.py"]
    gw = gateway_factory(
        {
            "gateway": {"startup_wait": 60},
            "servers": {
                "auto": {"command": PYTHON, "args": [*late, "--name", "auto"]},
                "modern": {"command": PYTHON, "args": [*late, "--name", "modern"], "era": "modern"},
            },
        },
        ready=False,
    )
    states = {name: gw.wait_backend(name, timeout=LATE_S + 25) for name in ("auto", "modern")}
    assert {name: s["era"] for name, s in states.items()} == {"auto": "modern", "modern": "modern"}

    async def call() -> list[list[str]]:
        async with Client(gw.url) as client:
            return [
                _texts(await client.call_tool(f"{name}_whoami_{name}", {}))
                for name in ("auto", "modern")
            ]

    assert anyio.run(call) == [["auto"], ["modern"]]
