"""The gateway's own memory, sampled off the request path, for shedding load before an OOM."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Final

log = logging.getLogger("switchyard.memory")

SAMPLE_S: Final = 0.25
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class MemoryGuard:
    """`overloaded` turns true past `shed_fraction` of `budget_bytes`; checked per request for
    free, since the sampling runs on its own timer."""

    def __init__(self, budget_bytes: int | None, shed_fraction: float = 0.9) -> None:
        self.limit = int(budget_bytes * shed_fraction) if budget_bytes else None
        self.overloaded = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.limit is not None:
            self._task = asyncio.create_task(self._sample(), name="memory-guard")

    async def _sample(self) -> None:
        assert self.limit is not None
        while True:
            over = rss_bytes() > self.limit
            if over != self.overloaded:
                log.warning("memory %s the shedding threshold", "over" if over else "back under")
                self.overloaded = over
            await asyncio.sleep(SAMPLE_S)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
