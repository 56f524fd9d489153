"""Results of tools a rule marks cacheable, served again to the same caller for a while.

The policy sits after access control, rate limits and every other check (a hit is refused,
counted and recorded exactly like a call that reached the backend) and outside redaction, so
what is kept is the result as the caller received it, already redacted. An entry is keyed by
the qualified principal (else the session), the virtual server, the backend, the tool and its
listed definition, the canonical digest of the arguments, the client's protocol version and
the policy version: one caller's result never reaches another, and a reload or a changed tool
definition never serves an old one.

Only complete, successful results are kept: never an error, an `isError` result, a task, an
`input_required` round or the answer to one. Memory is bounded by entries and by bytes
(least recently used first out); identical calls of one caller in flight at the same moment
share one execution.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import msgspec

from switchyard.call import Call
from switchyard.policies.base import Policy
from switchyard.protocol import methods
from switchyard.routing import catalog
from switchyard.upstream.coalescing import SingleFlight
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

# What an entry costs beside its result's bytes: key, tuple, bookkeeping (an estimate).
ENTRY_OVERHEAD: Final = 256
# Params of a call that continues or starts something: never answered from the cache.
_NOT_CACHEABLE_PARAMS: Final = frozenset({"inputResponses", "requestState", "task"})

_decode = msgspec.json.Decoder()
_encode_sorted = msgspec.json.Encoder(order="sorted")

Key = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class CacheRule:
    backend: str
    tool: str
    ttl_s: float
    assume_read_only: bool = False

    def selects(self, backend: str, tool: str) -> bool:
        return fnmatch.fnmatchcase(backend, self.backend) and fnmatch.fnmatchcase(tool, self.tool)


class _Entry:
    __slots__ = ("expires", "recorded", "result", "size")

    def __init__(self, result: bytes, expires: float, recorded: Raw | None) -> None:
        self.result = result
        self.expires = expires
        self.recorded = recorded
        self.size = len(result) + ENTRY_OVERHEAD + (len(recorded) if recorded else 0)


class Hit(NamedTuple):
    result: bytes
    recorded: Raw | None
    """The arguments as records keep them (redacted), from the call that ran: a hit's record
    never holds more than that call's did."""


class ResultCache:
    """The rules and the entries of one compiled configuration (a reload makes a new one)."""

    def __init__(
        self,
        rules: Sequence[CacheRule],
        *,
        max_entries: int,
        max_bytes: int,
        policy_version: str = "",
    ) -> None:
        self.rules = tuple(rules)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.policy_version = policy_version
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.flights = SingleFlight[Key, tuple[Reply, Raw | None]]()

    def __len__(self) -> int:
        return len(self._entries)

    def rule_for(self, backend: str, tool: str) -> CacheRule | None:
        for rule in self.rules:
            if rule.selects(backend, tool):
                return rule
        return None

    def get(self, key: Key, now: float) -> Hit | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return Hit(entry.result, entry.recorded)

    def put(
        self, key: Key, result: bytes, ttl_s: float, now: float, recorded: Raw | None = None
    ) -> None:
        entry = _Entry(result, now + ttl_s, recorded)
        if entry.size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.bytes += entry.size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size

    def status(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "bytes": self.bytes,
            "hits": self.hits,
            "misses": self.misses,
        }


class ResultCaching(Policy):
    methods = frozenset({methods.TOOLS_CALL})
    settings: ResultCache

    async def __call__(self, call: Call) -> Reply:
        cache = self.settings
        route = call.route
        if route is None or route.kind != catalog.TOOLS:
            return await self.next(call)
        rule = cache.rule_for(route.backend, route.name)
        if rule is None or not _cacheable_call(call, rule):
            return await self.next(call)
        key = _key(call, cache.policy_version)
        if key is None:
            return await self.next(call)
        hit = cache.get(key, time.monotonic())
        if hit is not None:
            cache.hits += 1
            call.recorded_arguments = hit.recorded
            return Reply(result=hit.result)
        cache.misses += 1

        async def execute() -> tuple[Reply, Raw | None]:
            reply = await self.next(call)
            recorded = call.recorded_arguments
            if reply.result is not None and _complete_success(reply.result):
                cache.put(key, reply.result, rule.ttl_s, time.monotonic(), recorded)
            return reply, recorded

        reply, recorded = await cache.flights.run(key, execute)
        call.recorded_arguments = recorded
        # Each waiter gets its own reply: policies outside may rewrite it for their caller.
        return Reply(result=reply.result, error=reply.error, http=reply.http)


def _cacheable_call(call: Call, rule: CacheRule) -> bool:
    fields = call.fields()
    if _NOT_CACHEABLE_PARAMS.intersection(fields):
        return False
    assert call.route is not None
    return rule.assume_read_only or _read_only(call.route.entry.item)


def _read_only(item: bytes) -> bool:
    try:
        tool = _decode.decode(item)
    except msgspec.DecodeError:
        return False
    annotations = tool.get("annotations") if isinstance(tool, dict) else None
    return isinstance(annotations, dict) and annotations.get("readOnlyHint") is True


def _key(call: Call, policy_version: str) -> Key | None:
    """Everything that changes the answer or who may see it; None: arguments that are not
    JSON (the backend answers those, uncached)."""
    route = call.route
    assert route is not None
    ctx = call.ctx
    raw = call.fields().get("arguments")
    try:
        canonical = _encode_sorted.encode(_decode.decode(raw)) if raw is not None else b"{}"
    except msgspec.DecodeError:
        return None
    return (
        ctx.principal or (f"session:{ctx.session_id}" if ctx.session_id else ctx.caller),
        ctx.view,
        route.backend,
        route.name,
        route.entry.item,
        hashlib.sha256(canonical).digest(),
        ctx.era.value,
        ctx.version,
        policy_version,
    )


def _complete_success(result: bytes) -> bool:
    try:
        fields = frame.decode_object(result)
    except (frame.DecodeError, frame.ValidationError):
        return False
    if "task" in fields:
        return False
    kind = fields.get("resultType")
    if kind is not None and bytes(kind).strip() != b'"complete"':
        return False
    flag = fields.get("isError")
    return flag is None or bytes(flag).strip() == b"false"
