"""Era translation for a modern client of a legacy backend: parked calls.

A legacy backend asks its client mid-call (elicitation, sampling, roots) with a real request; a
2026-07-28 client cannot be asked. Switchyard parks the backend call, answers the client with an
`input_required` result, and resumes the parked call when the client retries with its answers.
The `requestState` it hands out names the parked call, is HMAC-signed, expires, and is bound to
the caller: a forged, stale or foreign one is refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from switchyard.protocol import codes, methods
from switchyard.protocol.link import CAPABILITY_FOR, ClientLink
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

log = logging.getLogger("switchyard.bridge")

STATE_PREFIX: Final = "sy1."
# How long a parked call waits for the client's retry before it is cancelled upstream.
PARK_TTL_S: Final = 300.0
# Notifications kept for a parked call until the client's retry; past that, the oldest go.
MAX_HELD: Final = 256
MAX_PARKED: Final = 1000
# One caller's share: nobody can park so many calls that everyone else's are refused.
MAX_PARKED_PER_CALLER: Final = 100


@dataclass(slots=True, eq=False)
class _Question:
    key: str
    method: str
    params: bytes | None
    answer: asyncio.Future[Reply]


@dataclass(slots=True, eq=False)
class ParkedCall:
    id: str
    caller: str
    capabilities: Raw | None
    task: asyncio.Task[Reply] | None = None
    questions: asyncio.Queue[_Question] = field(default_factory=asyncio.Queue)
    asked: _Question | None = None
    link: ClientLink | None = None
    """The link of the client's current POST, for progress while it is open."""
    progress_token: Raw | None = None
    """The current request's progress token: a retry brings a new one."""
    held: list[tuple[str, bytes | None]] = field(default_factory=list)
    """Notifications that came while the call waited for the client's retry."""
    expires: float = 0.0
    _keys: itertools.count[int] = field(default_factory=itertools.count)


class ParkingLink:
    """The link a legacy backend's call sees: questions are queued for the modern client."""

    __slots__ = ("parked",)

    def __init__(self, parked: ParkedCall) -> None:
        self.parked = parked

    @property
    def client(self) -> str:
        return f"parked-{self.parked.id}"

    async def notify(self, method: str, params: bytes | None) -> None:
        parked = self.parked
        if parked.link is None:
            if len(parked.held) < MAX_HELD:
                parked.held.append((method, params))
            return
        await _deliver(parked, method, params)

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        needed = CAPABILITY_FOR.get(method)
        if needed is not None and not _declares(self.parked.capabilities, needed):
            return frame.error_reply(
                codes.METHOD_NOT_FOUND, f"The client does not support {method}"
            )
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        key = f"{method.replace('/', '_')}_{next(self.parked._keys)}"
        await self.parked.questions.put(_Question(key, method, params, answer))
        try:
            return await asyncio.wait_for(asyncio.shield(answer), PARK_TTL_S)
        except TimeoutError:
            return frame.error_reply(
                codes.CLIENT_TIMEOUT, f"the client did not answer {method}", {"source": "gateway"}
            )


async def _deliver(parked: ParkedCall, method: str, params: bytes | None) -> None:
    """To the client's current request; progress carries that request's own token."""
    if method == methods.PROGRESS and params is not None and parked.progress_token is not None:
        fields = frame.decode_object(params)
        fields["progressToken"] = parked.progress_token
        params = frame.encode_object(fields)
    if parked.link is not None:
        with contextlib.suppress(Exception):
            await parked.link.notify(method, params)


def _declares(capabilities: Raw | None, name: str) -> bool:
    if capabilities is None:
        return False
    try:
        return name in frame.decode_object(capabilities)
    except (frame.DecodeError, frame.ValidationError):
        return False


class ParkedStore(Protocol):
    """Where parked calls wait: in memory today. A parked call's backend session lives in one
    process, so a shared store would hold the records and route a retry to their owner."""

    def __len__(self) -> int: ...

    def put(self, parked: ParkedCall) -> None: ...

    def get(self, call_id: str) -> ParkedCall | None: ...

    def take(self, call_id: str) -> ParkedCall | None: ...

    def held_by(self, caller: str) -> int: ...

    def expired(self, now: float) -> list[str]: ...

    def values(self) -> list[ParkedCall]: ...


class MemoryParkedStore:
    def __init__(self) -> None:
        self._calls: dict[str, ParkedCall] = {}
        self._by_caller: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def put(self, parked: ParkedCall) -> None:
        self._calls[parked.id] = parked
        self._by_caller[parked.caller] = self._by_caller.get(parked.caller, 0) + 1

    def get(self, call_id: str) -> ParkedCall | None:
        return self._calls.get(call_id)

    def take(self, call_id: str) -> ParkedCall | None:
        parked = self._calls.pop(call_id, None)
        if parked is None:
            return None
        left = self._by_caller[parked.caller] - 1
        if left:
            self._by_caller[parked.caller] = left
        else:
            del self._by_caller[parked.caller]
        return parked

    def held_by(self, caller: str) -> int:
        return self._by_caller.get(caller, 0)

    def expired(self, now: float) -> list[str]:
        return [cid for cid, p in self._calls.items() if p.expires < now]

    def values(self) -> list[ParkedCall]:
        return list(self._calls.values())


class ParkedCalls:
    def __init__(self, secret: bytes | None = None, store: ParkedStore | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._store: ParkedStore = store if store is not None else MemoryParkedStore()

    def __len__(self) -> int:
        return len(self._store)

    def tasks(self) -> list[asyncio.Task[Reply]]:
        """The backend calls still parked (for shutdown)."""
        return [p.task for p in self._store.values() if p.task is not None]

    def owns(self, fields: dict[str, Raw]) -> bool:
        raw = fields.get("requestState")
        if raw is None:
            return False
        try:
            return frame.decode_str(raw).startswith(STATE_PREFIX)
        except (frame.DecodeError, frame.ValidationError):
            return False

    async def start(
        self,
        caller: str,
        capabilities: Raw | None,
        link: ClientLink | None,
        run: Callable[[ClientLink], Awaitable[Reply]],
        token: Raw | None = None,
    ) -> Reply:
        """Run a backend call that may ask questions; answer or park it."""
        self.expire()
        if len(self._store) >= MAX_PARKED:
            return _full("the gateway has too many calls awaiting client input")
        if self._store.held_by(caller) >= MAX_PARKED_PER_CALLER:
            return _full(f"{MAX_PARKED_PER_CALLER} of your calls already await your input")
        parked = ParkedCall(
            secrets.token_urlsafe(16), caller, capabilities, link=link, progress_token=token
        )
        parked.task = asyncio.ensure_future(run(ParkingLink(parked)))
        return await self._next(parked)

    async def resume(
        self,
        caller: str,
        fields: dict[str, Raw],
        link: ClientLink | None,
        token: Raw | None = None,
    ) -> Reply:
        parked = self._verify(caller, fields.get("requestState"))
        if parked is None:
            return frame.error_reply(codes.INVALID_PARAMS, "Invalid or expired requestState")
        asked = parked.asked
        responses = fields.get("inputResponses")
        answers = frame.decode_object(responses) if responses is not None else {}
        if asked is None or asked.key not in answers:
            return frame.error_reply(
                codes.INVALID_PARAMS, "inputResponses lacks the requested input"
            )
        self._store.take(parked.id)
        parked.asked = None
        parked.link = link
        parked.progress_token = token
        held, parked.held = parked.held, []
        for method, params in held:
            await _deliver(parked, method, params)
        asked.answer.set_result(Reply(result=bytes(answers[asked.key])))
        return await self._next(parked)

    async def _next(self, parked: ParkedCall) -> Reply:
        """Wait for the parked call to finish or to ask its next question."""
        assert parked.task is not None
        question = asyncio.ensure_future(parked.questions.get())
        try:
            await asyncio.wait({parked.task, question}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The client left while its call ran: the call goes too (cancelled upstream).
            parked.task.cancel()
            raise
        finally:
            if not question.done():
                question.cancel()
        if parked.task.done() and not question.done():
            return parked.task.result()
        asked = question.result()
        parked.asked = asked
        parked.link = None
        parked.expires = time.monotonic() + PARK_TTL_S
        self._store.put(parked)
        request = {"method": asked.method}
        result = (
            b'{"resultType":"input_required","inputRequests":{'
            + frame.encode(asked.key)
            + b":"
            + frame.encode_object(
                {**request, **({"params": Raw(asked.params)} if asked.params else {})}
            )
            + b'},"requestState":'
            + frame.encode(self._sign(parked))
            + b"}"
        )
        return Reply(result=result)

    def _sign(self, parked: ParkedCall) -> str:
        payload = f"{parked.id}.{int(parked.expires)}"
        mac = hmac.new(self._secret, f"{payload}.{parked.caller}".encode(), hashlib.sha256).digest()
        return STATE_PREFIX + payload + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def _verify(self, caller: str, raw: Raw | None) -> ParkedCall | None:
        try:
            state = frame.decode_str(raw) if raw is not None else ""
            call_id, expires, mac = state.removeprefix(STATE_PREFIX).split(".")
            payload = f"{call_id}.{expires}"
            expected = hmac.new(
                self._secret, f"{payload}.{caller}".encode(), hashlib.sha256
            ).digest()
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        except (frame.DecodeError, frame.ValidationError, ValueError):
            return None
        if not hmac.compare_digest(expected, given) or time.monotonic() > float(expires):
            return None
        parked = self._store.get(call_id)
        return parked if parked is not None and parked.caller == caller else None

    def expire(self) -> None:
        now = time.monotonic()
        for call_id in self._store.expired(now):
            parked = self._store.take(call_id)
            if parked is not None and parked.task is not None:
                parked.task.cancel()  # reaches the backend as notifications/cancelled
            log.info("parked call %s… expired without the client's answer", call_id[:6])


def _full(why: str) -> Reply:
    return frame.error_reply(codes.QUOTA_EXCEEDED, why, {"source": "gateway"})
