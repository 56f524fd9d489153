"""The redaction engine: applies the rules that select a message to its strings.

Only string values change, and only into strings: a number stays a number, an object keeps its
keys unless a rule strips them. Structural protocol fields (`type`, `mimeType`, `blob`,
`resultType`, `requestState`, `progressToken`, `uri`, cursors) are never rewritten, so a
redacted message is still the message the client expects. Nothing here logs, raises or
returns a matched value: only rule and detector names and JSON paths.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from switchyard.call import ANONYMOUS, Identity
from switchyard.protocol import methods
from switchyard.redaction.detector import Detector, Finding
from switchyard.redaction.output_schema import changed_violation, first_violation
from switchyard.redaction.rules import Action, Direction, RedactionRule, Selection, select
from switchyard.redaction.scanner import Scanner
from switchyard.redaction.vault import TokenVault
from switchyard.wire import frame

log = logging.getLogger("switchyard.redaction")

# Fields a client or backend reads as protocol, not content: never rewritten.
_STRUCTURAL: Final = frozenset(
    {
        "type",
        "mimeType",
        "blob",
        "resultType",
        "requestState",
        "progressToken",
        "uri",
        "cursor",
        "nextCursor",
        "taskId",
        "requestId",
        "level",
        "role",
        "requestedSchema",
        "ttlMs",
        "cacheScope",
    }
)
# Top-level fields no `strip_keys` glob removes: the message would stop being one.
_PROTECTED: Final = frozenset(
    {
        "content",
        "structuredContent",
        "isError",
        "contents",
        "messages",
        "completion",
        "task",
        "tasks",
        "inputRequests",
        "progress",
        "total",
        "data",
        "arguments",
        "name",
        *_STRUCTURAL,
    }
)
_BINARY_ITEMS: Final = frozenset({"image", "audio"})
_MAX_CACHED_SCHEMAS: Final = 512
_ROUTED_RESULTS: Final = frozenset(
    {
        methods.TOOLS_CALL,
        methods.PROMPTS_GET,
        methods.RESOURCES_READ,
        methods.COMPLETE,
        methods.TASKS_GET,
        methods.TASKS_RESULT,
    }
)


class Blocked(Exception):
    """A `block` rule found what it blocks: the whole message is refused."""

    def __init__(self, rule: str, detector: str, direction: Direction) -> None:
        super().__init__(f"redaction rule {rule!r} blocks {detector} in {direction.value}")
        self.rule = rule
        self.detector = detector
        self.direction = direction


@dataclass(frozen=True, slots=True)
class RedactionSettings:
    rules: tuple[RedactionRule, ...]
    detectors: tuple[Detector, ...]
    """Every detector rules may name, in precedence order (operators' patterns first)."""
    key: bytes
    """HMAC key of `hash` and `tokenize`."""
    token_ttl_s: float = 3600.0
    tokens_per_principal: int = 10_000
    tokens_total: int = 1_000_000


@dataclass(frozen=True, slots=True)
class _Plan:
    selection: Selection
    scanner: Scanner


@dataclass(slots=True)
class _Pass:
    """One message's walk: whose it is and what was changed where."""

    plan: _Plan
    direction: Direction
    owner: str
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    """(JSON pointer, rule, detector) of every replacement or stripped key."""
    stripped: bool = False
    replaced: dict[tuple[str, str], str] = field(default_factory=dict)
    """(detector, value) -> its mask or hash: a value a message carries twice is replaced once."""


@dataclass(frozen=True, slots=True)
class Withheld:
    """A structuredContent that redaction made break its outputSchema."""

    rule: str
    detector: str
    path: str


class Redactor:
    def __init__(self, settings: RedactionSettings) -> None:
        self.settings = settings
        self.rules = settings.rules
        self._detectors = {d.name: d for d in settings.detectors}
        self._order = settings.detectors
        self._key = settings.key
        self.vault = TokenVault(
            settings.key, settings.token_ttl_s, settings.tokens_per_principal, settings.tokens_total
        )
        self._plans: dict[tuple[int, ...], _Plan | None] = {}
        self._schemas: dict[bytes, tuple[bytes, Any] | None] = {}
        self.applied: Counter[tuple[str, str, str]] = Counter()
        """(rule, detector, direction) -> values redacted: counts, never values."""
        self.tokenizes = any(r.action is Action.TOKENIZE for r in self.rules)

    # -- selection ----------------------------------------------------------------------------

    def plan(
        self,
        direction: Direction,
        who: Identity | None,
        view: str | None,
        backend: str | None,
        name: str | None,
    ) -> _Plan | None:
        applicable = tuple(
            i
            for i, rule in enumerate(self.rules)
            if rule.applies(direction, who, view, backend, name)
        )
        if not applicable:
            return None
        if applicable in self._plans:
            return self._plans[applicable]
        chosen = [self.rules[i] for i in applicable]
        selection = select(chosen, direction, who, view, backend, name)
        plan = None
        if not selection.empty:
            scanner = Scanner([d for d in self._order if d.name in selection.actions])
            plan = _Plan(selection, scanner)
        self._plans[applicable] = plan
        return plan

    # -- the three directions -----------------------------------------------------------------

    def redact_arguments(
        self,
        who: Identity | None,
        view: str | None,
        backend: str | None,
        name: str | None,
        arguments: bytes,
    ) -> bytes | None:
        """The `arguments` object going to a backend, with detected values redacted and then
        the caller's own tokens resolved; None when nothing changed. Raises `Blocked`."""
        owner = who.key if who is not None else ANONYMOUS
        plan = self.plan(Direction.ARGUMENTS, who, view, backend, name)
        resolve = self.tokenizes and self.vault.held_by(owner) > 0
        if plan is None and not resolve:
            return None
        value = frame.decode_any(arguments)
        changed = False
        if plan is not None:
            state = _Pass(plan, Direction.ARGUMENTS, owner)
            value = self._redact(state, value, payload=True, top=False)
            changed = bool(state.changes)
            self._count(state)
        if resolve:
            value, resolved = self._resolve(owner, value)
            changed = changed or resolved > 0
        return msgspec.json.encode(value) if changed else None

    def redact_for_record(
        self,
        who: Identity | None,
        view: str | None,
        backend: str | None,
        name: str | None,
        arguments: bytes,
    ) -> bytes | None:
        """The `arguments` as a record (audit) may keep them: detected values redacted, the
        caller's tokens left as tokens; None when nothing changed. Arguments a `block` rule
        refuses are not kept at all: the record says which rule withheld them."""
        plan = self.plan(Direction.ARGUMENTS, who, view, backend, name)
        if plan is None:
            return None
        owner = who.key if who is not None else ANONYMOUS
        state = _Pass(plan, Direction.ARGUMENTS, owner)
        try:
            value = self._redact(state, frame.decode_any(arguments), payload=True, top=False)
        except Blocked as blocked:
            return msgspec.json.encode(
                f"[withheld: redaction rule {blocked.rule!r} blocks {blocked.detector}]"
            )
        return msgspec.json.encode(value) if state.changes else None

    def redact_result(
        self,
        method: str,
        who: Identity | None,
        view: str | None,
        backend: str | None,
        name: str | None,
        result: bytes,
        tool: bytes | None = None,
    ) -> bytes | Withheld | None:
        """A routed request's result with the applicable rules applied; None when nothing
        changed. `tool` is the tool's listed definition (its `outputSchema` is kept valid).
        Raises `Blocked`."""
        if method not in _ROUTED_RESULTS:
            return None
        plan = self.plan(Direction.RESULTS, who, view, backend, name)
        if plan is None:
            return None
        decoded = frame.decode_any(result)
        if not isinstance(decoded, dict):
            return None
        state = _Pass(plan, Direction.RESULTS, who.key if who is not None else ANONYMOUS)
        mirrors = _mirrors(plan, decoded)
        for index, _style, _text in mirrors:
            decoded["content"][index]["text"] = ""  # rendered from the redacted copy below
        redacted = self._redact(state, decoded, payload=False, top=True)
        for index, style, text in mirrors:
            item = redacted["content"][index]
            if not state.changes:
                item["text"] = text
                continue
            item["text"] = _render(redacted["structuredContent"], style)
            where = f"/content/{index}/text"
            prefix = "/structuredContent"
            state.changes.extend(
                (where, rule, detector)
                for path, rule, detector in list(state.changes)
                if path.startswith(prefix) and detector
            )
        if not state.changes:
            return None
        self._count(state)
        structured = "structuredContent"
        if tool is not None and structured in redacted and not redacted.get("isError"):
            withheld = self._check_schema(state, tool, result, redacted[structured])
            if withheld is not None:
                return withheld
        return msgspec.json.encode(redacted)

    def redact_notification(
        self,
        identity: Identity | None,
        backend: str | None,
        method: str,
        params: bytes,
        *,
        view: str | None = None,
        name: str | None = None,
    ) -> bytes | None:
        """A client-bound notification's (or server->client request's) params, redacted by
        the rules for notifications; returns `params` itself when nothing applies or changed,
        and None when a `block` rule found what it blocks (the message must be dropped)."""
        plan = self.plan(Direction.NOTIFICATIONS, identity, view, backend, name)
        if plan is None:
            return params
        try:
            decoded = frame.decode_any(params)
        except msgspec.DecodeError:
            # Unreachable from the wire (every frame is decoded whole first); should it happen,
            # what cannot be read is not passed on unread.
            log.warning("a %s from backend %r could not be read to redact it; dropped",
                        method[:64], backend)  # fmt: skip
            return None
        owner = identity.key if identity is not None else ANONYMOUS
        state = _Pass(plan, Direction.NOTIFICATIONS, owner)
        try:
            redacted = self._redact(state, decoded, payload=False, top=True)
        except Blocked as blocked:
            self.applied[(blocked.rule, blocked.detector, Direction.NOTIFICATIONS.value)] += 1
            log.info(
                "redaction rule %r dropped a %s from backend %r (%s)",
                blocked.rule,
                method[:64],
                backend,
                blocked.detector,
            )
            return None
        if not state.changes:
            return params
        self._count(state)
        return msgspec.json.encode(redacted)

    # -- walking ------------------------------------------------------------------------------

    def _redact(self, state: _Pass, value: Any, payload: bool, top: bool) -> Any:
        """`value` with every applicable rule applied, in place (it is this message's own
        decoded copy); strings are gathered first and scanned in one pass."""
        if isinstance(value, str):
            box = [value]
            self._redact(state, box, payload, False)
            return box[0]
        leaves: list[tuple[Any, Any, str, str | None, str]] = []
        self._collect(state, value, None, "", payload, top, leaves)
        if not leaves:
            return value
        scanner = state.plan.scanner
        found = scanner.find_many([leaf[2] for leaf in leaves], [leaf[3] for leaf in leaves])
        actions = state.plan.selection.actions
        # Decide a block before anything is replaced (or tokenized into the vault).
        for findings in found:
            for f in findings:
                rule = actions[f.detector]
                if rule.action is Action.BLOCK:
                    raise Blocked(rule.name, f.detector, state.direction)
        for (container, slot, text, _key, parent), findings in zip(leaves, found, strict=True):
            if findings:
                # A leaf's pointer is written out only once it has something to report.
                where = (
                    f"{parent}/{slot}" if isinstance(slot, int) else f"{parent}/{_pointer(slot)}"
                )
                container[slot] = self._apply(state, text, findings, where)
        return value

    def _collect(
        self,
        state: _Pass,
        value: Any,
        key: str | None,
        path: str,
        payload: bool,
        top: bool,
        leaves: list[tuple[Any, Any, str, str | None, str]],
    ) -> None:
        """Gathers the strings to scan as (container, slot, text, key, pointer of the
        container)."""
        if isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, str):
                    leaves.append((value, i, v, key, path))
                elif isinstance(v, dict | list):
                    self._collect(state, v, key, f"{path}/{i}", payload, False, leaves)
            return
        if not isinstance(value, dict):
            return
        selection = state.plan.selection
        strip = selection.strip_keys
        if strip is not None:
            for k in [k for k in value if strip.fullmatch(k) and not (top and k in _PROTECTED)]:
                del value[k]
                state.changes.append((f"{path}/{_pointer(k)}", selection.stripped_by(k), ""))
                state.stripped = True
        binary = not payload and value.get("type") in _BINARY_ITEMS
        for k, v in value.items():
            if binary and k == "data":
                continue
            if not payload and k in _STRUCTURAL and not isinstance(v, dict | list):
                continue
            if isinstance(v, str):
                leaves.append((value, k, v, k, path))
            elif isinstance(v, dict | list):
                inner = payload or k in ("structuredContent", "arguments") or (top and k == "data")
                self._collect(state, v, k, f"{path}/{_pointer(k)}", inner, False, leaves)

    def _apply(self, state: _Pass, text: str, findings: list[Finding], path: str) -> str:
        actions = state.plan.selection.actions
        parts: list[str] = []
        pos = 0
        for f in findings:
            rule = actions[f.detector]
            parts.append(text[pos : f.start])
            parts.append(self._replace(state, rule, f.detector, text[f.start : f.end]))
            pos = f.end
            state.changes.append((path, rule.name, f.detector))
        parts.append(text[pos:])
        return "".join(parts)

    def _replace(self, state: _Pass, rule: RedactionRule, detector: str, value: str) -> str:
        if rule.action is Action.TOKENIZE:
            return self.vault.tokenize(state.owner, detector, value)
        # Mask and hash depend on the value alone.
        seen = state.replaced.get((detector, value))
        if seen is not None:
            return seen
        if rule.action is Action.MASK:
            out = self._detectors[detector].mask(value)
        else:
            digest = hmac.new(
                self._key, f"{detector}\0{value}".encode(), hashlib.sha256
            ).hexdigest()[:16]
            out = f"«hash:{detector}:{digest}»"
        state.replaced[(detector, value)] = out
        return out

    def _resolve(self, owner: str, value: Any) -> tuple[Any, int]:
        if isinstance(value, str):
            return self.vault.resolve(owner, value)
        if isinstance(value, list):
            total = 0
            items = []
            for v in value:
                item, n = self._resolve(owner, v)
                items.append(item)
                total += n
            return items, total
        if isinstance(value, dict):
            total = 0
            out = {}
            for k, v in value.items():
                out[k], n = self._resolve(owner, v)
                total += n
            return out, total
        return value, 0

    # -- the output schema --------------------------------------------------------------------

    def _check_schema(
        self, state: _Pass, tool: bytes, original: bytes, redacted: Any
    ) -> Withheld | None:
        schema = self._output_schema(tool)
        if schema is None:
            return None
        schema_json, schema_obj = schema
        prefix = "/structuredContent"
        changed = sorted({p[len(prefix) :] for p, _r, _d in state.changes if p.startswith(prefix)})
        if not changed:
            return None
        if state.stripped:
            where = first_violation(schema_json, schema_obj, redacted)
        else:
            where = changed_violation(schema_json, schema_obj, redacted, changed)
        if where is None:
            return None
        before = frame.decode_any(original).get("structuredContent")
        if first_violation(schema_json, schema_obj, before) is not None:
            # It never conformed: only a break redaction caused is redaction's to report.
            return None
        blamed = [
            (rule, detector)
            for path, rule, detector in state.changes
            if path.startswith(prefix)
            and (
                path[len(prefix) :] == where
                or path[len(prefix) :].startswith(where.rstrip("/") + "/")
            )
        ] or [(rule, detector) for path, rule, detector in state.changes]
        rule, detector = blamed[0]
        return Withheld(rule, detector, where)

    def _output_schema(self, tool: bytes) -> tuple[bytes, Any] | None:
        if tool in self._schemas:
            return self._schemas[tool]
        found: tuple[bytes, Any] | None = None
        try:
            item = frame.decode_any(tool)
        except msgspec.DecodeError:
            item = None
        if isinstance(item, dict) and isinstance(item.get("outputSchema"), dict):
            found = (msgspec.json.encode(item["outputSchema"]), item["outputSchema"])
        if len(self._schemas) >= _MAX_CACHED_SCHEMAS:
            self._schemas.clear()
        self._schemas[tool] = found
        return found

    def _count(self, state: _Pass) -> None:
        direction = state.direction.value
        # Counter.update counts an iterable in C: a result may carry hundreds of changes.
        self.applied.update((rule, detector, direction) for _path, rule, detector in state.changes)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "redacted %d value(s) in %s: %s",
                len(state.changes),
                state.direction.value,
                sorted({f"{rule}/{detector}" for _p, rule, detector in state.changes}),
            )


_MIN_MIRROR: Final = 512
"""Below this a text block is cheaper to scan than to compare with a rendering."""


@dataclass(frozen=True, slots=True)
class _Style:
    """How a backend wrote its structuredContent as text (`json.dumps` and `JSON.stringify`
    forms; the official Python SDK's is `indent=2`, non-ASCII as is)."""

    indent: int | None
    separators: tuple[str, str]
    ensure_ascii: bool


def _style_of(text: str) -> _Style:
    ascii_only = text.isascii()
    if text[:1] in "[{" and text[1:4] == "\n  ":
        return _Style(2, (",", ": "), ascii_only)
    spaced = '": ' in text[:256]
    return _Style(None, (", ", ": ") if spaced else (",", ":"), ascii_only)


def _render(value: Any, style: _Style) -> str:
    return json.dumps(
        value, indent=style.indent, separators=style.separators, ensure_ascii=style.ensure_ascii
    )


def _mirrors(plan: _Plan, result: dict[str, Any]) -> list[tuple[int, _Style, str]]:
    """The text blocks of a tool result that are exactly its structuredContent rendered as
    JSON (what SDK servers send for compatibility): redacting the structure and rendering it
    again redacts them identically, without scanning the same values a second time. Only
    when the plan's detectors are all built-in ones, which never match across JSON syntax,
    and no object key of the structure holds a finding (keys are not rewritten; the text's
    copy of them would then go unredacted)."""
    structured = result.get("structuredContent")
    content = result.get("content")
    if not isinstance(structured, dict | list) or not isinstance(content, list):
        return []
    if not plan.scanner.builtin_only:
        return []
    found: list[tuple[int, _Style, str]] = []
    for index, item in enumerate(content):
        if not isinstance(item, dict) or item.get("type") != "text":
            continue
        text = item.get("text")
        if not isinstance(text, str) or len(text) < _MIN_MIRROR or text[:1] not in "[{":
            continue
        style = _style_of(text)
        try:
            same = _render(structured, style) == text
        except (TypeError, ValueError):
            same = False
        if same:
            found.append((index, style, text))
    if found:
        keys = sorted(_keys(structured))
        if keys and any(plan.scanner.find_many(keys, [None] * len(keys))):
            return []
    return found


def _keys(value: Any) -> set[str]:
    into: set[str] = set()
    # Only containers are visited: a result's strings far outnumber its objects.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            into.update(item)
            stack.extend([v for v in item.values() if isinstance(v, dict | list)])
        elif isinstance(item, list):
            stack.extend([v for v in item if isinstance(v, dict | list)])
    return into


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def withheld_result(withheld: Withheld, modern: bool) -> bytes:
    """The tool error a client gets instead of a structuredContent redaction made invalid."""
    text = (
        f"Switchyard withheld this result: redaction rule {withheld.rule!r} "
        f"({withheld.detector or 'strip_keys'}) changed {withheld.path or '/'} "
        "that the tool's output schema constrains."
    )
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
    if modern:
        result["resultType"] = "complete"
    return msgspec.json.encode(result)
