from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from switchyard.forwarder import Forwarder
from switchyard.policies.base import Call, Policy, PolicySpec, RequestContext, build_chain
from switchyard.protocol import codes
from switchyard.protocol.versions import Era
from switchyard.routing import catalog
from switchyard.routing.catalog import Entry, Listing
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
    return Forwarder(backends={}, current_catalog=lambda view: CATALOG, page_size=10)


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


async def test_filtered_tool_is_not_callable_either() -> None:
    handler = build_chain([PolicySpec(HideSecret)], "tools/call", forwarder().call_tool)
    reply = await handler(make_call("tools/call", b'{"name":"a_secret_keys"}'))
    err = frame.decode_error(reply.error or b"")
    assert (err.code, err.message) == (codes.INVALID_PARAMS, "Unknown tool: a_secret_keys")


async def test_filtered_resource_is_not_found() -> None:
    handler = build_chain([PolicySpec(HideSecret)], "resources/read", forwarder().read_resource)
    reply = await handler(make_call("resources/read", b'{"uri":"mem://secret"}'))
    err = frame.decode_error(reply.error or b"")
    assert err.code == codes.RESOURCE_NOT_FOUND_LEGACY
    assert err.message == "Resource not found: mem://secret"


def test_call_allowed_requires_every_filter() -> None:
    call = make_call("tools/list")
    entry = CATALOG.lookup(catalog.TOOLS, "a_open")
    assert isinstance(entry, Entry)
    assert call.allowed(entry)
    call.add_list_filter(lambda e: True)
    call.add_list_filter(lambda e: False)
    assert not call.allowed(entry)
