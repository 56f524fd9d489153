from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from switchyard.bridge import ParkedCalls
from switchyard.call import API_KEYS, Identity
from switchyard.dispatcher import Dispatcher
from switchyard.forwarder import Forwarder
from switchyard.policies.access import AccessControl, AccessRules, Rule
from switchyard.policies.base import Call, Policy, PolicySpec, RequestContext, build_chain
from switchyard.protocol import codes
from switchyard.protocol.versions import Era
from switchyard.routing import catalog
from switchyard.routing.catalog import Entry, Listing
from switchyard.routing.router import Router
from switchyard.subscriptions import Subscriptions
from switchyard.tasks import TaskRoutes
from switchyard.wire import frame
from switchyard.wire.frame import Reply

pytestmark = pytest.mark.anyio


def make_call(method: str, params: bytes | None = None) -> Call:
    ctx = RequestContext(era=Era.LEGACY, version="2025-06-18", transport="test")
    return Call(method=method, params=frame.Raw(params) if params is not None else None, ctx=ctx)


class Recorder(Policy):
    """Logs its name on the way in and out into the shared list in `settings`."""

    label: ClassVar[str] = "?"

    async def __call__(self, call: Call) -> Reply:
        log: list[str] = self.settings
        log.append(f"{self.label} in")
        reply = await self.next(call)
        log.append(f"{self.label} out")
        return reply


class A(Recorder):
    label = "A"


class B(Recorder):
    label = "B"


class C(Recorder):
    label = "C"


class ToolsOnly(Recorder):
    label = "T"
    methods = frozenset({"tools/call"})


def terminal_for(log: list[str], result: bytes = b'{"ok":true}') -> Any:
    async def terminal(call: Call) -> Reply:
        log.append("terminal")
        return Reply(result=result)

    return terminal


async def test_policies_run_outer_first_in_and_reverse_out() -> None:
    log: list[str] = []
    specs = [PolicySpec(A, log), PolicySpec(B, log), PolicySpec(C, log)]
    handler = build_chain(specs, "tools/call", terminal_for(log))
    reply = await handler(make_call("tools/call"))
    assert reply.result == b'{"ok":true}'
    assert log == ["A in", "B in", "C in", "terminal", "C out", "B out", "A out"]


async def test_chain_is_reusable() -> None:
    log: list[str] = []
    handler = build_chain([PolicySpec(A, log)], "ping", terminal_for(log))
    await handler(make_call("ping"))
    await handler(make_call("ping"))
    assert log == ["A in", "terminal", "A out"] * 2


async def test_method_limited_policy_is_absent_from_other_methods() -> None:
    log: list[str] = []
    specs = [PolicySpec(A, log), PolicySpec(ToolsOnly, log), PolicySpec(B, log)]
    await build_chain(specs, "prompts/get", terminal_for(log))(make_call("prompts/get"))
    assert log == ["A in", "B in", "terminal", "B out", "A out"]
    log.clear()
    await build_chain(specs, "tools/call", terminal_for(log))(make_call("tools/call"))
    assert log == ["A in", "T in", "B in", "terminal", "B out", "T out", "A out"]


def test_no_applicable_policy_leaves_the_terminal_itself() -> None:
    log: list[str] = []
    terminal = terminal_for(log)
    assert build_chain([PolicySpec(ToolsOnly, log)], "ping", terminal) is terminal
    assert build_chain([], "tools/call", terminal) is terminal


def test_policy_receives_its_settings() -> None:
    settings = {"limit": 3}
    handler = build_chain([PolicySpec(Policy, settings)], "ping", terminal_for([]))
    assert isinstance(handler, Policy)
    assert handler.settings is settings


class Deny(Policy):
    async def __call__(self, call: Call) -> Reply:
        return frame.error_reply(codes.INVALID_PARAMS, "denied by policy")


async def test_policy_can_answer_locally_without_calling_next() -> None:
    log: list[str] = []
    specs = [PolicySpec(A, log), PolicySpec(Deny), PolicySpec(B, log)]
    reply = await build_chain(specs, "tools/call", terminal_for(log))(make_call("tools/call"))
    assert reply.is_error
    assert json.loads(reply.error or b"") == {"code": -32602, "message": "denied by policy"}
    assert log == ["A in", "A out"]


class Rewrite(Policy):
    async def __call__(self, call: Call) -> Reply:
        reply = await self.next(call)
        return Reply(result=b'{"wrapped":' + (reply.result or b"null") + b"}")


async def test_outer_policy_sees_and_may_replace_the_inner_reply() -> None:
    handler = build_chain([PolicySpec(Rewrite)], "x", terminal_for([], b"[1]"))
    reply = await handler(make_call("x"))
    assert reply.result == b'{"wrapped":[1]}'


# -- list filters --------------------------------------------------------------------------


class HideSecret(Policy):
    async def __call__(self, call: Call) -> Reply:
        call.add_list_filter(lambda e: "secret" not in e.original)
        return await self.next(call)


class OnlyBackendA(Policy):
    async def __call__(self, call: Call) -> Reply:
        call.add_list_filter(lambda e: e.backend == "a")
        return await self.next(call)


def _item(**fields: Any) -> dict[str, frame.Raw]:
    return frame.decode_object(json.dumps(fields).encode())


CATALOG = catalog.build(
    [
        Listing(
            "a",
            "a",
            {
                catalog.TOOLS: (_item(name="open"), _item(name="secret_keys")),
                catalog.RESOURCES: (_item(uri="mem://secret", name="s"),),
            },
        ),
        Listing("b", "b", {catalog.TOOLS: (_item(name="other"),)}),
    ],
    "_",
)


def forwarder() -> Forwarder:
    return Forwarder(
        backends={},
        current_catalog=lambda view: CATALOG,
        page_size=10,
        instructions=None,
        parked=ParkedCalls(),
        subscriptions=Subscriptions({}),
        tasks=TaskRoutes(),
    )


def dispatcher(rules: AccessRules) -> Dispatcher:
    fwd = forwarder()
    return Dispatcher(
        fwd, [PolicySpec(AccessControl, rules)], Router(lambda view: CATALOG, fwd.sole_server)
    )


NO_SECRETS = AccessRules(
    (
        Rule.build(True, None, None, ["*"], ["*"], list(catalog.KINDS)),
        Rule.build(False, None, None, ["*"], ["*secret*"], list(catalog.KINDS)),
    )
)
WHO = Identity("alice", issuer=API_KEYS)


def ctx_of(who: Identity) -> RequestContext:
    return RequestContext(
        era=Era.LEGACY, version="2025-06-18", transport="test", identity=who, principal=who.key
    )


async def test_list_filter_hides_entries_from_lists() -> None:
    handler = build_chain([PolicySpec(HideSecret)], "tools/list", forwarder().list)
    reply = await handler(make_call("tools/list", b"{}"))
    assert [t["name"] for t in json.loads(reply.result or b"")["tools"]] == ["a_open", "b_other"]


async def test_list_filters_compose() -> None:
    specs = [PolicySpec(HideSecret), PolicySpec(OnlyBackendA)]
    handler = build_chain(specs, "tools/list", forwarder().list)
    reply = await handler(make_call("tools/list", b"{}"))
    assert [t["name"] for t in json.loads(reply.result or b"")["tools"]] == ["a_open"]


async def test_without_filters_everything_is_listed() -> None:
    reply = await forwarder().list(make_call("tools/list", b"{}"))
    names = [t["name"] for t in json.loads(reply.result or b"")["tools"]]
    assert names == ["a_open", "a_secret_keys", "b_other"]


async def test_a_denied_tool_is_refused_before_the_terminal_like_an_unknown_one() -> None:
    d = dispatcher(NO_SECRETS)
    denied = await d.request(ctx_of(WHO), "tools/call", frame.Raw(b'{"name":"a_secret_keys"}'))
    unknown = await d.request(ctx_of(WHO), "tools/call", frame.Raw(b'{"name":"a_nothing"}'))
    err = frame.decode_error(denied.error or b"")
    assert (err.code, err.message) == (codes.INVALID_PARAMS, "Unknown tool: a_secret_keys")
    assert frame.decode_error(unknown.error or b"").code == err.code


async def test_a_denied_resource_is_not_found() -> None:
    d = dispatcher(NO_SECRETS)
    reply = await d.request(ctx_of(WHO), "resources/read", frame.Raw(b'{"uri":"mem://secret"}'))
    err = frame.decode_error(reply.error or b"")
    assert err.code == codes.RESOURCE_NOT_FOUND_LEGACY
    assert err.message == "Resource not found: mem://secret"


async def test_the_route_is_resolved_before_the_chain() -> None:
    seen: list[tuple[str | None, str | None, str | None]] = []

    class Look(Policy):
        async def __call__(self, call: Call) -> Reply:
            route = call.route
            seen.append((route.backend, route.name, route.public) if route else (None,) * 3)
            return Reply(result=b"{}")

    fwd = forwarder()
    d = Dispatcher(fwd, [PolicySpec(Look)], Router(lambda view: CATALOG, fwd.sole_server))
    ctx = ctx_of(WHO)
    await d.request(ctx, "tools/call", frame.Raw(b'{"name":"b_other"}'))
    await d.request(ctx, "resources/read", frame.Raw(b'{"uri":"mem://secret"}'))
    await d.request(ctx, "tools/call", frame.Raw(b'{"name":"nope"}'))
    assert seen == [
        ("b", "other", "b_other"),
        ("a", "mem://secret", "mem://secret"),
        (None, None, None),
    ]


async def test_malformed_params_get_invalid_params_not_a_crash() -> None:
    d = dispatcher(NO_SECRETS)
    for method, params in [
        ("tools/call", b"[1]"),
        ("completion/complete", b'{"ref":"x"}'),
        ("resources/read", b'{"uri":5}'),
        ("tools/call", b'{"name":5}'),
    ]:
        reply = await d.request(ctx_of(WHO), method, frame.Raw(params))
        assert reply.error is not None, (method, params)
        assert frame.decode_error(reply.error).code == codes.INVALID_PARAMS, (method, params)


def test_call_allowed_requires_every_filter() -> None:
    call = make_call("tools/list")
    entry = CATALOG.lookup(catalog.TOOLS, "a_open")
    assert isinstance(entry, Entry)
    assert call.allowed(entry)
    call.add_list_filter(lambda e: True)
    call.add_list_filter(lambda e: False)
    assert not call.allowed(entry)
