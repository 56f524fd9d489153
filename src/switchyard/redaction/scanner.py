"""Runs a set of detectors over one string and settles overlaps: each character belongs to at
most one finding, the one of the detector with precedence."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from switchyard.redaction.detector import Detector, Finding


class Scanner:
    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)
        self._folded = any(d.folded_gates for d in self.detectors)
        self._keyed = tuple(
            (rank, d) for rank, d in enumerate(self.detectors) if d.key_context is not None
        )

    def find(self, text: str, key: str | None = None) -> list[Finding]:
        """Findings in `text`, ordered by position and never overlapping. `key` is the JSON
        key the string sits under, when it sits in an object."""
        found: list[Finding] = []
        if key is not None:
            for rank, d in self._keyed:
                if self._keyed_value(d, text, key):
                    return [Finding(0, len(text), d.name, rank)]
        folded = text.lower() if self._folded else ""
        for rank, d in enumerate(self.detectors):
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
                    accepted = d.validate(value)
                    if not accepted:
                        continue
                    value = accepted
                found.append(Finding(start, start + len(value), d.name, rank))
        return _settle(found) if len(found) > 1 else found

    @staticmethod
    def _keyed_value(d: Detector, text: str, key: str) -> bool:
        assert d.key_context is not None and d.bare is not None
        if d.key_context.search(key) is None or d.bare.fullmatch(text) is None:
            return False
        return d.validate is None or d.validate(text) == text


def _settle(found: list[Finding]) -> list[Finding]:
    """Keep findings by precedence (then position); a later one overlapping a kept one goes."""
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
