"""The 2024-11-05 HTTP+SSE transport: GET `/sse` opens a session's stream and names the POST
endpoint; each POSTed message is accepted with 202 and answered on the stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from urllib.parse import parse_qs

from switchyard.downstream.admission import ADMISSION_KEY, Admission
from switchyard.downstream.asgi import (
    IDENTITY,
    SSE_HEADERS,
    Receive,
    Scope,
    Send,
    caller,
    caller_name,
    current_peer,
    current_traceparent,
    current_tracestate,
    current_view,
    header,
    refuse,
    respond,
    respond_json,
)
from switchyard.downstream.inbound import (
    error_json,
    gateway_error,
    read_message,
    request_fields,
    settle,
)
from switchyard.downstream.streamable_http import ScopeGate, _adopt, level_of, pump
from switchyard.gateway import Gateway
from switchyard.policies.base import RequestContext
from switchyard.protocol import codes, methods
from switchyard.protocol.versions import Era
from switchyard.sessions import SessionRefusal
from switchyard.wire import frame, sse, strict
from switchyard.wire.frame import UNSET

log = logging.getLogger("switchyard.downstream.sse")


class LegacySseEndpoint:
    def __init__(
        self,
        gateway: Gateway,
        max_body_bytes: int,
        shutting_down: asyncio.Event,
        messages_path: str,
        limits: strict.JsonLimits | None = None,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes
        self.limits = limits or strict.JsonLimits()
        self.body_timeout_s = body_timeout_s
        self.scope_gate: ScopeGate | None = None
        self.shutting_down = shutting_down
        self.messages_path = messages_path
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        """Each session's detached request tasks: they end with its stream."""

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await respond(send, 405, headers=[(b"allow", b"GET")])
            return
        session = self.gateway.sessions.open(
            "sse", caller_name(), current_view(), peer=current_peer(), identity=IDENTITY.get()
        )
        if isinstance(session, SessionRefusal):
            body = error_json(session.code, session.message, data={"source": "gateway"})
            await respond_json(send, session.status, body)
            return
        session.version = "2024-11-05"
        session.stream_open = True
        root = scope.get("root_path", "")
        view = current_view()
        prefix = f"/servers/{view}" if view is not None else ""
        endpoint = f"{root}{prefix}{self.messages_path}?session_id={session.id}".encode()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send(
                {
                    "type": "http.response.body",
                    "body": sse.format_event(endpoint, "endpoint"),
                    "more_body": True,
                }
            )
            await pump(session.outbox, receive, send, self.shutting_down)
        finally:
            session.stream_open = False
            self.gateway.sessions.remove(session.id)
            # Nobody can read these answers any more: stop the work and free its slots.
            for task in self._tasks.pop(session.id, set()):
                task.cancel()

    async def message(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await respond(send, 405, headers=[(b"allow", b"POST")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session_ids = query.get("session_id", [])
        if len(session_ids) != 1:
            await respond_json(
                send, 400, error_json(codes.INVALID_REQUEST, "session_id is required")
            )
            return
        session = self.gateway.sessions.get(session_ids[0], caller_name(), current_view())
        if session is None or session.transport != "sse":
            await respond_json(send, 404, error_json(codes.INVALID_REQUEST, "Session not found"))
            return
        headers = scope["headers"]
        if not (header(headers, b"content-type") or "").lower().startswith("application/json"):
            message = "Content-Type must be application/json"
            await refuse(scope, send, 415, error_json(codes.INVALID_REQUEST, message), message)
            return
        body = await read_message(
            scope, receive, send, self.max_body_bytes, self.body_timeout_s, self.limits
        )
        if body is None:
            return
        try:
            env = frame.peek(body)
        except (frame.DecodeError, frame.ValidationError):
            await respond_json(send, 400, error_json(codes.PARSE_ERROR, "Parse error"))
            return
        if env.jsonrpc != "2.0" or (env.method is not UNSET and env.id is None):
            await respond_json(
                send, 400, error_json(codes.INVALID_REQUEST, "Invalid JSON-RPC message")
            )
            return
        gate = self.scope_gate
        if gate is not None and isinstance(env.method, str):
            refusal = gate(caller(), env.method)
            if refusal is not None:
                challenge = [(b"www-authenticate", refusal.challenge.encode("latin-1"))]
                refused = error_json(codes.INVALID_REQUEST, refusal.message)
                await respond_json(send, refusal.status, refused, challenge)
                return
        await respond(send, 202, b"Accepted")
        if env.is_response:
            session.outgoing.resolve(env)
        elif env.method == methods.INITIALIZED:
            session.initialized = True
        elif env.method == methods.CANCELLED:
            session.requests.cancel(env.params if env.params is not UNSET else None)
        if not env.is_request:
            return
        assert isinstance(env.method, str)
        method = env.method
        id_raw = frame.encode_id(env.id)  # type: ignore[arg-type]
        params = env.params if env.params is not UNSET else None

        admission: Admission | None = scope.get(ADMISSION_KEY)
        if admission is not None and admission.refusal is not None:
            # The POST is already answered: the refusal travels like any answer, by id.
            session.push(frame.response_bytes(id_raw, admission.refusal))
            return
        fields = request_fields(params)
        if isinstance(fields, str):
            session.push(error_json(codes.INVALID_PARAMS, fields, id_raw))
            return
        if method == methods.DISCOVER:
            # This transport is 2024-11-05 only: a client probing for 2026-07-28 must learn that it
            # is unknown here and fall back to `initialize`, never adopt an era this face cannot
            # serve.
            unknown = frame.error_reply(codes.METHOD_NOT_FOUND, f"Method not found: {method}")
            session.push(frame.response_bytes(id_raw, unknown))
            return

        identity = caller()
        view = current_view()
        release = admission.lease.detach() if admission and admission.lease else None

        async def answer() -> None:
            try:
                await serve()
            finally:
                if release is not None:
                    release()  # answered (queued), cancelled or failed: the slot is free

        async def serve() -> None:
            ctx = RequestContext(
                Era.LEGACY,
                session.version,
                "sse",
                session_id=session.id,
                client_capabilities=session.client_capabilities,
                link=session.link(),
                session_push=session.notify,
                session_link=session.link(),
                log_level=session.log_level,
                principal=session.principal,
                identity=identity,
                view=view,
                request_id=id_raw,
                traceparent=current_traceparent(),
                tracestate=current_tracestate(),
            )
            reply = await session.requests.run(
                id_raw, settle(method, self.gateway.dispatcher.request(ctx, method, params, fields))
            )
            if reply is None:
                return  # cancelled by the client: no answer is owed
            try:
                if method == methods.SET_LEVEL and reply.result is not None:
                    session.log_level = level_of(params)
                if method == methods.INITIALIZE and reply.result is not None:
                    _adopt(session, reply, params)
            except Exception:
                # Nothing else will ever answer this request on the stream: answer it here.
                log.exception("recording what %r negotiated failed", method[:64])
                reply = gateway_error()
            session.push(frame.response_bytes(id_raw, reply))

        if not session.stream_open:
            if release is not None:
                release()
            return  # the stream closed meanwhile: no one would read the answer
        task = asyncio.create_task(answer())
        tasks = self._tasks.setdefault(session.id, set())
        tasks.add(task)
        task.add_done_callback(functools.partial(self._forget, session.id))

    def _forget(self, session_id: str, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(session_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[session_id]
