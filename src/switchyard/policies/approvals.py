"""Approvals: a tool call the rules gate runs only with a decision bound to exactly that call.

A gated call becomes a ticket in the shared database (storage/tickets.py) and the caller is
answered at once: nothing — no HTTP request, task or backend session — is held while a person
decides. How the caller learns of the ticket and comes back depends on its era:

- 2026-07-28: an `input_required` result whose `requestState` is signed (approval_state.py);
  it asks the caller's user for a confirmation (a form) when the caller decides, or shows the
  approval page (a URL) when an approver role does. The retry carries the state back.
- 2025 with elicitation: the same question as a real `elicitation/create` request, within
  `elicitation_wait`.
- Otherwise (and while a ticket still waits): an `isError` result naming the ticket; the same
  call retried with the same arguments after approval runs.

Whatever the path, running takes one conditional UPDATE `approved -> consumed` matching the
principal, view, backend, tool, argument digest and policy version: one approval, one run.
A confirmation at the client is the caller's consent, recorded as such; it never stands in for
an approver role, and a caller can never decide its own call when a role must.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from switchyard.call import ANONYMOUS, Call, Identity
from switchyard.policies import approval_state
from switchyard.policies.approval_rules import CALLER, ApprovalRules, Verdict
from switchyard.policies.approval_state import ApprovalState, StateError
from switchyard.policies.base import Policy
from switchyard.protocol import codes, methods
from switchyard.protocol.versions import Era
from switchyard.routing import catalog
from switchyard.storage.database import Database, StorageError, open_database
from switchyard.storage.settings import StorageSettings
from switchyard.storage.tickets import Binding, Ticket, TicketStore, now_ms
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

log = logging.getLogger("switchyard.approvals")

INPUT_KEY: Final = "switchyard.approval"
"""The gateway's own key in `inputRequests` (a backend's keys are passed through untouched)."""
EVENT: Final = "approval"
ELICITATION_CREATE: Final = "elicitation/create"
WEBHOOK_CONNECTIONS: Final = 8

EventSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    url: str
    key: bytes = field(repr=False)
    timeout_s: float = 5.0


@dataclass(slots=True)
class ApprovalSettings:
    rules: ApprovalRules
    key: bytes = field(repr=False)
    """Signs `requestState`; shared by every gateway process."""
    policy_version: str
    """A digest of the `approvals:` section: a ticket of another version is never used."""
    digest: Callable[[Any], str]
    """The arguments' digest (SHA-256 of their RFC 8785 form)."""
    storage: StorageSettings
    ticket_ttl_ms: int = 3_600_000
    elicitation_wait_s: float = 60.0
    escalate_after_ms: int | None = None
    escalate_to: str | None = None
    public_url: str | None = None
    webhook: WebhookSettings | None = None
    show_arguments_bytes: int = 16_384
    """Arguments a ticket keeps for approvers to see (larger ones are not kept)."""

    @property
    def approver_roles(self) -> frozenset[str]:
        roles = {r.approver for r in self.rules.rules if r.approver != CALLER}
        if self.rules.default_approver != CALLER:
            roles.add(self.rules.default_approver)
        if self.escalate_to is not None:
            roles.add(self.escalate_to)
        return frozenset(roles)


class ApprovalRefused(Exception):
    """A decision or use of a ticket that is not allowed; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Approvals:
    """The running side of approvals: the ticket store, events, the webhook, escalation."""

    def __init__(self, settings: ApprovalSettings) -> None:
        self.settings = settings
        self._db: Database | None = None
        self.store: TicketStore | None = None
        self.sinks: list[EventSink] = []
        """Receivers of every approval event (the audit trail); each must not raise."""
        self.base_url: str | None = settings.public_url
        self._tasks: set[asyncio.Task[Any]] = set()
        self._escalation: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()
        self.events: Counter[str] = Counter()
        """Approval events by kind (a fixed set the code names), for metrics."""

    async def ready(self) -> TicketStore:
        """The store, opened (and migrated) on first use."""
        if self.store is not None:
            return self.store
        async with self._opening:
            if self.store is None:
                db = await open_database(self.settings.storage)
                store = TicketStore(db)
                try:
                    await store.migrate()
                except BaseException:
                    await db.close()
                    raise
                self._db, self.store = db, store
        return self.store

    def start(self) -> None:
        if self.settings.escalate_after_ms is not None and self._escalation is None:
            self._escalation = asyncio.create_task(self._escalate(), name="approval-escalation")

    async def close(self) -> None:
        if self._escalation is not None:
            self._escalation.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._escalation
            self._escalation = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._db is not None:
            await self._db.close()
            self._db = self.store = None

    # -- events and the webhook -------------------------------------------------------------

    def event(self, kind: str, ticket: Ticket | None, **extra: Any) -> None:
        self.events[kind] += 1
        fields: dict[str, Any] = {"approval_event": kind}
        if ticket is not None:
            b = ticket.binding
            fields.update(
                ticket=ticket.id,
                principal=b.principal,
                backend=b.backend,
                name=b.tool,
                view=b.view or None,
                policy_version=b.policy_version,
                rule=ticket.rule,
                approver=ticket.approver,
            )
        fields.update({k: v for k, v in extra.items() if v is not None})
        log.info("approval event %s", json.dumps(fields, ensure_ascii=True, default=str))
        for sink in self.sinks:
            try:
                sink(fields)
            except Exception:
                log.exception("an approval event sink failed")

    def page_url(self, ticket_id: str) -> str | None:
        return f"{self.base_url.rstrip('/')}/approvals/{ticket_id}" if self.base_url else None

    def notify(self, kind: str, ticket: Ticket) -> None:
        """POST the ticket to the webhook, off the request's path."""
        hook = self.settings.webhook
        if hook is None:
            return
        body = json.dumps(
            {
                "event": f"approval.{kind}",
                "ticket": ticket.as_json(),
                "pageUrl": self.page_url(ticket.id),
                "approveUrl": f"{self.base_url.rstrip('/')}/admin/v1/approvals/{ticket.id}/approve"
                if self.base_url
                else None,
            },
            separators=(",", ":"),
        ).encode()
        task = asyncio.get_running_loop().create_task(self._post(hook, body, ticket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, hook: WebhookSettings, body: bytes, ticket: Ticket) -> None:
        if self._http is None:
            # A few connections however many tickets are made at once.
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=WEBHOOK_CONNECTIONS)
            )
        for attempt in range(3):
            at = int(time.time())
            headers = {
                "content-type": "application/json",
                "x-switchyard-signature": approval_state.signature(hook.key, body, at),
            }
            try:
                async with self._http.post(
                    hook.url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=hook.timeout_s),
                ) as resp:
                    if resp.status < 300:
                        return
                    why = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = type(exc).__name__
            log.warning("approval webhook: delivery %d failed (%s)", attempt + 1, why)
            await asyncio.sleep(0.5 * (attempt + 1))
        self.event("webhook_failed", ticket)

    async def _escalate(self) -> None:
        after = self.settings.escalate_after_ms
        assert after is not None
        period = min(5.0, max(0.2, after / 4000))
        while True:
            await asyncio.sleep(period)
            try:
                store = await self.ready()
                for ticket in await store.escalate_due(now_ms() - after):
                    self.event("escalated", ticket, escalate_to=self.settings.escalate_to)
                    self.notify("escalated", ticket)
            except StorageError as exc:
                log.warning("approval escalation: the store failed (%s)", exc)

    # -- approvers ---------------------------------------------------------------------------

    def may_decide(self, ticket: Ticket, who: Identity | None) -> str | None:
        """Why `who` may not decide `ticket` (None: it may). `who` None is the operator at
        the command line."""
        if who is None:
            return None
        if ticket.approver == CALLER:
            if who.key != ticket.binding.principal:
                return "only the caller's own user confirms this call"
            return None
        if who.key == ticket.binding.principal:
            return "a caller cannot approve its own call: an approver must"
        roles = {ticket.approver}
        if ticket.escalated_at is not None and self.settings.escalate_to is not None:
            roles.add(self.settings.escalate_to)
        if roles.isdisjoint(who.roles):
            return f"deciding this ticket needs the role {ticket.approver!r}"
        return None

    def may_see(self, ticket: Ticket, who: Identity) -> bool:
        return who.key == ticket.binding.principal or not self.settings.approver_roles.isdisjoint(
            who.roles
        )

    async def decide(
        self,
        ticket_id: str,
        approve: bool,
        who: Identity | None,
        actor: str,
        reason: str | None = None,
    ) -> Ticket:
        """Approve or deny; refused (ApprovalRefused) unless `who` may and the ticket is still
        pending under the current policy."""
        store = await self.ready()
        ticket = await store.get(ticket_id)
        if ticket is None or (who is not None and not self.may_see(ticket, who)):
            raise ApprovalRefused(404, f"no approval ticket {ticket_id}")
        why = self.may_decide(ticket, who)
        if why is not None:
            self.event("decision_refused", ticket, actor=actor, reason=why)
            raise ApprovalRefused(403, why)
        if ticket.binding.policy_version != self.settings.policy_version:
            await store.supersede(ticket.id)
            self.event("superseded", ticket, actor=actor)
            raise ApprovalRefused(409, "the approval policy changed since this ticket was made")
        status = ticket.status()
        if status != "pending":
            raise ApprovalRefused(409, f"the ticket is {status}, not pending")
        if not await store.decide(ticket.id, approve, actor, reason, self.settings.policy_version):
            current = await store.get(ticket.id)
            raise ApprovalRefused(
                409, f"the ticket is {current.status() if current else 'gone'}, not pending"
            )
        decided = await store.get(ticket.id)
        assert decided is not None
        self.event("approved" if approve else "denied", decided, actor=actor, reason=reason)
        return decided

    # -- the gate ----------------------------------------------------------------------------

    async def gate(self, call: Call, verdict: Verdict, binding: Binding, run: Runner) -> Reply:
        store = await self.ready()
        fields = call.fields()
        state_text = _our_state(fields)
        if state_text is not None:
            return await self._resume(call, binding, state_text, run, store)
        live = await store.find(binding, ("approved", "pending", "denied"))
        changed: Ticket | None = None
        pending: Ticket | None = None
        for ticket in live:
            if ticket.binding.policy_version != binding.policy_version:
                if await store.supersede(ticket.id):
                    self.event("superseded", ticket)
                    changed = ticket
                continue
            if ticket.state == "denied":
                self.event("refused", ticket, reason="denied")
                return _denied(ticket)
            if ticket.state == "approved":
                if await store.consume(ticket.id, binding):
                    self.event("consumed", ticket)
                    return await self._execute(call, ticket, binding, 0, run)
            elif pending is None:
                pending = ticket
        if changed is not None and pending is None:
            self.event("refused", changed, reason="policy changed")
            return _policy_changed(changed)
        expired = await self._report_expired(binding)
        if expired is not None and pending is None:
            return expired
        if pending is None:
            shown = _shown_arguments(fields.get("arguments"), self.settings.show_arguments_bytes)
            pending = await store.create(
                binding, verdict.rule, verdict.approver, self.settings.ticket_ttl_ms, shown
            )
            self.event("requested", pending, view=call.ctx.view, era=call.ctx.era.value)
            self.notify("requested", pending)
        return await self._ask(call, pending, binding, run, store)

    async def _report_expired(self, binding: Binding) -> Reply | None:
        """A retry after the ticket for these exact arguments expired learns that, once."""
        store = await self.ready()
        reply: Reply | None = None
        for ticket in await store.expire(binding):
            self.event("expired", ticket)
            reply = _expired(ticket)
        return reply

    async def _resume(
        self, call: Call, binding: Binding, text: str, run: Runner, store: TicketStore
    ) -> Reply:
        try:
            state = approval_state.verify(
                self.settings.key, text, binding.principal, binding.args_digest
            )
        except StateError as exc:
            self.event(
                "refused",
                None,
                principal=binding.principal,
                backend=binding.backend,
                name=binding.tool,
                reason=str(exc),
            )
            return _error(codes.APPROVAL_STATE_INVALID, f"Approval refused: {exc}", None, "invalid")
        if state.step is not None:
            return await self._continue(call, binding, state, run, store)
        ticket = await store.get(state.ticket)
        if ticket is None or not _same_call(ticket.binding, binding):
            self.event("refused", ticket, reason="the state names another call")
            return _error(
                codes.APPROVAL_STATE_INVALID,
                "Approval refused: the approval state names another call",
                None,
                "invalid",
            )
        if ticket.binding.policy_version != binding.policy_version:
            if await store.supersede(ticket.id):
                self.event("superseded", ticket)
            self.event("refused", ticket, reason="policy changed")
            return _policy_changed(ticket)
        answer = _confirmation(call.fields())
        if answer is not None and ticket.approver == CALLER and ticket.status() == "pending":
            ticket = await self._confirmed(ticket, answer, binding)
        status = ticket.status()
        if status == "approved":
            if await store.consume(ticket.id, binding):
                self.event("consumed", ticket)
                return await self._execute(call, ticket, binding, 0, run)
            current = await store.get(ticket.id)
            status = current.status() if current is not None else "consumed"
        if status == "pending":
            return self._pending(call, ticket)
        self.event("refused", ticket, reason=status)
        if status == "denied":
            return _denied(ticket)
        if status == "expired":
            return _expired(ticket)
        if status == "superseded":
            return _policy_changed(ticket)
        return _error(
            codes.APPROVAL_USED,
            f"Approval refused: ticket {ticket.id} was already used; an approval runs one call",
            ticket,
            status,
        )

    async def _continue(
        self, call: Call, binding: Binding, state: ApprovalState, run: Runner, store: TicketStore
    ) -> Reply:
        """A later round of an approved call (its backend asked the client for input): each
        round is taken once, so a replayed state cannot make the backend run it again."""
        ticket = await store.get(state.ticket)
        if ticket is None or not _same_call(ticket.binding, binding):
            return _error(
                codes.APPROVAL_STATE_INVALID,
                "Approval refused: the approval state names another call",
                None,
                "invalid",
            )
        if ticket.binding.policy_version != binding.policy_version:
            self.event("refused", ticket, reason="policy changed")
            return _policy_changed(ticket)
        assert state.step is not None
        if not await store.advance(ticket.id, binding, state.step):
            self.event("refused", ticket, reason="round already taken", step=state.step)
            return _error(
                codes.APPROVAL_USED,
                f"Approval refused: this round of the call approved by ticket {ticket.id} "
                "was already taken",
                ticket,
                "consumed",
            )
        return await self._execute(call, ticket, binding, state.step + 1, run, state.backend_state)

    async def _execute(
        self,
        call: Call,
        ticket: Ticket,
        binding: Binding,
        step: int,
        run: Runner,
        backend_state: str | None = None,
    ) -> Reply:
        """Run the approved call. When a 2026-07-28 backend answers `input_required`, its
        `requestState` travels inside one of ours (one field, two owners), so the client's
        retry continues this approved call instead of asking for a new approval."""
        _without_our_fields(call)
        if backend_state is not None:
            fields = dict(call.fields())
            fields["requestState"] = Raw(frame.encode(backend_state))
            call.params = Raw(frame.encode_object(fields))
            call._fields = None
        reply = await run(call)
        result = reply.result
        if call.ctx.era is not Era.MODERN or result is None or b"input_required" not in result:
            return reply
        try:
            decoded = frame.decode_object(result)
            kind = decoded.get("resultType")
            if kind is None or frame.decode_any(kind) != "input_required":
                return reply
            theirs = decoded.get("requestState")
            their_state = frame.decode_str(theirs) if theirs is not None else None
        except (frame.DecodeError, frame.ValidationError):
            return reply
        ours = ApprovalState(
            ticket.id,
            binding.principal,
            binding.args_digest,
            now_ms() + self.settings.ticket_ttl_ms,
            step,
            their_state,
        )
        decoded["requestState"] = Raw(frame.encode(approval_state.sign(self.settings.key, ours)))
        self.event("continued", ticket, step=step)
        return Reply(frame.encode_object(decoded), reply.error, reply.http)

    async def _confirmed(self, ticket: Ticket, accepted: bool, binding: Binding) -> Ticket:
        store = await self.ready()
        actor = f"{binding.principal} (caller-confirmed)"
        if await store.decide(ticket.id, accepted, actor, None, binding.policy_version):
            self.event("caller_confirmed" if accepted else "caller_declined", ticket, actor=actor)
        current = await store.get(ticket.id)
        return current if current is not None else ticket

    async def _ask(
        self, call: Call, ticket: Ticket, binding: Binding, run: Runner, store: TicketStore
    ) -> Reply:
        form, url = _elicitation_modes(call.ctx.client_capabilities)
        caller_decides = ticket.approver == CALLER
        page = self.page_url(ticket.id)
        if call.ctx.era is Era.MODERN:
            request: dict[str, Any] | None = None
            if caller_decides and form:
                request = _form(ticket)
            elif not caller_decides and url and page is not None:
                request = {"mode": "url", "message": _url_message(ticket), "url": page}
            if request is None:
                return self._pending(call, ticket)
            state = approval_state.sign(
                self.settings.key,
                ApprovalState(ticket.id, binding.principal, binding.args_digest, ticket.expires),
            )
            self.event("input_required", ticket, mode=request["mode"])
            body = {
                "resultType": "input_required",
                "inputRequests": {INPUT_KEY: {"method": ELICITATION_CREATE, "params": request}},
                "requestState": state,
            }
            return Reply(result=frame.encode(body))
        link = call.ctx.link
        if link is None or not (form if caller_decides else (url and page is not None)):
            return self._pending(call, ticket)
        if caller_decides:
            params = _form(ticket)
        else:
            assert page is not None
            params = {
                "mode": "url",
                "message": _url_message(ticket),
                "url": page,
                "elicitationId": ticket.id,
            }
        self.event("elicited", ticket, mode=params["mode"])
        try:
            answer = await asyncio.wait_for(
                link.ask(
                    ELICITATION_CREATE,
                    frame.encode(params),
                    self.settings.elicitation_wait_s,
                ),
                self.settings.elicitation_wait_s + 1.0,
            )
        except TimeoutError:
            return self._pending(call, ticket)
        if answer.result is None:
            return self._pending(call, ticket)
        if caller_decides:
            accepted = _accepted(frame.decode_any(answer.result))
            ticket = await self._confirmed(ticket, accepted, binding)
        else:
            current = await store.get(ticket.id)
            ticket = current if current is not None else ticket
        status = ticket.status()
        if status == "approved" and await store.consume(ticket.id, binding):
            self.event("consumed", ticket)
            return await self._execute(call, ticket, binding, 0, run)
        if status == "denied":
            return _denied(ticket)
        return self._pending(call, ticket)

    def _pending(self, call: Call, ticket: Ticket) -> Reply:
        who = (
            "your confirmation"
            if ticket.approver == CALLER
            else f"a decision by an approver (role {ticket.approver})"
        )
        expires = ticket.as_json()["expiresAt"]
        text = (
            f"Approval required: this call waits for {who} (ticket {ticket.id}). "
            f"Once it is approved, call this tool again with the same arguments before {expires}."
        )
        approval: dict[str, Any] = {
            "id": ticket.id,
            "status": ticket.status(),
            "approver": ticket.approver,
            "expiresAt": expires,
        }
        if (page := self.page_url(ticket.id)) is not None:
            approval["url"] = page
        body: dict[str, Any] = {
            "content": [{"type": "text", "text": text}],
            "structuredContent": {"approval": approval},
            "isError": True,
        }
        if call.ctx.era is Era.MODERN:
            body["resultType"] = "complete"
        return Reply(result=frame.encode(body))


Runner = Callable[[Call], Awaitable[Reply]]


def _shown_arguments(raw: Raw | None, limit: int) -> str | None:
    """The arguments as approvers will see them; None when off or too large (then the ticket
    says so, and approvers see the digest only)."""
    if limit <= 0 or raw is None:
        return None
    if len(raw) > limit:
        return json.dumps({"omitted": f"{len(raw)} bytes, over approvals.show_arguments_bytes"})
    return bytes(raw).decode("utf-8", "replace")


REFUSALS: Final = frozenset(
    {
        codes.APPROVAL_DENIED,
        codes.APPROVAL_EXPIRED,
        codes.APPROVAL_STATE_INVALID,
        codes.APPROVAL_POLICY_CHANGED,
        codes.APPROVAL_USED,
    }
)


def _refusal(error: bytes) -> bool:
    try:
        return frame.decode_error(error).code in REFUSALS
    except (frame.DecodeError, frame.ValidationError):
        return False


def _same_call(a: Binding, b: Binding) -> bool:
    return (a.principal, a.view, a.backend, a.tool, a.args_digest) == (
        b.principal,
        b.view,
        b.backend,
        b.tool,
        b.args_digest,
    )


def _our_state(fields: Mapping[str, Raw]) -> str | None:
    raw = fields.get("requestState")
    if raw is None:
        return None
    try:
        text = frame.decode_str(raw)
    except (frame.DecodeError, frame.ValidationError):
        return None
    return text if approval_state.is_ours(text) else None


def _confirmation(fields: Mapping[str, Raw]) -> bool | None:
    """The caller's answer to the gateway's confirmation form, if the retry carries one."""
    raw = fields.get("inputResponses")
    if raw is None:
        return None
    try:
        responses = frame.decode_any(raw)
    except (frame.DecodeError, frame.ValidationError):
        return None
    if not isinstance(responses, dict) or INPUT_KEY not in responses:
        return None
    return _accepted(responses[INPUT_KEY])


def _accepted(answer: Any) -> bool:
    if not isinstance(answer, dict) or answer.get("action") != "accept":
        return False
    content = answer.get("content")
    return isinstance(content, dict) and content.get("approve") is True


def _elicitation_modes(capabilities: Raw | None) -> tuple[bool, bool]:
    """(form, url): which elicitation modes the client declared. An empty `elicitation`
    object means form (2025-06-18 had no modes)."""
    if capabilities is None:
        return False, False
    try:
        caps = frame.decode_any(capabilities)
    except (frame.DecodeError, frame.ValidationError):
        return False, False
    if not isinstance(caps, dict):
        return False, False
    elicitation = caps.get("elicitation")
    if not isinstance(elicitation, dict):
        return False, False
    if not elicitation:
        return True, False
    return "form" in elicitation, "url" in elicitation


def _form(ticket: Ticket) -> dict[str, Any]:
    return {
        "mode": "form",
        "message": (
            f"Confirm: run {ticket.binding.public_name} with the arguments shown by your client? "
            f"(approval ticket {ticket.id})"
        ),
        "requestedSchema": {
            "type": "object",
            "properties": {
                "approve": {
                    "type": "boolean",
                    "title": "Run this call",
                    "description": f"Approve {ticket.binding.public_name} once",
                }
            },
            "required": ["approve"],
        },
    }


def _url_message(ticket: Ticket) -> str:
    return (
        f"{ticket.binding.public_name} needs an approver's decision (role {ticket.approver}); "
        f"the approval page shows ticket {ticket.id}."
    )


def _error(code: int, message: str, ticket: Ticket | None, status: str) -> Reply:
    data: dict[str, Any] = {"source": "gateway", "status": status}
    if ticket is not None:
        data["ticket"] = ticket.id
    return frame.error_reply(code, message, data)


def _denied(ticket: Ticket) -> Reply:
    reason = f": {ticket.reason}" if ticket.reason else ""
    return _error(
        codes.APPROVAL_DENIED,
        f"Approval denied: ticket {ticket.id} was denied by {ticket.decided_by}{reason}",
        ticket,
        "denied",
    )


def _expired(ticket: Ticket) -> Reply:
    return _error(
        codes.APPROVAL_EXPIRED,
        f"Approval expired: ticket {ticket.id} was not used before {ticket.as_json()['expiresAt']}",
        ticket,
        "expired",
    )


def _policy_changed(ticket: Ticket) -> Reply:
    return _error(
        codes.APPROVAL_POLICY_CHANGED,
        f"Approval refused: the approval policy changed since ticket {ticket.id} was made; "
        "the call needs a new approval",
        ticket,
        "superseded",
    )


def _without_our_fields(call: Call) -> None:
    """The call as the backend must see it: the gateway's state and answers removed."""
    fields = dict(call.fields())
    changed = False
    if _our_state(fields) is not None:
        del fields["requestState"]
        changed = True
    raw = fields.get("inputResponses")
    if raw is not None:
        with contextlib.suppress(frame.DecodeError, frame.ValidationError):
            responses = frame.decode_object(raw)
            if INPUT_KEY in responses:
                del responses[INPUT_KEY]
                changed = True
                if responses:
                    fields["inputResponses"] = Raw(frame.encode_object(responses))
                else:
                    del fields["inputResponses"]
    if changed:
        call.params = Raw(frame.encode_object(fields))
        call._fields = None


class Approval(Policy):
    """The chain's approval gate, on `tools/call`; placed after access control and rate
    limits, so only an allowed, admitted call can make a ticket."""

    methods = frozenset({methods.TOOLS_CALL})
    settings: Approvals

    async def __call__(self, call: Call) -> Reply:
        route = call.route
        if route is None or route.kind != catalog.TOOLS:
            return await self.next(call)
        approvals = self.settings
        fields = call.fields()
        raw = fields.get("arguments")
        try:
            arguments = frame.decode_any(raw) if raw is not None else {}
        except (frame.DecodeError, frame.ValidationError):
            return await self.next(call)  # the backend answers a malformed call as such
        if not isinstance(arguments, dict):
            return await self.next(call)
        verdict = approvals.settings.rules.judge(call.ctx.identity, call.ctx.view, route, arguments)
        if not verdict.require:
            _without_our_fields(call)
            return await self.next(call)
        binding = Binding(
            principal=call.ctx.principal or ANONYMOUS,
            view=call.ctx.view or "",
            backend=route.backend,
            tool=route.name,
            public_name=route.public,
            args_digest=approvals.settings.digest(arguments),
            policy_version=approvals.settings.policy_version,
        )

        async def run(c: Call) -> Reply:
            _without_our_fields(c)
            return await self.next(c)

        try:
            reply = await approvals.gate(call, verdict, binding, run)
        except StorageError as exc:
            log.warning("approvals: the ticket store failed (%s); refusing", exc)
            call.denied = True
            return frame.error_reply(
                codes.APPROVAL_UNAVAILABLE,
                "Approvals cannot be checked right now; the call did not run. Retry shortly",
                {"source": "gateway"},
            )
        if reply.error is not None and _refusal(reply.error):
            call.denied = True  # the access log and audit record say the gate refused it
        return reply
