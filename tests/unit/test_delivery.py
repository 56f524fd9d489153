"""Every client-bound message passes one gate (`Delivery`) that knows whose it is: access is
judged again on delivery, outbound hooks see (and may rewrite or drop) each message, and a
message refused there is counted, never sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchyard.call import Identity, RequestContext
from switchyard.config.load import compile_plan
from switchyard.config.schema import SwitchyardConfig
from switchyard.delivery import ClientMessage, Delivery, Recipient
from switchyard.gateway import Gateway
from switchyard.protocol import codes, methods
from switchyard.protocol.versions import Era
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply
from tests.harness import FIXTURES, PYTHON

pytestmark = pytest.mark.anyio

ALICE = Identity("alice", roles=("user",))
BOB = Identity("bob", roles=("user",))
WATCHED = "test://watched-resource"


class RecordingLink:
    """The client end of a request: what reached it, and its answers to server requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.notifications: list[tuple[str, Any]] = []
        self.asked: list[tuple[str, Any]] = []

    @property
    def client(self) -> str:
        return self.name

    async def notify(self, method: str, params: bytes | None) -> None:
        self.notifications.append((method, json.loads(params) if params else None))

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        self.asked.append((method, json.loads(params) if params else None))
        answer = {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"}
        return Reply(result=json.dumps(answer).encode())


def test_a_recipient_no_longer_allowed_the_backend_gets_nothing_and_it_is_counted() -> None:
    delivery = Delivery(lambda who, backend: who.name == "alice")
    got: list[tuple[str, bytes | None]] = []

    def push(method: str, params: bytes | None) -> None:
        got.append((method, params))

    assert delivery.push(push, Recipient("api_key#alice", ALICE), "b", "m", b"{}")
    assert not delivery.push(push, Recipient("api_key#bob", BOB), "b", "m", b"{}")
    assert got == [("m", b"{}")]
    assert delivery.dropped == {"not permitted": 1}
    # The gateway's own messages (list changes) name no backend: nothing to be denied.
    assert delivery.push(push, Recipient("api_key#bob", BOB), None, "list", None)


def test_hooks_see_every_message_in_order_and_may_rewrite_or_drop_it() -> None:
    delivery = Delivery()
    seen: list[str] = []

    def mask(message: ClientMessage) -> ClientMessage | None:
        seen.append(f"mask:{message.recipient.key}:{message.method}")
        return message.with_params(b'{"data":"***"}')

    def no_logs(message: ClientMessage) -> ClientMessage | None:
        seen.append(f"no_logs:{message.params!r}")
        return None if message.method == methods.MESSAGE else message

    delivery.add_hook("mask", mask)
    delivery.add_hook("no-logs", no_logs)
    got: list[tuple[str, bytes | None]] = []
    recipient = Recipient("api_key#alice", ALICE)
    assert delivery.push(lambda m, p: got.append((m, p)), recipient, "b", methods.PROGRESS, b"{}")
    assert not delivery.push(
        lambda m, p: got.append((m, p)), recipient, "b", methods.MESSAGE, b"{}"
    )
    assert got == [(methods.PROGRESS, b'{"data":"***"}')]
    assert seen == [
        f"mask:api_key#alice:{methods.PROGRESS}",
        'no_logs:b\'{"data":"***"}\'',
        f"mask:api_key#alice:{methods.MESSAGE}",
        'no_logs:b\'{"data":"***"}\'',
    ]
    assert delivery.dropped == {"no-logs": 1}


async def test_a_refused_server_request_is_answered_to_the_backend_never_sent() -> None:
    delivery = Delivery(lambda who, backend: False)
    link = RecordingLink("c1")
    screened = delivery.link(link, Recipient("api_key#bob", BOB), "b")
    assert screened is not None and screened.client == "c1"
    reply = await screened.ask("sampling/createMessage", b"{}", 5.0)
    assert frame.decode_error(reply.error or b"").code == codes.INTERNAL_ERROR
    await screened.notify(methods.PROGRESS, b"{}")
    assert link.asked == [] and link.notifications == []
    assert delivery.dropped == {"not permitted": 2}


def test_with_nothing_to_judge_links_pass_untouched() -> None:
    link = RecordingLink("c1")
    assert Delivery().link(link, Recipient("anonymous"), "b") is link


# -- through a running gateway, with a real backend -------------------------------------------


@pytest.fixture(params=["legacy", "modern"])
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    backend = {
        "command": PYTHON,
        "args": [str(FIXTURES / "conformance_server.py")],
        "prefix": "",
        "era": request.param,
    }
    plan = compile_plan(SwitchyardConfig.model_validate({"servers": {"cf": backend}}))
    gw = Gateway(plan)
    await asyncio.wait_for(gw.start(), 30)
    assert gw.backends["cf"].is_up, gw.readiness()
    try:
        yield gw
    finally:
        await asyncio.wait_for(gw.stop(), 30)


def _context(gw: Gateway, link: RecordingLink, pushed: list[tuple[str, Any]]) -> RequestContext:
    session = gw.sessions.create("test", f"api_key#{link.name}", identity=Identity(link.name))
    assert session is not None
    return RequestContext(
        era=Era.LEGACY,
        version="2025-11-25",
        transport="test",
        session_id=session.id,
        client_capabilities=Raw(b'{"sampling":{},"elicitation":{}}'),
        link=link,
        principal=f"api_key#{link.name}",
        identity=Identity(link.name),
        session_push=lambda m, p: pushed.append((m, json.loads(p) if p else None)),
        log_level="debug",
    )


async def _call(gw: Gateway, ctx: RequestContext, tool: str, **arguments: Any) -> Any:
    params = {"name": tool, "arguments": arguments, "_meta": {"progressToken": "tok"}}
    reply = await asyncio.wait_for(
        gw.dispatcher.request(ctx, methods.TOOLS_CALL, Raw(json.dumps(params).encode())), 30
    )
    assert reply.result is not None, reply.error
    return json.loads(reply.result)


async def test_every_kind_of_client_bound_message_passes_the_hook_addressed(
    gateway: Gateway,
) -> None:
    """Progress, log lines, a server->client request and a resource update, for two callers
    at once: the hook sees each one addressed to the caller it reaches, and what it rewrites
    is what the client gets."""
    seen: list[ClientMessage] = []

    def tag(message: ClientMessage) -> ClientMessage | None:
        seen.append(message)
        if message.method == methods.PROGRESS:
            params = json.loads(message.params or b"{}")
            params["message"] = f"for {message.recipient.key}"
            return message.with_params(json.dumps(params).encode())
        return message

    gateway.delivery.add_hook("tag", tag)
    alice, bob = RecordingLink("alice"), RecordingLink("bob")
    alice_pushed: list[tuple[str, Any]] = []
    bob_pushed: list[tuple[str, Any]] = []
    ctx_a, ctx_b = _context(gateway, alice, alice_pushed), _context(gateway, bob, bob_pushed)
    sub = Raw(json.dumps({"uri": WATCHED}).encode())
    subscribed = await gateway.dispatcher.request(ctx_a, methods.SUBSCRIBE, sub)
    assert subscribed.result is not None, subscribed.error

    await asyncio.gather(
        _call(gateway, ctx_a, "test_tool_with_progress"),
        _call(gateway, ctx_b, "test_tool_with_progress"),
        _call(gateway, ctx_b, "test_sampling", prompt="p"),
    )
    # Log lines on stdio name no request: they are provably alice's only while no one else
    # calls the same connection (a modern backend's is shared).
    await _call(gateway, ctx_a, "test_tool_with_logging")
    answer = await _call(gateway, ctx_a, "update_watched_resource")
    assert "updated" in answer["content"][0]["text"]
    # The backend sent the update before its answer, on one ordered stream: it has arrived.

    for link in (alice, bob):
        progress = [p for m, p in link.notifications if m == methods.PROGRESS]
        assert [p["progress"] for p in progress] == [0, 50, 100]
        assert {p["message"] for p in progress} == {f"for api_key#{link.name}"}
    assert [m for m, _ in alice.notifications if m == methods.MESSAGE] == [methods.MESSAGE] * 3
    assert not any(m == methods.MESSAGE for m, _ in bob.notifications)
    assert [m for m, _ in bob.asked] == ["sampling/createMessage"] and alice.asked == []
    assert alice_pushed == [(methods.RESOURCE_UPDATED, {"uri": WATCHED})] and bob_pushed == []

    by_method: dict[str, set[str]] = {}
    for message in seen:
        assert message.backend == "cf"
        by_method.setdefault(message.method, set()).add(message.recipient.key)
    assert by_method[methods.PROGRESS] == {"api_key#alice", "api_key#bob"}
    assert by_method[methods.MESSAGE] == {"api_key#alice"}
    assert by_method["sampling/createMessage"] == {"api_key#bob"}
    assert by_method[methods.RESOURCE_UPDATED] == {"api_key#alice"}
    assert [m.request for m in seen if m.method == "sampling/createMessage"] == [True]


async def test_a_hook_that_drops_log_lines_leaves_the_result_intact(gateway: Gateway) -> None:
    gateway.delivery.add_hook("no-logs", lambda m: None if m.method == methods.MESSAGE else m)
    alice = RecordingLink("alice")
    ctx = _context(gateway, alice, [])
    answer = await _call(gateway, ctx, "test_tool_with_logging")
    assert answer["content"][0]["text"] == "Tool with logging executed successfully"
    assert alice.notifications == []
    assert gateway.delivery.dropped["no-logs"] == 3
    assert gateway.readiness()[1]["undelivered"] == {"no-logs": 3}
