"""The terminal handlers: what Switchyard answers itself, and how it routes the rest.

Routing uses the catalog (public name or URI -> backend), never string splitting. Forwarded
payloads stay raw: only the routed name is rewritten, and only the fields an era requires are
added or removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Final

import switchyard
from switchyard.bridge import ParkedCalls
from switchyard.policies.base import Call, Handler
from switchyard.protocol import codes, eras, methods
from switchyard.protocol.link import LOG_LEVELS, ClientLink
from switchyard.protocol.versions import MODERN_VERSIONS, Era, negotiate_handshake
from switchyard.routing import catalog
from switchyard.routing.catalog import Catalog, Entry
from switchyard.subscriptions import Push, Subscriptions
from switchyard.upstream.backend import Backend
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


def invalid_params(message: str) -> Reply:
    return frame.error_reply(codes.INVALID_PARAMS, message)


class Forwarder:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        current_catalog: Callable[[str | None], Catalog],
        page_size: int,
        instructions: str | None = None,
    ) -> None:
        self.backends = backends
        self.catalog = current_catalog
        self.page_size = page_size
        self.instructions = instructions
        self.parked = ParkedCalls()
        self.subscriptions = Subscriptions(backends)
        self.tasks: dict[tuple[str, str], tuple[str, Push | None]] = {}
        """(caller, task id) -> (backend, the caller's session push): tasks route by id."""

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
        try:
            body = self.catalog(call.ctx.view).page(
                kind, cursor, self.page_size, call.allowed if call.list_filters else None
            )
        except catalog.InvalidCursor:
            return invalid_params("Invalid cursor")
        if call.ctx.era is Era.MODERN:
            body = body[:-1] + _MODERN_LIST_TAIL
        return Reply(result=body)

    # -- routed to a backend -----------------------------------------------------------------

    async def call_tool(self, call: Call) -> Reply:
        return await self._named(call, catalog.TOOLS, "Unknown tool")

    async def get_prompt(self, call: Call) -> Reply:
        return await self._named(call, catalog.PROMPTS, "Unknown prompt")

    async def _named(self, call: Call, kind: str, unknown: str) -> Reply:
        fields = call.fields()
        public = _str_field(fields, "name")
        if public is None:
            return invalid_params(f"{call.method} requires a name")
        entry = self.catalog(call.ctx.view).lookup(kind, public)
        if entry is None or not call.allowed(entry):
            return invalid_params(f"{unknown}: {public}")
        fields["name"] = Raw(frame.encode(entry.original))
        return await self._forward(call, entry, fields, entry.original)

    async def read_resource(self, call: Call) -> Reply:
        fields = call.fields()
        uri = _str_field(fields, "uri")
        if uri is None:
            return invalid_params("resources/read requires a uri")
        entry = self.catalog(call.ctx.view).resource_owner(uri)
        if entry is None or not call.allowed(entry):
            code = (
                codes.INVALID_PARAMS
                if call.ctx.era is Era.MODERN
                else codes.RESOURCE_NOT_FOUND_LEGACY
            )
            return frame.error_reply(code, f"Resource not found: {uri}", {"uri": uri})
        return await self._forward(call, entry, fields, uri)

    # -- tasks (2025-11-25) ----------------------------------------------------------------------

    def _remember_task(self, call: Call, backend: Backend, result: bytes) -> None:
        """A call answered with a CreateTaskResult: later tasks/* for its id go to `backend`."""
        try:
            task = frame.decode_object(frame.decode_object(result)["task"])
            task_id = frame.decode_str(task["taskId"])
        except (KeyError, frame.DecodeError, frame.ValidationError):
            return
        self.tasks[(_caller(call), task_id)] = (backend.name, call.ctx.session_push)

    async def task(self, call: Call) -> Reply:
        fields = call.fields()
        task_id = _str_field(fields, "taskId")
        owner = self.tasks.get((_caller(call), task_id)) if task_id is not None else None
        if task_id is None or owner is None:
            # Another caller's task is indistinguishable from one that does not exist.
            return invalid_params(f"Unknown task: {task_id}")
        entry = Entry("tasks", task_id, owner[0], task_id, b"")
        return await self._forward(call, entry, fields, None)

    async def list_tasks(self, call: Call) -> Reply:
        caller = _caller(call)
        mine = {task_id for (who, task_id) in self.tasks if who == caller}
        listed: list[Raw] = []
        for backend in self.backends.values():
            caps = backend.known_capabilities.get("tasks")
            if not backend.is_up or not isinstance(caps, dict) or "list" not in caps:
                continue
            reply = await backend.request(
                methods.TASKS_LIST, None, session=call.ctx.session_id, principal=call.ctx.principal
            )
            if reply.result is None:
                continue
            for raw in frame.decode_array(
                frame.decode_object(reply.result).get("tasks", Raw(b"[]"))
            ):
                task_id = _str_field(frame.decode_object(raw), "taskId")
                if task_id in mine:
                    listed.append(raw)
        return Reply(result=frame.encode_object({"tasks": listed}))

    def task_status(self, params: bytes | None) -> None:
        """Route a backend's `notifications/tasks/status` to the caller that owns the task."""
        try:
            task_id = frame.decode_str(frame.decode_object(params or b"{}")["taskId"])
        except (KeyError, frame.DecodeError, frame.ValidationError):
            return
        for (_, known), (_, push) in self.tasks.items():
            if known == task_id and push is not None:
                push(methods.TASK_STATUS, params)

    def _resource_entry(
        self, uri: str, feature: str | None = None, view: str | None = None
    ) -> Entry | None:
        """The owner of `uri`: a listed resource or template, else the only backend that could
        serve it (backends may serve URIs they never list). Ambiguity means nobody; a virtual
        server serves only what it lists."""
        entry = self.catalog(view).resource_owner(uri)
        if entry is not None or view is not None:
            return entry
        able = [
            b
            for b in self.backends.values()
            if b.is_up
            and isinstance(caps := b.known_capabilities.get("resources"), dict)
            and (feature is None or caps.get(feature))
        ]
        if len(able) != 1:
            return None
        return Entry(catalog.RESOURCES, uri, able[0].name, uri, b"")

    async def subscribe(self, call: Call) -> Reply:
        return await self._subscription(call, True)

    async def unsubscribe(self, call: Call) -> Reply:
        return await self._subscription(call, False)

    async def _subscription(self, call: Call, on: bool) -> Reply:
        uri = _str_field(call.fields(), "uri")
        if uri is None:
            return invalid_params(f"{call.method} requires a uri")
        key, push = call.ctx.session_id, call.ctx.session_push
        if key is None or push is None:
            return frame.error_reply(codes.METHOD_NOT_FOUND, f"{call.method} needs a session")
        entry = self._resource_entry(uri, "subscribe", call.ctx.view)
        if entry is None or not call.allowed(entry):
            return frame.error_reply(
                codes.RESOURCE_NOT_FOUND_LEGACY, f"Resource not found: {uri}", {"uri": uri}
            )
        backend = self.backends[entry.backend]
        call.backend, call.target = backend.name, uri
        if not on:
            await self.subscriptions.remove(key, uri)
            return Reply(result=b"{}")
        if not backend.supports_subscribe:
            return frame.error_reply(
                codes.METHOD_NOT_FOUND, f"backend {backend.name!r} offers no resource subscriptions"
            )
        await self.subscriptions.add(key, push, uri, backend, call.ctx.principal)
        return Reply(result=b"{}")

    async def set_level(self, call: Call) -> Reply:
        level = _str_field(call.fields(), "level")
        if level not in LOG_LEVELS or call.params is None:
            return invalid_params(f"level must be one of {', '.join(LOG_LEVELS)}")
        # Legacy backends hear it now, in the caller's own session when isolated; modern
        # backends receive the session's level on each request instead.
        params = bytes(call.params)
        ctx = call.ctx
        await asyncio.gather(
            *(
                b.set_level(
                    params, ctx.session_id, ctx.principal, ctx.client_capabilities, ctx.session_link
                )
                for b in self.backends.values()
            )
        )
        return Reply(result=b"{}")

    async def complete(self, call: Call) -> Reply:
        fields = call.fields()
        if "ref" not in fields:
            return invalid_params("completion/complete requires a ref")
        ref = frame.decode_object(fields["ref"])
        ref_type = _str_field(ref, "type")
        cat = self.catalog(call.ctx.view)
        entry: Entry | None = None
        if ref_type == "ref/prompt":
            name = _str_field(ref, "name")
            entry = cat.lookup(catalog.PROMPTS, name) if name is not None else None
            if entry is not None:
                ref["name"] = Raw(frame.encode(entry.original))
                fields["ref"] = Raw(frame.encode_object(ref))
        elif ref_type == "ref/resource":
            uri = _str_field(ref, "uri")
            if uri is not None:
                entry = cat.lookup(catalog.TEMPLATES, uri) or cat.resource_owner(uri)
        if entry is None or not call.allowed(entry):
            return invalid_params("Unknown completion reference")
        return await self._forward(call, entry, fields, None)

    async def _via_parking(
        self, call: Call, backend: Backend, fields: dict[str, Raw], name: str | None
    ) -> Reply:
        """A modern client's call to a legacy backend, which may ask the client mid-call."""
        caller = call.ctx.principal or "anonymous"
        token = _progress_token(fields)
        if self.parked.owns(fields):
            return await self.parked.resume(caller, fields, call.ctx.link, token)
        fields.pop("inputResponses", None)
        fields.pop("requestState", None)

        async def run(link: ClientLink) -> Reply:
            return await _send(call, backend, fields, name, link)

        return await self.parked.start(
            caller, call.ctx.client_capabilities, call.ctx.link, run, token
        )

    async def _fulfil_for_legacy_client(
        self, call: Call, backend: Backend, fields: dict[str, Raw], name: str | None, reply: Reply
    ) -> Reply:
        """Drive a modern backend's `input_required` rounds with a legacy client's answers."""
        for _ in range(MAX_INPUT_ROUNDS):
            assert reply.result is not None
            result = frame.decode_object(reply.result)
            kind = result.get("resultType")
            if kind is None or frame.decode_any(kind) != "input_required":
                return reply
            requests = frame.decode_object(result.get("inputRequests", Raw(b"{}")))
            answers = await _ask_all(call, requests, backend.settings.timeout_s)
            if isinstance(answers, Reply):
                return answers
            fields["inputResponses"] = Raw(frame.encode_object(answers))
            if "requestState" in result:
                fields["requestState"] = result["requestState"]
            else:
                fields.pop("requestState", None)
            # A retry is a new request: the connection gives it a new id.
            reply = await _send(call, backend, fields, name)
            if reply.result is None:
                return reply
        return frame.error_reply(
            codes.INTERNAL_ERROR,
            f"backend {backend.name!r} kept asking for input",
            {"source": "gateway"},
        )

    async def _forward(
        self, call: Call, entry: Entry, fields: dict[str, Raw], name: str | None
    ) -> Reply:
        backend = self.backends[entry.backend]
        call.backend, call.target = backend.name, entry.public
        facts = backend.facts
        if facts is None:
            return await backend.request(call.method, None)  # answers "unavailable", naming it
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
            reply = await _send(call, backend, fields, name)
        if (
            client_era is Era.LEGACY
            and facts.era is Era.MODERN
            and reply.result is not None
            and b'"input_required"' in reply.result
        ):
            reply = await self._fulfil_for_legacy_client(call, backend, fields, name, reply)
        if (
            call.method == methods.TOOLS_CALL
            and reply.result is not None
            and b'"taskId"' in reply.result
        ):
            self._remember_task(call, backend, reply.result)
        if reply.result is not None and client_era is not facts.era:
            if client_era is Era.MODERN:
                reply.result = eras.result_for_modern(reply.result, call.method)
            else:
                reply.result = eras.result_for_legacy(reply.result)
        return reply


async def _ask_all(call: Call, requests: dict[str, Raw], timeout: float) -> dict[str, Raw] | Reply:
    """Put a modern backend's input requests to a legacy client as real requests."""
    link = call.ctx.link
    answers: dict[str, Raw] = {}
    for key, raw in requests.items():
        request = frame.decode_object(raw)
        method = _str_field(request, "method")
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


async def _send(
    call: Call,
    backend: Backend,
    fields: dict[str, Raw],
    name: str | None,
    link: ClientLink | None = None,
) -> Reply:
    """Forward `fields` as this call's params, with everything the caller's context decides:
    the way back to the client (unless `link` stands in), and which isolated upstream session
    serves it."""
    return await backend.request(
        call.method,
        frame.encode_object(fields),
        name=name,
        link=link or call.ctx.link,
        session=call.ctx.session_id,
        principal=call.ctx.principal,
        client_capabilities=call.ctx.client_capabilities,
        session_link=call.ctx.session_link,
        subject_token=call.ctx.identity.token if call.ctx.identity is not None else None,
    )


def _progress_token(fields: dict[str, Raw]) -> Raw | None:
    raw_meta = fields.get("_meta")
    if raw_meta is None or b"progressToken" not in bytes(raw_meta):
        return None
    return frame.decode_object(raw_meta).get("progressToken")


def _caller(call: Call) -> str:
    return call.ctx.principal or call.ctx.session_id or "anonymous"


def _merge(into: dict[str, Any], offer: dict[str, Any]) -> None:
    """Union of two capability objects, recursively."""
    for key, value in offer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into.setdefault(key, value)


def _str_field(fields: dict[str, Raw], key: str) -> str | None:
    raw = fields.get(key)
    if raw is None:
        return None
    try:
        return frame.decode_str(raw)
    except (frame.DecodeError, frame.ValidationError):
        return None
