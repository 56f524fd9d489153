"""Nothing of one caller ever reaches another, on every client face, over every upstream transport.

Two callers drive the same five backends at once: two API-key principals (alice, bob) on a
gateway with authentication on, and two anonymous clients on a gateway with it off. They come in
on each client face in turn: `/mcp` in the legacy era (a session), `/mcp` in the 2026-07-28 era
(stateless), `/sse` + `/messages` and `switchyard stdio` (one process per caller). The backends
are the official-SDK fixture over stdio (2026-07-28), over legacy HTTP+SSE (handshake era, one
upstream session per client session), and over Streamable HTTP three times: in the 2026-07-28
era, and in the handshake era with one upstream session shared by every client and with one
per principal.

Each caller puts its own marker in everything it sends: request ids, progress tokens, the text
its log-producing calls log, the tags of the backend's sampling, elicitation and roots requests,
its answers to them (which come back in its tool results), and the resource it subscribes to and
changes. All of that is in flight at once, in an order shuffled per round: two fixed seeds, and
a third drawn afresh on every run (the failure names it; set SWITCHYARD_MATRIX_SEED to replay
it), so each run fuzzes an order no run tried before. Then:
each caller got exactly its own progress, log lines, server requests, answers and resource
updates, and not one string of anything it received carries the other caller's marker.

The clients are raw JSON-RPC peers, so that every byte a caller receives is seen and every id
and token is the caller's own choice. Over `/sse` they negotiate 2025-11-25, as the official
SDKs do on that transport (2024-11-05 has no elicitation).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.harness import (
    BIN,
    FIXTURES,
    PYTHON,
    Gateway,
    Proc,
    create_key,
    free_port,
    log_path,
    start_gateway,
    start_port_fixture,
)
from tests.rpc import LEGACY, MODERN

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Message = dict[str, Any]

CLIENT_CAPS = {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {"form": {}}}
MODERN_ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": CLIENT_CAPS,
    "io.modelcontextprotocol/logLevel": "info",
}
NAME_FIELD = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

# prefix -> how the gateway reaches that fixture; the fixture's --name is the prefix.
BACKENDS = ("io", "sse", "web", "webl", "webp")
FACES = ("legacy", "modern", "sse", "stdio")
UNATTRIBUTABLE_LOGS = "io"  # the backend whose log lines name no request
KINDS = ("ticks", "note", "roots", "sample", "elicit", "touch")
TICKS = 3
# One round per seed; the seed decides the order the calls are issued in, and where some calls
# get to start before the next is issued.
SEEDS = (11, 23, int(os.environ.get("SWITCHYARD_MATRIX_SEED") or secrets.randbelow(1 << 31)))

# `switchyard stdio` starts its own stdio backend; a loaded machine may take long to start it,
# and a client must not find it missing.
GATEWAY = {"startup_wait": 60}
CALL_S = 30.0  # one call, however loaded the machine
ROUND_S = 90.0  # every call of a round
UPDATE_S = 5.0  # a resource update after the call that caused it has been answered
OPEN_S = 60.0  # a client connects (switchyard stdio starts its own backends)


def board(prefix: str, marker: str) -> str:
    return f"fixture://{prefix}/board/{marker}"


def strings(obj: Any) -> Iterator[str]:
    """Every string in a decoded message, keys included."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from strings(value)


async def sse_messages(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) for each event of an open text/event-stream response."""
    event, data = "message", []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


class CallError(Exception):
    def __init__(self, error: Any) -> None:
        super().__init__(json.dumps(error))
        self.error = error


@dataclass
class Peer:
    """One caller: what it received, and its answers to what the backends ask it."""

    marker: str
    auth: dict[str, str]
    received: list[Message] = field(default_factory=list)
    asked: list[Message] = field(default_factory=list)  # {method, params} a backend asked
    errors: list[str] = field(default_factory=list)
    pending: dict[str, asyncio.Future[Message]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ids: Iterator[int] = field(default_factory=itertools.count)

    # --- what the caller observed ---------------------------------------------------------

    def notifications(self, method: str) -> list[dict[str, Any]]:
        return [m.get("params", {}) for m in self.received if m.get("method") == method]

    def progress(self) -> dict[Any, list[tuple[Any, Any, Any]]]:
        out: dict[Any, list[tuple[Any, Any, Any]]] = {}
        for p in self.notifications("notifications/progress"):
            out.setdefault(p.get("progressToken"), []).append(
                (p.get("progress"), p.get("total"), p.get("message"))
            )
        return out

    def logs(self) -> list[tuple[Any, Any]]:
        lines = self.notifications("notifications/message")
        return [(p.get("level"), p.get("data")) for p in lines]

    def updates(self) -> list[str]:
        return [p.get("uri", "") for p in self.notifications("notifications/resources/updated")]

    async def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True

    # --- the caller's answers: each carries its marker and echoes what it was asked --------

    def answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "roots/list":
            return {"roots": [{"uri": f"file:///srv/{self.marker}", "name": self.marker}]}
        if method == "sampling/createMessage":
            asked = " ".join(
                m["content"].get("text", "") for m in params.get("messages", []) if "content" in m
            )
            text = f"{self.marker} answers {asked}"
            content = {"type": "text", "text": text}
            return {"role": "assistant", "content": content, "model": f"model-{self.marker}"}
        if method == "elicitation/create":
            name = f"{self.marker} answers {params.get('message', '')}"
            return {"action": "accept", "content": {"name": name}}
        if method == "ping":
            return {}
        raise CallError({"code": -32601, "message": f"{method} not offered"})

    # --- JSON-RPC over a transport with one inbound channel (legacy, sse, stdio) -----------

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send(self, message: Message) -> None:
        raise NotImplementedError

    async def handle(self, message: Message) -> None:
        self.received.append(message)
        self.changed.set()
        if "method" in message and "id" in message:
            self.asked.append({"method": message["method"], "params": message.get("params", {})})
            self.spawn(self.reply(message))
        elif "method" not in message:
            future = self.pending.pop(str(message.get("id")), None)
            if future is None:
                self.errors.append(f"a response to no request of ours: {message}")
            elif not future.done():
                future.set_result(message)

    async def reply(self, request: Message) -> None:
        try:
            answer: Message = {"result": self.answer(request["method"], request.get("params", {}))}
        except CallError as exc:
            answer = {"error": exc.error}
        await self.send({"jsonrpc": "2.0", "id": request["id"], **answer})

    def next_id(self) -> str:
        return f"{self.marker}-{next(self.ids)}"

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        request_id = self.next_id()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        body: Message = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        try:
            async with asyncio.timeout(CALL_S):  # the POST itself may be what never ends
                await self.send(body)
                reply = await future
        finally:
            self.pending.pop(request_id, None)
        if "error" in reply:
            raise CallError(reply["error"])
        return reply["result"]

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        body: Message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        await self.send(body)

    async def handshake(self, version: str) -> None:
        init = {
            "protocolVersion": version,
            "capabilities": CLIENT_CAPS,
            "clientInfo": {"name": self.marker, "version": "1"},
        }
        result = await self.call("initialize", init)
        assert result["protocolVersion"] == version, result
        await self.notify("notifications/initialized")
        assert await self.call("logging/setLevel", {"level": "info"}) == {}

    async def subscribe(self, uris: list[str]) -> None:
        for uri in uris:
            assert await self.call("resources/subscribe", {"uri": uri}) == {}

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class LegacyHttpPeer(Peer):
    """`/mcp` in the handshake era: a session, a GET stream, answers POSTed back."""

    url: str = ""
    http: aiohttp.ClientSession | None = None
    session_id: str | None = None

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.session_id is not None:
            h |= {"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": LEGACY}
        return h | self.auth

    async def open(self) -> None:
        self.http = aiohttp.ClientSession()
        request_id = self.next_id()
        init = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": CLIENT_CAPS,
                "clientInfo": {"name": self.marker, "version": "1"},
            },
        }
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        async with self.http.post(self.url, json=init, headers=self.headers()) as resp:
            assert resp.status == 200, (resp.status, await resp.read())
            self.session_id = resp.headers["Mcp-Session-Id"]
            await self.drain(resp)
        assert (await asyncio.wait_for(future, CALL_S))["result"]["protocolVersion"] == LEGACY
        await self.notify("notifications/initialized")
        stream = await self.http.get(
            self.url, headers=self.headers() | {"Accept": "text/event-stream"}
        )
        assert stream.status == 200, (stream.status, await stream.read())
        self.spawn(self.follow(stream))
        assert await self.call("logging/setLevel", {"level": "info"}) == {}

    async def follow(self, resp: aiohttp.ClientResponse) -> None:
        try:
            await self.drain(resp)
        finally:
            resp.release()

    async def drain(self, resp: aiohttp.ClientResponse) -> None:
        if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            async for _, data in sse_messages(resp):
                await self.handle(json.loads(data))
        else:
            body = await resp.read()
            if body:
                await self.handle(json.loads(body))

    async def send(self, message: Message) -> None:
        assert self.http is not None
        resp = await self.http.post(self.url, json=message, headers=self.headers())
        if resp.status == 202:
            resp.release()
            return
        if resp.status != 200:
            body = await resp.read()
            resp.release()
            self.fail(message, f"HTTP {resp.status}: {body[:300]!r}")
            return
        self.spawn(self.follow(resp))

    def fail(self, message: Message, why: str) -> None:
        self.errors.append(f"{message.get('method')}: {why}")
        future = self.pending.pop(str(message.get("id")), None)
        if future is not None and not future.done():
            future.set_result({"error": {"code": "transport", "message": why}})

    async def close(self) -> None:
        await super().close()
        if self.http is not None:
            await self.http.close()


@dataclass
class SsePeer(LegacyHttpPeer):
    """`/sse` + `/messages`: everything comes back on the one event stream."""

    endpoint: str = ""

    async def open(self) -> None:
        self.http = aiohttp.ClientSession()
        resp = await self.http.get(self.url, headers={"Accept": "text/event-stream"} | self.auth)
        assert resp.status == 200, (resp.status, await resp.read())
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def follow() -> None:
            try:
                async for event, data in sse_messages(resp):
                    if event == "endpoint":
                        found.set_result(str(resp.url.join(URL(data))))
                    else:
                        await self.handle(json.loads(data))
            finally:
                resp.release()

        self.spawn(follow())
        self.endpoint = await asyncio.wait_for(found, CALL_S)
        await self.handshake(LEGACY)

    async def send(self, message: Message) -> None:
        assert self.http is not None
        headers = {"Content-Type": "application/json"} | self.auth
        async with self.http.post(self.endpoint, json=message, headers=headers) as resp:
            if resp.status not in (200, 202):
                self.fail(message, f"HTTP {resp.status}: {(await resp.read())[:300]!r}")


@dataclass
class StdioPeer(Peer):
    """A client that spawns `switchyard stdio` (with $SWITCHYARD_API_KEY when auth is on)."""

    config: Path | None = None
    api_key: str | None = None
    process: asyncio.subprocess.Process | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def open(self) -> None:
        env = dict(os.environ)
        env.pop("SWITCHYARD_API_KEY", None)
        if self.api_key is not None:
            env["SWITCHYARD_API_KEY"] = self.api_key
        log = log_path(f"stdio-{self.marker}")
        with log.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                str(BIN / "switchyard"),
                "stdio",
                "--config",
                str(self.config),
                "--log-level",
                "warning",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
                limit=1 << 22,
            )
        self.spawn(self.follow())
        await self.handshake(LEGACY)

    async def follow(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            if line.strip():
                await self.handle(json.loads(line))

    async def send(self, message: Message) -> None:
        assert self.process is not None and self.process.stdin is not None
        async with self.lock:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            await self.process.stdin.drain()

    async def close(self) -> None:
        if self.process is not None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await super().close()


@dataclass
class ModernPeer(Peer):
    """`/mcp` in the 2026-07-28 era: every request stands alone, carries its envelope in
    `_meta`, and is answered on its own stream; the backend's questions come back as
    `input_required` and are answered by retrying with `inputResponses`."""

    url: str = ""
    http: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.http = aiohttp.ClientSession()

    def headers(self, method: str, params: dict[str, Any]) -> dict[str, str]:
        h = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": method,
        }
        name_field = NAME_FIELD.get(method)
        if name_field is not None and name_field in params:
            h["Mcp-Name"] = str(params[name_field])
        return h | self.auth

    async def exchange(self, method: str, params: dict[str, Any]) -> Message:
        assert self.http is not None
        request_id = self.next_id()
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        async with self.http.post(
            self.url, json=body, headers=self.headers(method, params)
        ) as resp:
            if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                message = json.loads(await resp.read())
                await self.handle(message)
                return message  # type: ignore[no-any-return]
            async for _, data in sse_messages(resp):
                message = json.loads(data)
                await self.handle(message)
                if "method" not in message and message.get("id") == request_id:
                    return message  # type: ignore[no-any-return]
        raise CallError({"code": "transport", "message": f"{method}: stream ended unanswered"})

    async def handle(self, message: Message) -> None:
        self.received.append(message)
        self.changed.set()
        if "method" in message and "id" in message:
            self.errors.append(f"a JSON-RPC request on a 2026-07-28 stream: {message}")

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        params = dict(params or {})
        params["_meta"] = {**MODERN_ENVELOPE, **params.get("_meta", {})}
        for _ in range(5):
            reply = await asyncio.wait_for(self.exchange(method, params), CALL_S)
            if "error" in reply:
                raise CallError(reply["error"])
            result = reply["result"]
            if result.get("resultType") != "input_required":
                return result
            answers = {}
            for key, request in result["inputRequests"].items():
                self.asked.append(request)
                answers[key] = self.answer(request["method"], request.get("params", {}))
            params = {**params, "inputResponses": answers}
            if "requestState" in result:
                params["requestState"] = result["requestState"]
        raise AssertionError(f"{method}: still input_required after 5 rounds")

    async def subscribe(self, uris: list[str]) -> None:
        """One listen stream for all of this caller's URIs; acknowledged before it counts."""
        assert self.http is not None
        request_id = self.next_id()
        params = {"notifications": {"resourceSubscriptions": uris}, "_meta": MODERN_ENVELOPE}
        body = {"jsonrpc": "2.0", "id": request_id, "method": "subscriptions/listen"}
        resp = await self.http.post(
            self.url,
            json=body | {"params": params},
            headers=self.headers("subscriptions/listen", params),
        )
        assert resp.status == 200, (resp.status, await resp.read())
        acknowledged: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def follow() -> None:
            try:
                async for _, data in sse_messages(resp):
                    message = json.loads(data)
                    await self.handle(message)
                    if message.get("method") == "notifications/subscriptions/acknowledged":
                        acknowledged.set_result(message)
            finally:
                resp.release()

        self.spawn(follow())
        ack = await asyncio.wait_for(acknowledged, CALL_S)
        assert ack["params"]["notifications"]["resourceSubscriptions"] == uris, ack

    async def close(self) -> None:
        await super().close()
        if self.http is not None:
            await self.http.close()


# --- backends and the two gateways ---------------------------------------------------------


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, dict[str, Any]]]:
    started: list[Proc] = []
    try:

        def http_fixture(script: str, name: str) -> int:
            proc, port = start_port_fixture(
                [PYTHON, str(FIXTURES / script), "--port", "0", "--name", name], f"matrix-{name}"
            )
            started.append(proc)
            return port

        sse = http_fixture("sdk_sse.py", "sse")
        web = http_fixture("sdk_http.py", "web")
        webl = http_fixture("sdk_http.py", "webl")
        webp = http_fixture("sdk_http.py", "webp")
        yield {
            "io": {
                "command": PYTHON,
                "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "io"],
                "era": "modern",
            },
            # Handshake era, one upstream session per client session (the default).
            # A session per client session; the module opens many of them faster than the
            # per-caller spawn allowance (a feature tested in test_isolation_pool), so it is
            # lifted here: this module is about where messages go.
            "sse": {
                "url": f"http://127.0.0.1:{sse}/sse",
                "type": "sse",
                "isolation": "per_session",
                "spawn_burst": 500,
            },
            "web": {"url": f"http://127.0.0.1:{web}/mcp", "type": "http", "era": "modern"},
            # Handshake era, one upstream session for every client.
            "webl": {
                "url": f"http://127.0.0.1:{webl}/mcp",
                "type": "http",
                "era": "legacy",
                "isolation": "shared",
            },
            # Handshake era, one upstream session per principal (per client session when
            # nobody is authenticated).
            "webp": {
                "url": f"http://127.0.0.1:{webp}/mcp",
                "type": "http",
                "era": "legacy",
                "isolation": "per_principal",
            },
        }
    finally:
        for proc in started:
            proc.stop()


@dataclass
class Setup:
    gateway: Gateway
    keys: tuple[str | None, str | None]  # None: anonymous
    names: tuple[str, str]


def _start(config: dict[str, Any], tmp: Path, port: int | None = None) -> Gateway:
    gw = start_gateway(config, tmp, port=port)
    try:
        for name in BACKENDS:
            gw.wait_backend(name)
    except BaseException:
        gw.stop()
        raise
    return gw


@pytest.fixture(scope="module")
def keyed(
    backends: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("principals")
    data = tmp / "keys"
    keys = (create_key(data, "alice", "member"), create_key(data, "bob", "member"))
    port = free_port()
    config = {
        "gateway": GATEWAY,
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data),
            "rules": [{"effect": "allow", "principals": ["alice", "bob"]}],
        },
        "servers": backends,
    }
    gw = _start(config, tmp, port)
    try:
        yield Setup(gw, keys, ("alice", "bob"))
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def anonymous(
    backends: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    config = {"gateway": GATEWAY, "servers": backends}
    gw = _start(config, tmp_path_factory.mktemp("anonymous"))
    try:
        yield Setup(gw, (None, None), ("anon1", "anon2"))
    finally:
        gw.stop()


def _peer(face: str, setup: Setup, index: int) -> Peer:
    key = setup.keys[index]
    marker = f"{setup.names[index]}{secrets.token_hex(4)}"
    auth = {"Authorization": f"Bearer {key}"} if key is not None else {}
    gw = setup.gateway
    if face == "legacy":
        return LegacyHttpPeer(marker, auth, url=gw.url)
    if face == "modern":
        return ModernPeer(marker, auth, url=gw.url)
    if face == "sse":
        return SsePeer(marker, auth, url=f"{gw.base}/sse")
    return StdioPeer(marker, {}, config=gw.config_path, api_key=key)


# --- one round: every operation of both callers, in flight at once -------------------------


@dataclass(frozen=True)
class Op:
    peer: Peer
    backend: str
    kind: str
    round: int

    @property
    def tag(self) -> str:
        return f"{self.peer.marker}-r{self.round}-{self.backend}"

    @property
    def token(self) -> str:
        return f"{self.tag}-progress"

    def request(self) -> tuple[str, dict[str, Any], str]:
        """The tool, its arguments and what it must answer (exactly)."""
        marker, tag = self.peer.marker, self.tag
        if self.kind == "ticks":
            return "ticks", {"count": TICKS, "interval_ms": 20}, f"ticked {TICKS}"
        if self.kind == "note":
            text = f"{tag} says hello"
            return "note", {"text": text}, text
        if self.kind == "roots":
            return "roots_for", {"tag": tag}, f"{tag}: file:///srv/{marker}"
        if self.kind == "sample":
            return "sample_for", {"tag": tag}, f"{tag}: {marker} answers Sample {tag}"
        if self.kind == "elicit":
            return "elicit_for", {"tag": tag}, f"{tag}: {marker} answers Your name, {tag}?"
        uri = board(self.backend, marker)
        return "touch", {"tag": marker}, f"touched {uri} ({self.round + 1})"

    async def run(self) -> str | None:
        """None if the call answered exactly as expected, else what went wrong."""
        tool, arguments, expected = self.request()
        params: dict[str, Any] = {"name": f"{self.backend}_{tool}", "arguments": arguments}
        if self.kind == "ticks":
            params["_meta"] = {"progressToken": self.token}
        try:
            result = await self.peer.call("tools/call", params)
        except (CallError, TimeoutError) as exc:
            return f"{self.peer.marker} {self.backend}_{tool}: {type(exc).__name__} {exc}"
        texts = [c.get("text") for c in result.get("content", [])]
        if texts != [expected] or result.get("isError"):
            return f"{self.peer.marker} {self.backend}_{tool}: got {result}, want {expected!r}"
        return None


async def _round(peers: list[Peer], seed: int, number: int) -> list[str]:
    rng = random.Random(seed)
    ops = [Op(p, b, k, number) for p in peers for b in BACKENDS for k in KINDS]
    rng.shuffle(ops)
    tasks = []
    for op in ops:
        tasks.append(asyncio.create_task(op.run()))
        if rng.random() < 0.5:
            await asyncio.sleep(0)  # let some start before the next is issued: the order varies
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), ROUND_S)
    return [f"seed {seed}: {o}" for o in outcomes if o is not None]


def _expected(peer: Peer, rounds: int) -> dict[str, Any]:
    ops = [Op(peer, b, k, r) for r in range(rounds) for b in BACKENDS for k in KINDS]
    return {
        "progress": {
            op.token: [(i, TICKS, f"tick {i}") for i in range(1, TICKS + 1)]
            for op in ops
            if op.kind == "ticks"
        },
        "logs": sorted(("info", op.request()[2]) for op in ops if op.kind == "note"),
        "updates": sorted(board(op.backend, peer.marker) for op in ops if op.kind == "touch"),
        "sampling": sorted(f"Sample {op.tag}" for op in ops if op.kind == "sample"),
        "elicitation": sorted(f"Your name, {op.tag}?" for op in ops if op.kind == "elicit"),
        "roots": sum(op.kind == "roots" for op in ops),
    }


def _observed(peer: Peer, expected: dict[str, Any], face: str) -> dict[str, Any]:
    asked = peer.asked
    logs = sorted(peer.logs())
    if face != "stdio":
        # A 2026-07-28 stdio backend's log line names no request (stdio has no per-request
        # stream, a log line no token). On a connection shared by several clients the gateway
        # can tell whose it is only while one client alone has calls in flight there, and
        # must drop it otherwise: each of this caller's own such lines may be missing, but
        # nothing else may take its place. (`switchyard stdio` serves one client: all arrive.)
        unattributable = [
            line
            for line in expected["logs"]
            if line[1].endswith(f"-{UNATTRIBUTABLE_LOGS} says hello")
        ]
        logs += [line for line in unattributable if line not in logs]
        logs.sort()
    return {
        "progress": peer.progress(),
        "logs": logs,
        "updates": sorted(peer.updates()),
        "sampling": sorted(
            " ".join(m["content"].get("text", "") for m in a["params"].get("messages", []))
            for a in asked
            if a["method"] == "sampling/createMessage"
        ),
        "elicitation": sorted(
            a["params"].get("message", "") for a in asked if a["method"] == "elicitation/create"
        ),
        "roots": sum(a["method"] == "roots/list" for a in asked),
    }


def _differences(who: str, key: str, got: Any, want: Any) -> list[str]:
    if got == want:
        return []
    if isinstance(want, list):
        missing, extra = list(want), []
        for item in got:
            if item in missing:
                missing.remove(item)
            else:
                extra.append(item)
        return [f"{who} {key}: missing {missing}, unexpected {extra}"]
    if isinstance(want, dict):
        return [
            f"{who} {key} {k!r}: got {got.get(k)}, want {want.get(k)}"
            for k in sorted({*got, *want}, key=str)
            if got.get(k) != want.get(k)
        ]
    return [f"{who} {key}: got {got}, want {want}"]


def _leaks(peer: Peer, others: list[Peer]) -> list[str]:
    found = []
    for message in [*peer.received, *peer.asked]:
        for text in strings(message):
            for other in others:
                if other.marker in text:
                    found.append(f"{peer.marker} received {other.marker}'s {json.dumps(message)}")
                    break
    return found


async def _updates_of_round(peer: Peer, number: int) -> list[str]:
    """The caller's boards whose change in round `number` never reached it."""
    uris = [board(b, peer.marker) for b in BACKENDS]

    def missing() -> list[str]:
        return [u for u in uris if peer.updates().count(u) <= number]

    await peer.wait_for(lambda: not missing(), UPDATE_S)
    return missing()


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("who", ["principals", "anonymous"])
async def test_nothing_of_one_caller_reaches_another(
    face: str, who: str, request: pytest.FixtureRequest
) -> None:
    setup: Setup = request.getfixturevalue("keyed" if who == "principals" else "anonymous")
    peers = [_peer(face, setup, 0), _peer(face, setup, 1)]
    calls: list[str] = []
    late: list[str] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(p.open() for p in peers)), OPEN_S)
        await asyncio.gather(*(p.subscribe([board(b, p.marker) for b in BACKENDS]) for p in peers))
        for number, seed in enumerate(SEEDS):
            calls += await _round(peers, seed, number)
            # A change is announced apart from the call that made it: wait for the round's
            # updates, all at once, so missing ones cost one bound, not one each.
            missing = await asyncio.gather(*(_updates_of_round(p, number) for p in peers))
            late += [
                f"seed {seed}: {peer.marker} never heard of the change of {uri}"
                for peer, uris in zip(peers, missing, strict=True)
                for uri in uris
            ]
    finally:
        await asyncio.gather(*(p.close() for p in peers))
    failures: list[str] = []
    for peer in peers:
        others = [p for p in peers if p is not peer]
        failures += _leaks(peer, others)
        failures += [f"{peer.marker}: {e}" for e in peer.errors]
        expected = _expected(peer, len(SEEDS))
        observed = _observed(peer, expected, face)
        for key in expected:
            failures += _differences(peer.marker, key, observed[key], expected[key])
    # What each caller received first (leaks, then each observation against what it should
    # be), then the calls that did not answer exactly, then the updates that never came.
    failures += calls[:30] + late
    assert failures == [], "\n".join(failures) + f"\n({len(calls)} calls answered wrongly)"
