"""A legacy client of a backend that speaks both eras is served in its own era, on a legacy
upstream session of its own principal's (`Backend.legacy_native`), unless it declared a
capability by which a backend asks it things mid-call; where no session can be had (a backend
of 2026-07-28 alone, a bound, `isolation: shared`), its calls are translated as before.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_isolation_pool import _client, _keyed
from tests.e2e.test_subscriptions import Stream
from tests.e2e.test_upstream_http import messages_of
from tests.harness import FIXTURES, PYTHON, Gateway, create_key, free_port, start_port_fixture
from tests.rpc import JSON_HEADERS, RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


class Recorded:
    """An official-SDK backend of both eras whose every request's headers are recorded."""

    def __init__(self, tmp_path: Path, *flags: str) -> None:
        self.headers_file = tmp_path / "headers.jsonl"
        self.events_file = tmp_path / "events.txt"
        self.proc, port = start_port_fixture(
            [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", "0", "--name", "web", *flags],
            "sdk-http-recorded",
            env={
                "FIXTURE_HEADERS_FILE": str(self.headers_file),
                "FIXTURE_EVENTS_FILE": str(self.events_file),
            },
        )
        self.url = f"http://127.0.0.1:{port}/mcp"

    def requests(self) -> list[dict[str, str]]:
        """Each request's headers (first value of each name, lower-case)."""
        if not self.headers_file.exists():
            return []
        out: list[dict[str, str]] = []
        for line in self.headers_file.read_text().splitlines():
            headers: dict[str, str] = {}
            for name, value in json.loads(line)["headers"]:
                headers.setdefault(name.lower(), value)
            out.append(headers)
        return out

    def refusals(self) -> int:
        if not self.events_file.exists():
            return 0
        return self.events_file.read_text().splitlines().count("initialize refused")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Recorded]:
    fx = Recorded(tmp_path)
    try:
        yield fx
    finally:
        fx.proc.stop()


@pytest.fixture
def modern_only(tmp_path: Path) -> Iterator[Recorded]:
    fx = Recorded(tmp_path, "--modern-only")
    try:
        yield fx
    finally:
        fx.proc.stop()


def _two_keyed(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, server: dict[str, Any]
) -> tuple[Gateway, dict[str, str]]:
    data = tmp_path / "keys"
    keys = {p: create_key(data, p, "user") for p in ("alice", "bob")}
    port = free_port()
    return gateway_factory(_keyed(port, data, {"web": server}), port=port), keys


async def _note(client: RawClient, text: str, request_id: int = 1) -> tuple[list[str], str]:
    """Call `web_note`: the log lines that came with the answer, and the answer's text."""
    resp = await client.request(
        "tools/call", {"name": "web_note", "arguments": {"text": text}}, request_id
    )
    assert resp.status == 200, (resp.status, resp.body)
    messages = messages_of(resp)
    logs = [
        str(m["params"]["data"]) for m in messages if m.get("method") == "notifications/message"
    ]
    (answer,) = [m for m in messages if m.get("id") == request_id]
    assert "result" in answer, answer
    assert "resultType" not in answer["result"]  # a result of the client's own era
    return logs, str(answer["result"]["content"][0]["text"])


async def test_each_legacy_principal_gets_its_own_legacy_session_and_sees_only_its_own(
    gateway_factory: Callable[..., Gateway],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    backend: Recorded,
) -> None:
    """Two principals' legacy clients call at once: each is served on a legacy session of its
    own (two upstream session ids, no client credential upstream), hears the log lines of its
    own calls as a legacy client of the backend does (no level set: every line), and sets its
    own level without touching the other's. A 2026-07-28 call still goes without a session."""
    gw, keys = _two_keyed(gateway_factory, tmp_path, {"url": backend.url})
    seen_before = len(backend.requests())
    alice = await _client(gw, http, keys["alice"], "legacy").open()
    bob = await _client(gw, http, keys["bob"], "legacy").open()

    for round_ in range(3):
        (a_logs, a_text), (b_logs, b_text) = await asyncio.gather(
            _note(alice, f"alice-{round_}", round_ + 1), _note(bob, f"bob-{round_}", round_ + 1)
        )
        assert (a_logs, a_text) == ([f"alice-{round_}"], f"alice-{round_}")
        assert (b_logs, b_text) == ([f"bob-{round_}"], f"bob-{round_}")

    # bob's level reaches bob's upstream session alone.
    resp = await bob.request("logging/setLevel", {"level": "error"}, 10)
    assert resp.json == {"jsonrpc": "2.0", "id": 10, "result": {}}
    assert await _note(bob, "bob-quiet", 11) == ([], "bob-quiet")
    assert await _note(alice, "alice-loud", 11) == (["alice-loud"], "alice-loud")

    modern = _client(gw, http, keys["alice"], "modern")
    assert (await modern.result("tools/call", {"name": "web_echo", "arguments": {"text": "m"}}))[
        "content"
    ][0]["text"] == "m"

    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 2
    sent = backend.requests()[seen_before:]
    sessions = {h["mcp-session-id"] for h in sent if "mcp-session-id" in h}
    assert len(sessions) == 2
    legacy = [h for h in sent if "mcp-session-id" in h]
    assert all(h.get("mcp-protocol-version") != "2026-07-28" for h in legacy)
    assert not any(h.get("mcp-method") == "tools/call" for h in legacy)
    modern_calls = [h for h in sent if h.get("mcp-method") == "tools/call"]
    assert len(modern_calls) == 1
    assert modern_calls[0]["mcp-protocol-version"] == "2026-07-28"
    assert "mcp-session-id" not in modern_calls[0]
    for headers in sent:
        for value in headers.values():
            assert keys["alice"] not in value and keys["bob"] not in value


async def test_two_anonymous_legacy_clients_share_a_session_but_not_their_messages(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession, backend: Recorded
) -> None:
    """With authentication off every caller is one principal, so one legacy upstream session
    serves both clients; what the backend says during a call still reaches that call's
    client alone."""
    gw = gateway_factory({"servers": {"web": {"url": backend.url}}})
    first = await RawClient(gw.url, http).open()
    second = await RawClient(gw.url, http).open()
    for round_ in range(5):
        results = await asyncio.gather(
            *(
                _note(client, f"{who}-{round_}-{i}", 100 * i + round_)
                for i in range(3)
                for who, client in (("first", first), ("second", second))
            )
        )
        expected = [
            ([f"{who}-{round_}-{i}"], f"{who}-{round_}-{i}")
            for i in range(3)
            for who in ("first", "second")
        ]
        assert results == expected
    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 1


async def test_a_backend_of_2026_07_28_alone_is_asked_once_then_legacy_callers_are_translated(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession, modern_only: Recorded
) -> None:
    """`initialize` refused: the call that asked is answered all the same (translated), and no
    other legacy session is tried for a while: one refusal for many calls of two clients."""
    gw = gateway_factory({"servers": {"web": {"url": modern_only.url}}})
    first = await RawClient(gw.url, http).open()
    second = await RawClient(gw.url, http).open()
    for round_ in range(3):
        a, b = await asyncio.gather(
            _note(first, f"first-{round_}", round_ + 1),
            _note(second, f"second-{round_}", round_ + 1),
        )
        # Translated: a 2026-07-28 backend logs only what a request opts into, and a legacy
        # client that set no level opted into nothing.
        assert a == ([], f"first-{round_}")
        assert b == ([], f"second-{round_}")
    assert modern_only.refusals() == 1
    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 0
    calls = [h for h in modern_only.requests() if h.get("mcp-method") == "tools/call"]
    assert len(calls) == 6
    assert all(h["mcp-protocol-version"] == "2026-07-28" for h in calls)


async def test_past_the_session_bound_a_legacy_caller_is_translated_not_refused(
    gateway_factory: Callable[..., Gateway],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    backend: Recorded,
) -> None:
    """`max_isolated: 1`: alice holds the one legacy session; bob's calls are still answered,
    translated, and never see alice's."""
    gw, keys = _two_keyed(gateway_factory, tmp_path, {"url": backend.url, "max_isolated": 1})
    alice = await _client(gw, http, keys["alice"], "legacy").open()
    bob = await _client(gw, http, keys["bob"], "legacy").open()
    assert await _note(alice, "alice-first") == (["alice-first"], "alice-first")
    for round_ in range(3):
        a, b = await asyncio.gather(
            _note(alice, f"alice-{round_}", round_ + 2), _note(bob, f"bob-{round_}", round_ + 2)
        )
        assert a == ([f"alice-{round_}"], f"alice-{round_}")
        assert b == ([], f"bob-{round_}")
    # bob's level still works the translated way: asked for per request.
    await bob.request("logging/setLevel", {"level": "info"}, 20)
    assert await _note(bob, "bob-opted-in", 21) == (["bob-opted-in"], "bob-opted-in")
    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 1


@pytest.mark.parametrize(
    "server", [{"isolation": "shared"}, {"era": "modern"}], ids=["shared", "era-modern"]
)
async def test_shared_isolation_or_a_pinned_era_keeps_legacy_callers_translated(
    gateway_factory: Callable[..., Gateway],
    http: aiohttp.ClientSession,
    backend: Recorded,
    server: dict[str, Any],
) -> None:
    gw = gateway_factory({"servers": {"web": {"url": backend.url, **server}}})
    client = await RawClient(gw.url, http).open()
    assert await _note(client, "quiet") == ([], "quiet")
    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 0
    assert not any("mcp-session-id" in h for h in backend.requests())


async def test_a_per_session_legacy_session_ends_with_its_client_session(
    gateway_factory: Callable[..., Gateway], http: aiohttp.ClientSession, backend: Recorded
) -> None:
    gw = gateway_factory({"servers": {"web": {"url": backend.url, "isolation": "per_session"}}})
    first = await RawClient(gw.url, http).open()
    second = await RawClient(gw.url, http).open()
    assert await _note(first, "one") == (["one"], "one")
    assert await _note(second, "two") == (["two"], "two")
    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 2
    async with http.delete(gw.url, headers={"Mcp-Session-Id": first.session_id or ""}) as resp:
        assert resp.status == 200
    for _ in range(100):  # the upstream session closes in the background (10 s bound)
        if gw.readyz()["backends"]["web"]["isolatedSessions"] == 1:
            break
        await asyncio.sleep(0.1)
    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 1
    assert await _note(second, "still") == (["still"], "still")


async def _open_declaring(
    gw: Gateway, http: aiohttp.ClientSession, capabilities: dict[str, Any]
) -> RawClient:
    """A legacy client whose `initialize` declares `capabilities`."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": capabilities,
            "clientInfo": {"name": "declaring", "version": "1"},
        },
    }
    async with http.post(gw.url, json=init, headers=JSON_HEADERS) as resp:
        assert resp.status == 200
        session = resp.headers["Mcp-Session-Id"]
    client = RawClient(gw.url, http, session_id=session)
    await client.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, client.headers())
    return client


@pytest.mark.parametrize("capability", ["sampling", "elicitation", "roots"])
async def test_a_client_that_can_be_asked_is_translated_beside_one_that_cannot(
    gateway_factory: Callable[..., Gateway],
    http: aiohttp.ClientSession,
    backend: Recorded,
    capability: str,
) -> None:
    """A backend of both eras asks a client mid-call only the 2026-07-28 way when it answers in
    JSON: a client that declared `capability` keeps the translated path (where the gateway
    turns `input_required` into requests to it); a bare client of the same principal beside
    it has the legacy session."""
    gw = gateway_factory({"servers": {"web": {"url": backend.url}}})
    asked = await _open_declaring(gw, http, {capability: {}})
    bare = await RawClient(gw.url, http).open()
    a, b = await asyncio.gather(_note(asked, "asked", 1), _note(bare, "bare", 1))
    assert a == ([], "asked")  # translated: no level set, no lines opted into
    assert b == (["bare"], "bare")  # its own legacy session: every line, as the backend sends
    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 1


async def test_a_legacy_subscription_goes_to_the_callers_own_session_and_stays_its_own(
    gateway_factory: Callable[..., Gateway],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    backend: Recorded,
) -> None:
    """Each principal subscribes to its own board on its own legacy session: a change is told
    to the session stream of whoever subscribed to that board, and to nobody else; after an
    unsubscribe, a change of that board is told to nobody."""
    gw, keys = _two_keyed(gateway_factory, tmp_path, {"url": backend.url})
    clients = {who: await _client(gw, http, keys[who], "legacy").open() for who in ("alice", "bob")}
    streams: dict[str, Stream] = {}

    async def touch(who: str, board: str, request_id: int) -> None:
        result = await clients[who].result(
            "tools/call", {"name": "web_touch", "arguments": {"tag": board}}, request_id
        )
        assert result["content"][0]["text"].startswith(f"touched fixture://web/board/{board}")

    try:
        for who, client in clients.items():
            resp = await http.get(
                gw.url,
                headers={
                    "Accept": "text/event-stream",
                    "Mcp-Session-Id": client.session_id or "",
                    "Authorization": f"Bearer {keys[who]}",
                },
            )
            assert resp.status == 200
            streams[who] = Stream(resp)
            uri = f"fixture://web/board/{who}"
            assert (await client.result("resources/subscribe", {"uri": uri}, 2)) == {}
        await asyncio.gather(touch("alice", "alice", 3), touch("bob", "bob", 3))
        for who in ("alice", "bob"):
            assert await streams[who].next() == {
                "jsonrpc": "2.0",
                "method": "notifications/resources/updated",
                "params": {"uri": f"fixture://web/board/{who}"},
            }
        # alice leaves her board and changes it: told to nobody. Then she watches another
        # board and changes it: that is the next thing on her stream, so nothing came
        # before it (of her old board, or of bob's, which bob changes meanwhile).
        old = "fixture://web/board/alice"
        assert (await clients["alice"].result("resources/unsubscribe", {"uri": old}, 4)) == {}
        await asyncio.gather(touch("alice", "alice", 5), touch("bob", "bob", 5))
        assert (await streams["bob"].next())["params"] == {"uri": "fixture://web/board/bob"}
        new = "fixture://web/board/alice-2"
        assert (await clients["alice"].result("resources/subscribe", {"uri": new}, 6)) == {}
        await touch("alice", "alice-2", 7)
        assert (await streams["alice"].next())["params"] == {"uri": new}
    finally:
        for stream in streams.values():
            stream.resp.close()
    assert gw.readyz()["backends"]["web"]["isolatedSessions"] == 2
