"""Every message bound for a client, whatever its source, passes one gate that knows whose it is.

A result travels the policy chain back to the caller that asked. Everything else a client
receives — progress, log lines, resource updates, list changes, task status, and a backend's
own requests (sampling, elicitation, roots) — reaches it through `Delivery`, with its recipient
named by whoever proved it theirs (the connection that saw the request in flight, the
subscription or task table that recorded its owner). Here the message is judged once more:

- the recipient must still be allowed to use the backend it comes from (rules change, and a
  subscription outlives the call that made it);
- then every outbound hook (redaction, audit, metrics) sees it, and may rewrite or drop it.

A message nobody can be proven to own never gets here: its source counts it with
`unattributed` and drops it. Nothing is broadcast on a guess.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from switchyard.call import Identity
from switchyard.protocol import codes
from switchyard.protocol.link import ClientLink
from switchyard.wire import frame
from switchyard.wire.frame import Reply

log = logging.getLogger("switchyard.delivery")

Push = Callable[[str, bytes | None], None]
"""Queues one notification (method, raw params) for one client; never blocks."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """The client a message is for, as proven by its source."""

    key: str
    """Who owns it: the qualified principal, else the session, else the anonymous principal."""
    identity: Identity | None = None
    """The authenticated caller (None with authentication off)."""


@dataclass(frozen=True, slots=True)
class ClientMessage:
    recipient: Recipient
    backend: str | None
    """The backend it comes from; None for the gateway's own (list changes)."""
    method: str
    params: bytes | None
    request: bool = False
    """A server->client request (the backend awaits the client's answer)."""

    def with_params(self, params: bytes | None) -> ClientMessage:
        return replace(self, params=params)


OutboundHook = Callable[[ClientMessage], "ClientMessage | None"]
"""Sees each client-bound message; returns it (possibly rewritten) or None to drop it."""
MayUse = Callable[[Identity, str], bool]
"""Whether an identity may use anything of a backend (the access rules' `may_reach`)."""


class Delivery:
    def __init__(self, may_use: MayUse | None = None) -> None:
        self._may_use = may_use
        self._hooks: list[tuple[str, OutboundHook]] = []
        self.dropped: Counter[str] = Counter()
        """Messages not delivered, by reason: unattributed, not permitted, or a hook's name."""

    @property
    def screens(self) -> bool:
        """Whether delivery can refuse or change anything; when not, links pass untouched."""
        return self._may_use is not None or bool(self._hooks)

    def add_hook(self, name: str, hook: OutboundHook) -> None:
        self._hooks.append((name, hook))

    def set_may_use(self, may_use: MayUse | None) -> None:
        """New access rules (a config reload): every later message is judged by them."""
        self._may_use = may_use

    def set_hook(self, name: str, hook: OutboundHook | None) -> None:
        """Replace (or, with None, remove) the hook named `name`, keeping its place."""
        for i, (existing, _) in enumerate(self._hooks):
            if existing == name:
                if hook is None:
                    del self._hooks[i]
                else:
                    self._hooks[i] = (name, hook)
                return
        if hook is not None:
            self._hooks.append((name, hook))

    def admit(self, message: ClientMessage) -> ClientMessage | None:
        """The message as it may reach its recipient, or None (counted) when it may not."""
        identity = message.recipient.identity
        if (
            message.backend is not None
            and self._may_use is not None
            and identity is not None
            and not self._may_use(identity, message.backend)
        ):
            self._drop(message, "not permitted")
            return None
        for name, hook in self._hooks:
            judged = hook(message)
            if judged is None:
                self._drop(message, name)
                return None
            message = judged
        return message

    def push(
        self,
        push: Push,
        recipient: Recipient,
        backend: str | None,
        method: str,
        params: bytes | None,
    ) -> bool:
        """Deliver a notification through a push callback; False when it was refused."""
        message = self.admit(ClientMessage(recipient, backend, method, params))
        if message is None:
            return False
        push(message.method, message.params)
        return True

    def link(
        self, link: ClientLink | None, recipient: Recipient, backend: str | None
    ) -> ClientLink | None:
        """`link` with everything sent over it judged first; itself when nothing can be."""
        if link is None or not self.screens:
            return link
        return ScreenedLink(self, link, recipient, backend)

    def unattributed(self, backend: str, method: str, why: str) -> None:
        """A message its source could not prove to be any single client's: dropped."""
        self.dropped["unattributed"] += 1
        log.debug("backend %r: %s dropped (%s)", backend, method[:128], why)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def _drop(self, message: ClientMessage, reason: str) -> None:
        self.dropped[reason] += 1
        log.debug(
            "%s from %r for %s not delivered: %s",
            message.method[:128],
            message.backend,
            message.recipient.key[:256],
            reason,
        )


class ScreenedLink:
    """A client link whose notifications and requests pass `Delivery.admit` first."""

    def __init__(
        self, delivery: Delivery, link: ClientLink, recipient: Recipient, backend: str | None
    ) -> None:
        self._delivery = delivery
        self._link = link
        self._recipient = recipient
        self._backend = backend

    @property
    def client(self) -> str:
        return self._link.client

    async def notify(self, method: str, params: bytes | None) -> None:
        message = self._delivery.admit(
            ClientMessage(self._recipient, self._backend, method, params)
        )
        if message is not None:
            await self._link.notify(message.method, message.params)

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        message = self._delivery.admit(
            ClientMessage(self._recipient, self._backend, method, params, request=True)
        )
        if message is None:
            return frame.error_reply(
                codes.INTERNAL_ERROR,
                f"{method}: the gateway does not deliver this request to the client",
                {"source": "gateway"},
            )
        return await self._link.ask(message.method, message.params, timeout)
