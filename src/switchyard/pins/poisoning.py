"""Tool-poisoning checks: text in a definition that speaks to the model rather than describing
the tool. Deterministic and linear in the definition's size (token windows of fixed length,
fixed substrings, one character class), and no network.

Four rules, each with its own action:
- `hidden_instructions`: phrases that address the model ("ignore previous instructions", "do
  not tell the user") and pseudo-markup blocks (`<IMPORTANT>`, `<system>`).
- `sensitive_files`: paths of credentials and client configuration (`~/.ssh`, `id_rsa`,
  `.aws/credentials`, `mcp.json`).
- `invisible_characters`: zero-width, bidirectional controls, the Unicode tags block,
  variation-selector smuggling and control characters, anywhere in the definition.
- `cross_tool_reference`: another backend's tool named in this one's text (a tool telling the
  model what to do with tools it does not own).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

Action = Literal["off", "warn", "quarantine", "block"]
RULES: Final = (
    "hidden_instructions",
    "sensitive_files",
    "invisible_characters",
    "cross_tool_reference",
)
DEFAULT_ACTIONS: Final[Mapping[str, Action]] = {
    "hidden_instructions": "quarantine",
    "sensitive_files": "quarantine",
    "invisible_characters": "quarantine",
    "cross_tool_reference": "warn",
}
# Strength order: the strongest finding decides what happens to an item.
SEVERITY: Final[Mapping[str, int]] = {"off": 0, "warn": 1, "quarantine": 2, "block": 3}
EXCERPT_CHARS: Final = 80
# Values of these members are machine syntax (types, references, media types), not prose.
_SYNTAX_KEYS: Final = frozenset(
    {
        "$ref",
        "$schema",
        "$id",
        "$anchor",
        "type",
        "format",
        "pattern",
        "mimeType",
        "uri",
        "uriTemplate",
        "src",
        "sizes",
        "theme",
        "contentEncoding",
        "contentMediaType",
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    action: Action
    where: str
    """The JSON path of the offending text, e.g. `inputSchema.properties.path.description`."""
    excerpt: str
    """The text around the match, with invisible characters written as escapes."""

    def as_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "action": self.action,
            "where": self.where,
            "excerpt": self.excerpt,
        }


def strongest(findings: tuple[Finding, ...]) -> Action:
    best: Action = "off"
    for finding in findings:
        if SEVERITY[finding.action] > SEVERITY[best]:
            best = finding.action
    return best


# --- phrases -------------------------------------------------------------------------------


def _slot(*words: str, optional: bool = False) -> tuple[frozenset[str], bool]:
    return frozenset(words), optional


_PREVIOUS = _slot(
    "previous", "prior", "above", "earlier", "preceding", "former", "system", "original", "other"
)
_RULES_WORDS = _slot(
    "instructions", "instruction", "prompts", "prompt", "messages", "rules", "directions",
    "guidelines", "context", "commands",
)  # fmt: skip
_TELL = _slot("tell", "inform", "mention", "reveal", "notify", "alert", "show", "disclose")
_TELLING = _slot("telling", "informing", "notifying", "alerting", "asking", "showing")
_THE = _slot("the", "this", "your", optional=True)
_USER = _slot("user", "users", "human", "humans", "operator")
_PHRASES: Final = (
    (_slot("ignore", "disregard", "forget", "override", "bypass"),
     _slot("all", "any", "the", "your", "of", optional=True),
     _slot("the", "your", optional=True), _PREVIOUS, _RULES_WORDS),
    (_slot("ignore", "disregard", "forget"), _slot("everything", "anything"),
     _slot("above", "before", "previously", "said")),
    (_slot("do", "must", "should", "shall"), _slot("not", "never"), _TELL, _THE, _USER),
    (_slot("don't", "dont", "never", "cannot"), _TELL, _THE, _USER),
    (_slot("without"), _TELLING, _THE, _USER),
    (_slot("hide", "conceal", "keep"), _slot("this", "it", "that", "these"),
     _slot("from", "secret", optional=False)),
    (_USER, _slot("must", "should", "shall", "may"), _slot("not", "never"),
     _slot("know", "see", "notice", "learn", "be", "find")),
    (_slot("reveal", "print", "output", "repeat", "show", "leak", "send"),
     _slot("your", "the", optional=True), _slot("system"), _slot("prompt", "instructions")),
    (_slot("you", "assistant"), _slot("are"), _slot("now")),
    (_slot("new", "real", "actual", "true", "hidden", "secret", "updated"),
     _slot("instructions", "instruction", "objective")),
)  # fmt: skip
_MARKUP: Final = (
    "<important",
    "</important",
    "<system",
    "</system",
    "<instructions",
    "<instruction>",
    "<secret",
    "<hidden",
    "<critical",
    "<admin",
    "<assistant",
    "[system]",
    "[inst]",
    "<|im_start|>",
    "<|system|>",
)
_SENSITIVE: Final = (
    "~/.ssh",
    ".ssh/",
    "id_rsa",
    "id_ed25519",
    "id_ecdsa",
    "id_dsa",
    "authorized_keys",
    "known_hosts",
    "~/.aws",
    ".aws/credentials",
    "~/.gnupg",
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".git-credentials",
    "/etc/passwd",
    "/etc/shadow",
    "mcp.json",
    "claude_desktop_config",
    ".kube/config",
    ".docker/config.json",
    "~/.config/gcloud",
    "credentials.json",
)
_WORDS: Final = re.compile(r"[a-z0-9']+")
_IDENT: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_QUOTED: Final = re.compile(r"[`'\"]([A-Za-z0-9_.\-]+)[`'\"]")
# Zero-width and joiners, bidirectional embeddings/overrides/isolates and marks, invisible
# separators and operators, the tags block, variation selectors other than the emoji ones
# (FE0E/FE0F), interlinear annotations, Hangul fillers, and C0/C1 controls but tab and breaks.
_INVISIBLE: Final = re.compile(
    "[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160"
    "\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0d"
    "\ufeff\ufff9-\ufffb\uffa0\U0001d173-\U0001d17a\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str, bool]]:
    """(path, text, is_prose) for every string and member name in a definition."""
    if isinstance(value, str):
        yield path, value, True
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            yield where, key, False
            # The item's own name is its identity, checked for invisible characters only.
            if (key in _SYNTAX_KEYS or (not path and key == "name")) and isinstance(item, str):
                yield where, item, False
            else:
                yield from _strings(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def shown(text: str) -> str:
    """`text` with every invisible or non-printing character written as an escape."""
    if _INVISIBLE.search(text) is None and text.isprintable():
        return text
    return "".join(
        c if _INVISIBLE.match(c) is None and (c.isprintable() or c == "\n") else f"\\u{ord(c):04x}"
        for c in text
    )


def _excerpt(text: str, start: int, length: int) -> str:
    lo = max(0, start - 20)
    piece = shown(text[lo : lo + max(length, 1) + 40])
    if len(piece) > EXCERPT_CHARS:
        piece = piece[:EXCERPT_CHARS] + "…"
    return piece


def _phrase_at(words: list[str], i: int) -> int:
    """The length of a phrase starting at words[i] (0: none)."""
    for pattern in _PHRASES:
        j = i
        for choices, optional in pattern:
            if j < len(words) and words[j] in choices:
                j += 1
            elif not optional:
                break
        else:
            return j - i
    return 0


@dataclass(frozen=True, slots=True)
class Checker:
    actions: Mapping[str, Action]

    def scan(
        self,
        value: dict[str, Any],
        foreign_names: frozenset[str] = frozenset(),
    ) -> tuple[Finding, ...]:
        """Every rule's first finding in this definition (one per rule: enough to decide and
        to show why); `foreign_names` are other backends' tool names."""
        found: dict[str, Finding] = {}

        def add(rule: str, where: str, text: str, start: int, length: int) -> None:
            action = self.actions.get(rule, "off")
            if action != "off" and rule not in found:
                found[rule] = Finding(rule, action, where, _excerpt(text, start, length))

        for where, text, prose in _strings(value, ""):
            hit = _INVISIBLE.search(text)
            if hit is not None:
                add("invisible_characters", where, text, hit.start(), 1)
            if not prose:
                continue
            folded = unicodedata.normalize("NFKC", text).casefold()
            if "hidden_instructions" not in found:
                self._instructions(folded, where, add)
            if "sensitive_files" not in found:
                for needle in _SENSITIVE:
                    at = folded.find(needle)
                    if at >= 0:
                        add("sensitive_files", where, folded, at, len(needle))
                        break
                else:
                    at = _dot_env(folded)
                    if at >= 0:
                        add("sensitive_files", where, folded, at, 4)
            if foreign_names and "cross_tool_reference" not in found:
                at, length = _foreign(text, foreign_names)
                if at >= 0:
                    add("cross_tool_reference", where, text, at, length)
        return tuple(found[rule] for rule in RULES if rule in found)

    @staticmethod
    def _instructions(folded: str, where: str, add: Any) -> None:
        for tag in _MARKUP:
            at = folded.find(tag)
            if at >= 0:
                add("hidden_instructions", where, folded, at, len(tag))
                return
        matches = list(_WORDS.finditer(folded.replace("\u2019", "'")))
        words = [m.group() for m in matches]
        for i in range(len(words)):
            length = _phrase_at(words, i)
            if length:
                start = matches[i].start()
                add(
                    "hidden_instructions",
                    where,
                    folded,
                    start,
                    matches[i + length - 1].end() - start,
                )
                return


def _dot_env(folded: str) -> int:
    """A `.env` file named on its own (not `.environment`)."""
    at = folded.find(".env")
    while at >= 0:
        after = folded[at + 4 : at + 5]
        if not after or not (after.isalnum() or after == "_"):
            return at
        at = folded.find(".env", at + 4)
    return -1


def _distinctive(name: str) -> bool:
    """A name unlikely to be an ordinary word: it has a separator or a digit."""
    return any(c in "_.-" or c.isdigit() for c in name)


def _foreign(text: str, names: frozenset[str]) -> tuple[int, int]:
    for m in _IDENT.finditer(text):
        token = m.group().rstrip(".-")
        if token in names and _distinctive(token):
            return m.start(), len(token)
    for m in _QUOTED.finditer(text):
        if m.group(1) in names:
            return m.start(1), len(m.group(1))
    return -1, 0
