"""The terminal handlers: what Switchyard answers itself, and how it forwards the rest.

The route was resolved before the policy chain (`routing/router.py`); a terminal forwards it.
Forwarded payloads stay raw: only the routed name is rewritten, and only the fields an era
requires are added or removed. The forwarder keeps no state of its own: parked calls, task
routes and subscriptions belong to the gateway and are handed in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import switchyard
from switchyard.bridge import ParkedCalls
from switchyard.call import Call, Handler, RequestContext
from switchyard.delivery import Delivery, Recipient
from switchyard.observability.metrics import metrics
from switchyard.observability.tracing import Span, tracer, with_trace_meta
from switchyard.protocol import codes, eras, methods, param_headers
from switchyard.protocol.link import LOG_LEVELS, ClientLink
from switchyard.protocol.versions import MODERN_VERSIONS, Era, negotiate_handshake
from switchyard.routing import catalog
from switchyard.routing.catalog import Catalog, Entry
from switchyard.routing.router import Route, invalid_params, str_field, unroutable
from switchyard.subscriptions import Subscriptions
from switchyard.tasks import TaskRoutes
from switchyard.upstream import retries
from switchyard.upstream.backend import Backend
from switchyard.upstream.connection import protocol_error
from switchyard.upstream.outbound import Caller, Outbound
from switchyard.upstream.progress import progress_token
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

SERVER_INFO: Final = {
    "name": "switchyard",
    "title": "Switchyard",
    "version": switchyard.__version__,
}
# Requests whose results may be `input_required` (2026-07-28 MRTR).
MRTR_METHODS: Final = frozenset({methods.TOOLS_CALL, methods.PROMPTS_GET, methods.RESOURCES_READ})
# Input-required rounds one call may take before Switchyard gives up on the backend.
MAX_INPUT_ROUNDS: Final = 8
_MODERN_LIST_TAIL: Final = b',"resultType":"complete","ttlMs":0,"cacheScope":"private"}'
_LIST_KIND: Final = {
    methods.TOOLS_LIST: catalog.TOOLS,
    methods.PROMPTS_LIST: catalog.PROMPTS,
    methods.RESOURCES_LIST: catalog.RESOURCES,
    methods.TEMPLATES_LIST: catalog.TEMPLATES,
}
# Primitives whose list changes Switchyard announces (backends come and go at run time).
_LISTED: Final = ("tools", "prompts", "resources")


class Forwarder:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        current_catalog: Callable[[str | None], Catalog],
        page_size: int,
        instructions: str | None,
        parked: ParkedCalls,
        subscriptions: Subscriptions,
        tasks: TaskRoutes,
        delivery: Delivery | None = None,
    ) -> None:
        self.backends = backends
        self.catalog = current_catalog
        self.page_size = page_size
        self.instructions = instructions
        self.parked = parked
        self.subscriptions = subscriptions
        self.tasks = tasks
        self.delivery = delivery if delivery is not None else Delivery()
        self.freshen: Callable[[str], Awaitable[None]] | None = None
        """Lists again what a backend's `ttlMs` says has run out, before a list is served."""
        self.list_hints: Callable[[str | None, str], tuple[int, bool]] | None = None
        """The (`ttlMs`, public) of a view's list of a kind, from its backends' own."""
        self.caller_catalog: Callable[[RequestContext, str, bool], Awaitable[Catalog]] | None
        self.caller_catalog = None
        """The caller's own catalog of a kind (re-listed first where due, when asked), where
        some backend lists per caller (caller_lists.py); None: `catalog` serves everyone."""

    def terminals(self) -> dict[str, Handler]:
        return {
            methods.INITIALIZE: self.initialize,
            methods.DISCOVER: self.discover,
            methods.PING: self.ping,
            methods.TOOLS_LIST: self.list,
            methods.PROMPTS_LIST: self.list,
            methods.RESOURCES_LIST: self.list,
            methods.TEMPLATES_LIST: self.list,
            methods.TOOLS_CALL: self.call_tool,
            methods.PROMPTS_GET: self.get_prompt,
            methods.RESOURCES_READ: self.read_resource,
            methods.COMPLETE: self.complete,
            methods.SUBSCRIBE: self.subscribe,
            methods.UNSUBSCRIBE: self.unsubscribe,
            methods.SET_LEVEL: self.set_level,
            methods.TASKS_GET: self.task,
            methods.TASKS_RESULT: self.task,
            methods.TASKS_CANCEL: self.task,
            methods.TASKS_UPDATE: self.task,
            methods.TASKS_LIST: self.list_tasks,
        }

    async def method_not_found(self, call: Call) -> Reply:
        return frame.error_reply(codes.METHOD_NOT_FOUND, f"Method not found: {call.method}")

    # -- answered by Switchyard ------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        """The union of what the backends offer and Switchyard serves; never hard-coded."""
        offered: set[str] = set()
        subscribe = False
        for backend in self.backends.values():
            offered.update(backend.known_capabilities)
            resources = backend.known_capabilities.get("resources")
            subscribe = subscribe or (
                isinstance(resources, dict) and bool(resources.get("subscribe"))
            )
        caps: dict[str, Any] = {}
        for primitive in _LISTED:
            if primitive in offered:
                caps[primitive] = {"listChanged": True}
        if subscribe:
            caps["resources"]["subscribe"] = True
        if "completions" in offered:
            caps["completions"] = {}
        if "logging" in offered:
            caps["logging"] = {}
        tasks: dict[str, Any] = {}
        for backend in self.backends.values():
            if isinstance(offer := backend.known_capabilities.get("tasks"), dict):
                _merge(tasks, offer)
        if tasks:
            caps["tasks"] = tasks
        return caps

    async def initialize(self, call: Call) -> Reply:
        fields = call.fields()
        requested = (
            frame.decode_any(fields["protocolVersion"]) if "protocolVersion" in fields else None
        )
        if not isinstance(requested, str):
            return invalid_params("initialize requires a protocolVersion string")
        result: dict[str, Any] = {
            "protocolVersion": negotiate_handshake(requested),
            "capabilities": self.capabilities(),
            "serverInfo": SERVER_INFO,
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return Reply(result=frame.encode(result))

    async def discover(self, call: Call) -> Reply:
        result: dict[str, Any] = {
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": self.capabilities(),
            "_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO},
        }
        if self.instructions:
            result["instructions"] = self.instructions
        if call.ctx.era is Era.MODERN:
            result.update(resultType="complete", ttlMs=0, cacheScope="private")
        return Reply(result=frame.encode(result))

    async def ping(self, call: Call) -> Reply:
        # SDK clients still ping after negotiating 2026-07-28, where every result is typed.
        modern = call.ctx.era is Era.MODERN
        return Reply(result=b'{"resultType":"complete"}' if modern else b"{}")

    async def list(self, call: Call) -> Reply:
        kind = _LIST_KIND[call.method]
        raw_cursor = call.fields().get("cursor")
        cursor = frame.decode_any(raw_cursor) if raw_cursor is not None else None
        if cursor is not None and not isinstance(cursor, str):
            return invalid_params("cursor must be a string")
        if self.freshen is not None and cursor is None:
            # Once per walk: the later pages continue the listing the first one came from.
            await self.freshen(kind)
        own = self.caller_catalog
        cat = (
            self.catalog(call.ctx.view)
            if own is None
            else await own(call.ctx, kind, cursor is None)
        )
        try:
            body = cat.page(
                kind, cursor, self.page_size, call.allowed if call.list_filters else None
            )
        except catalog.InvalidCursor:
            return invalid_params("Invalid cursor")
        if call.ctx.era is Era.MODERN:
            body = body[:-1] + self._list_tail(call, kind)
        return Reply(result=body)

    def _list_tail(self, call: Call, kind: str) -> bytes:
        """The end of a 2026-07-28 list result: the shortest remaining lifetime of its parts;
        `public` only when every part is and the list is the same for every caller (no
        identity, no filter): what a shared cache may hand to anyone."""
        hints = self.list_hints
        if hints is None:
            return _MODERN_LIST_TAIL
        ttl, public = hints(call.ctx.view, kind)
        if ttl <= 0:
            return _MODERN_LIST_TAIL
        shared = public and call.ctx.identity is None and not call.list_filters
        scope = b"public" if shared else b"private"
        return b',"resultType":"complete","ttlMs":%d,"cacheScope":"%s"}' % (ttl, scope)

    # -- routed to a backend -----------------------------------------------------------------

    async def call_tool(self, call: Call) -> Reply:
        return await self._routed(call)

    async def get_prompt(self, call: Call) -> Reply:
        return await self._routed(call)

    async def read_resource(self, call: Call) -> Reply:
        reply = await self._routed(call)
        if call.ctx.identity is not None and reply.result and b'"public"' in reply.result:
            # Behind authentication a read is the caller's: a shared cache that kept it as
            # public would hand it to callers the access rules refuse.
            reply.result = _scoped_private(reply.result)
        return reply

    async def complete(self, call: Call) -> Reply:
        return await self._routed(call)

    async def _routed(self, call: Call) -> Reply:
        route = call.route
        fields = call.fields()
        if route is None:
            return unroutable(call.method, call.ctx.era, fields)
        if call.method in (methods.TOOLS_CALL, methods.PROMPTS_GET):
            fields["name"] = Raw(frame.encode(route.name))
            return await self._forward(call, fields, route.name)
        if call.method == methods.COMPLETE and route.kind == catalog.PROMPTS:
            ref = frame.decode_object(fields["ref"])
            ref["name"] = Raw(frame.encode(route.name))
            fields["ref"] = Raw(frame.encode_object(ref))
        # A read's URI is its `Mcp-Name` toward a 2026-07-28 backend.
        uri = route.name if call.method == methods.RESOURCES_READ else None
        return await self._forward(call, fields, uri)

    # -- tasks (2025-11-25) ----------------------------------------------------------------------

    def _remember_task(self, call: Call, backend: Backend, result: bytes) -> None:
        """A call answered with a CreateTaskResult: later tasks/* for its id go to `backend`."""
        try:
            task = frame.decode_object(frame.decode_object(result)["task"])
            task_id = frame.decode_str(task["taskId"])
        except (KeyError, frame.DecodeError, frame.ValidationError):
            return
        ctx = call.ctx
        owner = backend.owner_for(ctx.session_id, ctx.principal) if backend.isolates() else None
        self.tasks.remember(
            _recipient(call),
            task_id,
            backend.name,
            str(owner) if owner else None,
            ctx.session_push,
        )

    async def task(self, call: Call) -> Reply:
        fields = call.fields()
        task_id = str_field(fields, "taskId")
        backend = self.tasks.backend_of(call.ctx.caller, task_id) if task_id else None
        if task_id is None or backend is None:
            # Another caller's task is indistinguishable from one that does not exist.
            return invalid_params(f"Unknown task: {task_id}")
        entry = Entry("tasks", task_id, backend, task_id, b"")
        call.route = Route("tasks", backend, task_id, task_id, entry)
        return await self._forward(call, fields, None)

    async def list_tasks(self, call: Call) -> Reply:
        mine = self.tasks.mine(call.ctx.caller)
        listed: list[Raw] = []
        for backend in self.backends.values():
            caps = backend.known_capabilities.get("tasks")
            if not backend.is_up or not isinstance(caps, dict) or "list" not in caps:
                continue
            if not call.reaches(backend.name):
                continue
            reply = await backend.request(self._outbound(call, backend, methods.TASKS_LIST, None))
            if reply.result is None:
                continue
            for raw in frame.decode_array(
                frame.decode_object(reply.result).get("tasks", Raw(b"[]"))
            ):
                task_id = str_field(frame.decode_object(raw), "taskId")
                if task_id in mine:
                    listed.append(raw)
        return Reply(result=frame.encode_object({"tasks": listed}))

    def sole_server(self, feature: str | None) -> str | None:
        """The only backend able to serve resources (with `feature`), for URIs nobody lists."""
        able = [
            b.name
            for b in self.backends.values()
            if b.is_up
            and isinstance(caps := b.known_capabilities.get("resources"), dict)
            and (feature is None or caps.get(feature))
        ]
        return able[0] if len(able) == 1 else None

    async def subscribe(self, call: Call) -> Reply:
        return await self._subscription(call, True)

    async def unsubscribe(self, call: Call) -> Reply:
        return await self._subscription(call, False)

    async def _subscription(self, call: Call, on: bool) -> Reply:
        route = call.route
        if route is None:
            return unroutable(call.method, call.ctx.era, call.fields())
        key, push = call.ctx.session_id, call.ctx.session_push
        if key is None or push is None:
            return frame.error_reply(codes.METHOD_NOT_FOUND, f"{call.method} needs a session")
        backend = self.backends[route.backend]
        uri = route.name
        if not on:
            await self.subscriptions.remove(key, uri)
            return Reply(result=b"{}")
        if not backend.supports_subscribe:
            return frame.error_reply(
                codes.METHOD_NOT_FOUND, f"backend {backend.name!r} offers no resource subscriptions"
            )
        out = self._outbound(call, backend, call.method, frame.encode({"uri": uri}))
        return await self.subscriptions.add(key, push, uri, backend, out, call.ctx.identity)

    async def set_level(self, call: Call) -> Reply:
        level = str_field(call.fields(), "level")
        if level not in LOG_LEVELS or call.params is None:
            return invalid_params(f"level must be one of {', '.join(LOG_LEVELS)}")
        # Legacy backends hear it now, in the caller's own session when isolated; modern
        # backends receive the session's level on each request instead.
        params = bytes(call.params)
        await asyncio.gather(
            *(
                b.set_level(self._outbound(call, b, call.method, params))
                for b in self.backends.values()
                if call.reaches(b.name)
            )
        )
        return Reply(result=b"{}")

    async def _via_parking(
        self, call: Call, backend: Backend, fields: dict[str, Raw], name: str | None
    ) -> Reply:
        """A modern client's call to a legacy backend, which may ask the client mid-call."""
        caller = call.ctx.caller
        token = progress_token(fields)
        if self.parked.owns(fields):
            return await self.parked.resume(caller, fields, self._link(call, backend), token)
        fields.pop("inputResponses", None)
        fields.pop("requestState", None)

        async def run(link: ClientLink) -> Reply:
            return await self._send(call, backend, fields, name, link)

        return await self.parked.start(
            caller, call.ctx.client_capabilities, self._link(call, backend), run, token
        )

    async def _fulfil_for_legacy_client(
        self, call: Call, backend: Backend, fields: dict[str, Raw], name: str | None, reply: Reply
    ) -> Reply:
        """Drive a modern backend's `input_required` rounds with a legacy client's answers;
        the final result comes back in the legacy era's shape (decoded once, here)."""
        for _ in range(MAX_INPUT_ROUNDS):
            assert reply.result is not None
            try:
                result = reply.take_fields()
            except (frame.DecodeError, frame.ValidationError):
                return protocol_error(backend.name, "its result is not a JSON object")
            kind = result.get("resultType")
            if kind is None or frame.decode_any(kind) != "input_required":
                flagged = frame.fields_flagged(result)
                reply.result = eras.strip_modern(reply.result, result)
                reply.note_flag(flagged)
                return reply
            requests = frame.decode_object(result.get("inputRequests", Raw(b"{}")))
            answers = await _ask_all(
                self._link(call, backend), requests, backend.settings.timeout_s
            )
            if isinstance(answers, Reply):
                return answers
            fields["inputResponses"] = Raw(frame.encode_object(answers))
            if "requestState" in result:
                fields["requestState"] = result["requestState"]
            else:
                fields.pop("requestState", None)
            # A retry is a new request: the connection gives it a new id.
            reply = await self._send(call, backend, fields, name)
            if reply.result is None:
                return reply
        return frame.error_reply(
            codes.INTERNAL_ERROR,
            f"backend {backend.name!r} kept asking for input",
            {"source": "gateway"},
        )

    async def _forward(self, call: Call, fields: dict[str, Raw], name: str | None) -> Reply:
        assert call.route is not None
        backend = self.backends[call.route.backend]
        facts = backend.facts
        if facts is None:
            # Answers "unavailable", naming the backend.
            return await backend.request(self._outbound(call, backend, call.method, None))
        client_era = call.ctx.era
        if facts.era is Era.MODERN:
            if client_era is not Era.MODERN or call.ctx.version != facts.version:
                fields = eras.params_for_modern(
                    fields, facts.version, call.ctx.client_capabilities, call.ctx.log_level
                )
        else:
            fields = eras.params_for_legacy(fields)
        if client_era is Era.MODERN and facts.era is Era.LEGACY and call.method in MRTR_METHODS:
            reply = await self._via_parking(call, backend, fields, name)
        else:
            reply = await self._send(call, backend, fields, name)
        if client_era is Era.LEGACY and facts.era is Era.MODERN and reply.result is not None:
            # Decides on the decoded `resultType`, and gives back a legacy-shaped result.
            reply = await self._fulfil_for_legacy_client(call, backend, fields, name, reply)
        if (
            call.method == methods.TOOLS_CALL
            and reply.result is not None
            and "tasks" in facts.capabilities
        ):
            self._remember_task(call, backend, reply.result)
        if reply.result is not None and client_era is Era.MODERN and facts.era is Era.LEGACY:
            try:
                result = reply.take_fields()
                flagged = frame.fields_flagged(result)
                reply.result = eras.result_for_modern(reply.result, result, call.method)
                reply.note_flag(flagged)
            except (frame.DecodeError, frame.ValidationError):
                return protocol_error(backend.name, "its result is not a JSON object")
        return reply

    # -- on the caller's behalf ----------------------------------------------------------------

    def _link(self, call: Call, backend: Backend) -> ClientLink | None:
        """The way back to this call's client for what `backend` sends it, judged on delivery."""
        return self.delivery.link(call.ctx.link, _recipient(call), backend.name)

    async def _send(
        self,
        call: Call,
        backend: Backend,
        fields: dict[str, Raw],
        name: str | None,
        link: ClientLink | None = None,
    ) -> Reply:
        """Forward `fields` as this call's params, with everything the caller's context
        decides: the way back to the client (unless `link` stands in), and which isolated
        upstream session serves it."""
        span = call.span
        if span is not None:
            span = tracer.client_span(span, call.method, backend.name, _span_target(call))
            fields = with_trace_meta(fields, span)
        out = self._outbound(call, backend, call.method, frame.encode_object(fields), name)
        if span is not None:
            out.trace_headers = _trace_headers(span)
        if link is not None:
            out.link = link
        facts = backend.facts
        route = call.route
        # Across eras the result's top level is read on its way back (`_forward`).
        out.result_fields = facts is not None and facts.era is not call.ctx.era
        out.idempotent = retries.safe_to_repeat(
            call.method, route.entry.item if route is not None else None
        )
        if (
            call.method == methods.TOOLS_CALL
            and route is not None
            and facts is not None
            and facts.era is Era.MODERN
        ):
            # A 2026-07-28 backend may require the annotated arguments mirrored in headers.
            out.extra_headers = tuple(
                param_headers.headers_for(route.entry.item, fields.get("arguments"))
            )
        if span is not None:
            return await _observed(backend, out, span)
        if not metrics.enabled:
            return await backend.request(out)
        # Metrics alone (the default): timed here, not in a coroutine of its own.
        started = time.perf_counter()
        try:
            reply = await backend.request(out)
        except BaseException as exc:
            _upstream_measured(backend, out, _failure(exc), started)
            raise
        _upstream_measured(backend, out, _reply_error(reply), started)
        return reply

    def _outbound(
        self,
        call: Call,
        backend: Backend,
        method: str,
        params: bytes | None,
        name: str | None = None,
    ) -> Outbound:
        """The upstream request made on this call's caller's behalf; whatever `backend` sends
        back toward the client passes delivery, addressed to this caller."""
        ctx = call.ctx
        identity = ctx.identity
        delivery = self.delivery
        if delivery.screens:
            recipient = _recipient(call)
            link = delivery.link(ctx.link, recipient, backend.name)
            session_link = delivery.link(ctx.session_link, recipient, backend.name)
        else:
            link, session_link = ctx.link, ctx.session_link
        return Outbound(
            method,
            params,
            name=name,
            link=link,
            caller=Caller(ctx.principal, identity.token if identity is not None else None),
            session=ctx.session_id,
            client_capabilities=ctx.client_capabilities,
            session_link=session_link,
            log_level=ctx.log_level,
        )


async def _observed(backend: Backend, out: Outbound, span: Span) -> Reply:
    """`backend.request(out)` timed for the client-side histogram and ended as `span`."""
    started = time.perf_counter()
    error = "cancelled"
    try:
        reply = await backend.request(out)
        error = _reply_error(reply)
        return reply
    except BaseException as exc:
        error = _failure(exc)
        raise
    finally:
        if metrics.enabled:
            _upstream_measured(backend, out, error, started)
        if error:
            if error.lstrip("-").isdigit():
                span.attributes["rpc.response.status_code"] = error
            span.fail(error)
        tracer.end(span)


def _upstream_measured(backend: Backend, out: Outbound, error: str, started: float) -> None:
    metrics.upstream(backend.name, out.method, error, time.perf_counter() - started)


def _failure(exc: BaseException) -> str:
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "exception"


def _reply_error(reply: Reply) -> str:
    if reply.error is None:
        return ""
    try:
        return str(frame.decode_error(reply.error).code)
    except (frame.DecodeError, frame.ValidationError):
        return "error"


def _span_target(call: Call) -> str | None:
    """A client span's target: a catalog name (bounded), never a resource URI."""
    route = call.route
    if route is None or call.method not in (methods.TOOLS_CALL, methods.PROMPTS_GET):
        return None
    return route.name  # the backend's own name: the client span is the gateway calling it


def _trace_headers(span: Span) -> tuple[tuple[str, str], ...]:
    if span.tracestate:
        return (("traceparent", span.traceparent), ("tracestate", span.tracestate))
    return (("traceparent", span.traceparent),)


def _scoped_private(result: bytes) -> bytes:
    try:
        fields = frame.decode_object(result)
    except (frame.DecodeError, frame.ValidationError):
        return result
    scope = fields.get("cacheScope")
    if scope is None or bytes(scope).strip() != b'"public"':
        return result
    fields["cacheScope"] = Raw(b'"private"')
    return frame.encode_object(fields)


def _recipient(call: Call) -> Recipient:
    return Recipient(call.ctx.caller, call.ctx.identity)


async def _ask_all(
    link: ClientLink | None, requests: dict[str, Raw], timeout: float
) -> dict[str, Raw] | Reply:
    """Put a modern backend's input requests to a legacy client as real requests."""
    answers: dict[str, Raw] = {}
    for key, raw in requests.items():
        request = frame.decode_object(raw)
        method = str_field(request, "method")
        if method is None or link is None:
            return frame.error_reply(
                codes.INTERNAL_ERROR, "cannot relay the backend's input request"
            )
        params = request.get("params")
        answer = await link.ask(method, bytes(params) if params is not None else None, timeout)
        if answer.result is None:
            return answer
        answers[key] = Raw(answer.result)
    return answers


def _merge(into: dict[str, Any], offer: dict[str, Any]) -> None:
    """Union of two capability objects, recursively."""
    for key, value in offer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into.setdefault(key, value)
