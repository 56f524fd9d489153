"""The garbage collector's settings for a serving process (`serve`, `stdio`).

CPython collects its youngest generation whenever the container objects allocated since the
last collection, less those freed, pass a threshold: 700 by default. A request in flight holds
a few hundred such objects (its coroutines, futures, the call and its dicts), all freed by
reference counting when it ends: a call leaves no cyclic garbage behind. Yet at 32 requests in
flight their ebb and flow alone crossed 700 about once every 35 calls, each collection taking
0.3-0.6 ms, and every few thousand calls set off a full collection of the whole heap
(50-65 ms, every request in flight waiting). Measured figures: `docs/architecture.md`.

A threshold above what requests in flight hold leaves collections to what they are for:
garbage that builds up. Cyclic garbage (an exception and its traceback) waits for at most
that many more allocations before it is collected.
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 10_000
"""Allocations less frees of container objects that start a collection of the youngest
generation (CPython's default: 700). The older generations keep their defaults."""


def tune() -> None:
    """Apply `YOUNG_THRESHOLD`; the older generations' thresholds stay as they are."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
