"""Redaction in the chain: arguments on the way in, results on the way out.

It sits innermost, next to the backend (§2 order): what a backend answers is redacted before
any policy outside it (the access record, audit, a cache) sees it, and what goes to the
backend is redacted after every check on the caller's request. A caller's own tokens are
resolved last on the way in, so detectors judge what the caller sent, not the values the
tokens stand for.
"""

from __future__ import annotations

from typing import Final

import msgspec

from switchyard.call import Call
from switchyard.observability import decisions
from switchyard.policies.base import Policy
from switchyard.protocol import codes, methods
from switchyard.protocol.versions import Era
from switchyard.redaction.engine import Blocked, Redactor, Withheld, withheld_result
from switchyard.routing import catalog
from switchyard.upstream.connection import protocol_error
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

_WITH_ARGUMENTS: Final = frozenset({methods.TOOLS_CALL, methods.PROMPTS_GET})
_UNREADABLE_RECORD: Final = msgspec.json.encode("[withheld: the arguments could not be read]")


class Redaction(Policy):
    methods = frozenset(
        {
            methods.TOOLS_CALL,
            methods.PROMPTS_GET,
            methods.RESOURCES_READ,
            methods.COMPLETE,
            methods.TASKS_GET,
            methods.TASKS_RESULT,
        }
    )
    settings: Redactor

    async def __call__(self, call: Call) -> Reply:
        engine = self.settings
        ctx = call.ctx
        route = call.route
        if route is not None and call.method in _WITH_ARGUMENTS:
            fields = call.fields()
            arguments = fields.get("arguments")
            if arguments is not None:
                if decisions.wanted():
                    # What the caller sent, redacted and with its tokens still tokens (the
                    # forwarded copy below has them resolved): the record (audit) never holds
                    # what the backend alone may see.
                    call.recorded_arguments = arguments
                    try:
                        recorded = engine.redact_for_record(
                            ctx.identity, ctx.view, route.backend, route.name, bytes(arguments)
                        )
                    except msgspec.DecodeError:
                        recorded = _UNREADABLE_RECORD
                    if recorded is not None:
                        call.recorded_arguments = Raw(recorded)
                try:
                    redacted = engine.redact_arguments(
                        ctx.identity, ctx.view, route.backend, route.name, bytes(arguments)
                    )
                except Blocked as blocked:
                    return frame.error_reply(
                        codes.INVALID_PARAMS,
                        f"Invalid params: redaction rule {blocked.rule!r} refuses "
                        f"{blocked.detector} in arguments",
                        _data(blocked, route.backend),
                    )
                except msgspec.DecodeError:
                    # Unreachable from the wire (a frame is decoded whole first); should it
                    # happen, arguments that cannot be read are not sent on unread.
                    return frame.error_reply(
                        codes.INVALID_PARAMS,
                        "Invalid params: the arguments could not be read to redact them",
                        {"source": "gateway", "backend": route.backend},
                    )
                if redacted is not None:
                    # The terminal forwards these decoded fields; `params` follows them.
                    fields["arguments"] = Raw(redacted)
                    call.params = Raw(frame.encode_object(fields))
        reply = await self.next(call)
        route = call.route  # a task's route is known only once the terminal has run
        if reply.result is None or route is None:
            return reply
        tool = route.entry.item if route.kind == catalog.TOOLS else None
        # A task is named by its id, not by its tool: a rule's `names` cannot tell it apart.
        name = route.name if route.kind in catalog.KINDS else None
        try:
            out = engine.redact_result(
                call.method, ctx.identity, ctx.view, route.backend, name, reply.result, tool
            )
        except Blocked as blocked:
            return frame.error_reply(
                codes.REDACTION_BLOCKED,
                f"redaction rule {blocked.rule!r} refused the result: it holds {blocked.detector}",
                _data(blocked, route.backend),
            )
        except msgspec.DecodeError:
            # As for arguments: a result that cannot be read is not passed on unread.
            return protocol_error(route.backend, "its result could not be read to redact it")
        if isinstance(out, Withheld):
            return Reply(result=withheld_result(out, ctx.era is Era.MODERN))
        if out is not None:
            reply.result = out
        return reply


def _data(blocked: Blocked, backend: str) -> dict[str, str]:
    return {
        "source": "gateway",
        "backend": backend,
        "rule": blocked.rule,
        "detector": blocked.detector,
        "direction": blocked.direction.value,
    }
