"""Runs a set of detectors over one string and settles overlaps: each character belongs to at
most one finding, the one of the detector with precedence."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Final

from switchyard.redaction.detector import Detector, Finding
from switchyard.redaction.prefilter import Prefilter

# Joins the strings of one message for a single pass: no built-in pattern matches a NUL or
# crosses a line break at its edges, so no finding spans two strings.
SEPARATOR: Final = "\n\x00\n"
_MAX_KEYS: Final = 4096


class Scanner:
    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)
        self._folded = any(d.folded_gates for d in self.detectors)
        self._keyed = tuple(
            (rank, d) for rank, d in enumerate(self.detectors) if d.key_context is not None
        )
        self._key_memo: dict[str, tuple[tuple[int, Detector], ...]] = {}
        # Built-ins run once over all of a message's strings; operators' patterns may use
        # anchors or match line breaks, so they run on each string alone.
        self._joined = tuple((r, d) for r, d in enumerate(self.detectors) if d.builtin)
        self._alone = tuple((r, d) for r, d in enumerate(self.detectors) if not d.builtin)
        self.builtin_only = not self._alone
        self._prefilter = Prefilter([d.pattern for _r, d in self._joined])  # type: ignore[misc]

    def find_many(self, texts: Sequence[str], keys: Sequence[str | None]) -> list[list[Finding]]:
        """Findings per string, as `find` would give for each, scanning them together."""
        out: list[list[Finding]] = [[] for _ in texts]
        whole = [False] * len(texts)
        for i, (text, key) in enumerate(zip(texts, keys, strict=True)):
            if key is not None and self._keyed:
                claimed = self._claim(text, key)
                if claimed is not None:
                    out[i] = [claimed]
                    whole[i] = True
        joined = SEPARATOR.join(texts)
        hits = self._prefilter.candidates(joined) if self._joined else set()
        everywhere: list[tuple[int, Detector]] = []
        for rank, d in (self._joined[i] for i in sorted(hits)):
            if not d.gates or not any(g in joined for g in d.gates):
                everywhere.append((rank, d))  # without a gate in the text, `_scan` skips it
                continue
            # Each match holds a gate and lies within one string: the strings without one
            # need not be scanned for this detector at all.
            if len(d.gates) == 1:
                gate = d.gates[0]
                holding = [i for i, text in enumerate(texts) if gate in text]
            else:
                holding = [i for i, text in enumerate(texts) if any(g in text for g in d.gates)]
            if len(holding) == len(texts):
                everywhere.append((rank, d))
            elif holding:
                self._gather(out, whole, texts, holding, [(rank, d)])
        if everywhere:
            self._gather(out, whole, texts, range(len(texts)), everywhere, joined)
        for i, text in enumerate(texts):
            if not whole[i] and self._alone:
                out[i].extend(self._scan(text, self._alone))
            if len(out[i]) > 1:
                out[i] = _settle(out[i])
        return out

    def _gather(
        self,
        out: list[list[Finding]],
        whole: list[bool],
        texts: Sequence[str],
        indices: Sequence[int],
        detectors: Sequence[tuple[int, Detector]],
        joined: str | None = None,
    ) -> None:
        """Scans the strings at `indices` joined, and files each finding under its string."""
        if joined is None:
            joined = SEPARATOR.join([texts[i] for i in indices])
        starts: list[int] = []
        pos = 0
        for i in indices:
            starts.append(pos)
            pos += len(texts[i]) + len(SEPARATOR)
        for f in self._scan(joined, detectors):
            k = bisect_right(starts, f.start) - 1
            i = indices[k]
            if whole[i]:
                continue
            # Only trailing whitespace can run into the separator (a PEM body's): clip it.
            end = min(f.end, starts[k] + len(texts[i]))
            out[i].append(Finding(f.start - starts[k], end - starts[k], f.detector, f.rank))

    def _claim(self, text: str, key: str) -> Finding | None:
        keyed = self._key_memo.get(key)
        if keyed is None:
            keyed = tuple(
                (r, d) for r, d in self._keyed if d.key_context and d.key_context.search(key)
            )
            if len(self._key_memo) >= _MAX_KEYS:
                self._key_memo.clear()
            self._key_memo[key] = keyed
        for rank, d in keyed:
            if self._keyed_value(d, text, key):
                return Finding(0, len(text), d.name, rank)
        return None

    def _scan(self, text: str, detectors: Sequence[tuple[int, Detector]]) -> list[Finding]:
        found: list[Finding] = []
        folded = text.lower() if self._folded else ""
        for rank, d in detectors:
            # A result often carries each value twice (structuredContent and its text
            # rendering): each distinct candidate is validated once per pass.
            checked: dict[str, str | None] = {}
            if d.gates and not any(g in text for g in d.gates):
                continue
            if d.folded_gates and not any(g in folded for g in d.folded_gates):
                continue
            for m in d.pattern.finditer(text):
                value = m.group(d.group)
                if not value:
                    continue
                start = m.span(d.group)[0]
                if d.validate is not None:
                    if value in checked:
                        accepted = checked[value]
                    else:
                        accepted = checked[value] = d.validate(value)
                    if not accepted:
                        continue
                    value = accepted
                found.append(Finding(start, start + len(value), d.name, rank))
        return found

    def find(self, text: str, key: str | None = None) -> list[Finding]:
        """Findings in `text`, ordered by position and never overlapping. `key` is the JSON
        key the string sits under, when it sits in an object."""
        return self.find_many([text], [key])[0]

    @staticmethod
    def _keyed_value(d: Detector, text: str, key: str) -> bool:
        assert d.key_context is not None and d.bare is not None
        if d.bare.fullmatch(text) is None:
            return False
        return d.validate is None or d.validate(text) == text


def _settle(found: list[Finding]) -> list[Finding]:
    """Keep findings by precedence (then position); one overlapping a kept one goes. The
    result is ordered by position."""
    found.sort(key=lambda f: (f.rank, f.start))
    starts: list[int] = []
    kept: list[Finding] = []
    for f in found:
        i = bisect_left(starts, f.start)
        if i > 0 and kept[i - 1].end > f.start:
            continue
        if i < len(kept) and kept[i].start < f.end:
            continue
        starts.insert(i, f.start)
        kept.insert(i, f)
    return kept
