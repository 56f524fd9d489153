"""The redaction policy in a chain never passes on what it could not read: arguments or a
result it cannot decode are refused, and an audit record never keeps them. Frames are decoded
whole at the wire (tests/unit/test_frame.py), so only a caller past it could hand over such
bytes; the policy does not rely on that."""

from __future__ import annotations

import pytest

from switchyard.call import Call, Handler, RequestContext
from switchyard.config.redaction import compile_redaction
from switchyard.config.schema import RedactionConfig
from switchyard.observability import decisions
from switchyard.policies.base import PolicySpec, build_chain
from switchyard.policies.redaction import Redaction
from switchyard.protocol import codes
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry
from switchyard.routing.router import Route
from switchyard.wire import frame
from switchyard.wire.frame import Reply

pytestmark = pytest.mark.anyio

SECRET = b"ada.lovelace@example.com"
ROUTE = Route(
    "tools",
    "crm",
    "send",
    "crm_send",
    Entry("tools", "crm_send", "crm", "send", b'{"name":"send","inputSchema":{"type":"object"}}'),
)


def chain(result: bytes, ran: list[bytes]) -> Handler:
    config = RedactionConfig.model_validate(
        {"rules": [{"name": "e", "detectors": ["email"], "action": "mask"}]}
    )
    engine = compile_redaction(config, "api_key", lambda v, w: v, ValueError)
    assert engine is not None

    async def backend(call: Call) -> Reply:
        ran.append(bytes(call.params or b""))
        return Reply(result=result)

    return build_chain([PolicySpec(Redaction, engine)], "tools/call", backend)


def call(arguments: bytes) -> Call:
    ctx = RequestContext(Era.LEGACY, "2025-11-25", "test", principal="api_key#alice")
    params = b'{"name":"crm_send","arguments":' + arguments + b"}"
    return Call("tools/call", params, ctx, route=ROUTE)


async def test_a_result_that_cannot_be_read_is_refused_not_passed_on() -> None:
    ran: list[bytes] = []
    unreadable = b'{"content":[{"type":"text","text":"' + SECRET + b' \xff"}]}'
    reply = await chain(unreadable, ran)(call(b'{"q":"x"}'))
    assert len(ran) == 1
    assert reply.result is None and reply.error is not None
    error = frame.decode_error(reply.error)
    assert error.code == codes.BACKEND_PROTOCOL_ERROR
    assert error.data == {"source": "gateway", "backend": "crm"}
    assert SECRET not in reply.error


async def test_arguments_that_cannot_be_read_never_reach_the_backend_or_the_record() -> None:
    ran: list[bytes] = []
    records: list[object] = []
    decisions.add_sink(records.append)  # someone reads records: the policy keeps arguments
    try:
        the_call = call(b'{"to":"' + SECRET + b' \xc0\xaf"}')
        reply = await chain(b'{"content":[]}', ran)(the_call)
    finally:
        decisions.remove_sink(records.append)
    assert ran == []
    assert reply.error is not None
    assert frame.decode_error(reply.error).code == codes.INVALID_PARAMS
    assert bytes(the_call.recorded_arguments or b"") == (
        b'"[withheld: the arguments could not be read]"'
    )
