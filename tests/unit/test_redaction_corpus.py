"""Precision and recall of every built-in detector over the labelled corpus, each at least
0.97, with all built-ins enabled at once (a value claimed by the wrong detector counts against
that detector's precision and the right one's recall)."""

from __future__ import annotations

from collections import Counter

import pytest

from switchyard.redaction.builtin import BUILTIN_NAMES, builtins
from switchyard.redaction.scanner import Scanner
from tests.unit.redaction_corpus import KINDS, PER_KIND, corpus

BAR = 0.97


def _score() -> tuple[Counter[str], Counter[str], Counter[str], list[str]]:
    scanner = Scanner(builtins())
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    misses: list[str] = []
    for sample in corpus():
        found = {(f.detector, sample.text[f.start : f.end]) for f in scanner.find(sample.text)}
        wanted = set(sample.labels)
        for detector, _value in found & wanted:
            tp[detector] += 1
        for detector, value in found - wanted:
            fp[detector] += 1
            misses.append(f"false {detector}: {value[:24]!r} in {sample.text[:60]!r}")
        for detector, value in wanted - found:
            fn[detector] += 1
            misses.append(f"missed {detector}: {value[:24]!r} in {sample.text[:60]!r}")
    return tp, fp, fn, misses


SCORES = _score()


def test_the_corpus_covers_every_builtin_detector() -> None:
    assert {name for name, *_ in KINDS} == set(BUILTIN_NAMES)
    assert len(corpus()) >= 500


@pytest.mark.parametrize("detector", BUILTIN_NAMES)
def test_precision_and_recall(detector: str) -> None:
    tp, fp, fn, misses = SCORES
    precision = tp[detector] / ((tp[detector] + fp[detector]) or 1)
    recall = tp[detector] / ((tp[detector] + fn[detector]) or 1)
    mine = [m for m in misses if f" {detector}:" in m]
    assert tp[detector] + fn[detector] == PER_KIND
    assert precision >= BAR, (precision, mine[:5])
    assert recall >= BAR, (recall, mine[:5])
