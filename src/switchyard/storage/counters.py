"""Counts of what each owner holds (in-flight requests, sessions, subscriptions): the one shape
every per-caller share of a gateway table is checked against.

In memory today, each table its own. A store shared by several gateway processes implements
the same few operations, each atomic on its side (`take` is a check-and-increment), so a share
stays exact however many processes count against it.
"""

from __future__ import annotations

from typing import Protocol


class Counters(Protocol):
    def get(self, key: str) -> int:
        """What `key` holds now (0 when nothing)."""
        ...

    def take(self, key: str, limit: int) -> bool:
        """Add one to `key` unless it already holds `limit`: one atomic check-and-add."""
        ...

    def add(self, key: str, amount: int = 1) -> int:
        """Add `amount` unconditionally; the new count."""
        ...

    def release(self, key: str, amount: int = 1) -> int:
        """Give back `amount` (never below zero; a key at zero is forgotten); what is left."""
        ...

    def owners(self) -> int:
        """How many keys hold anything."""
        ...

    def largest(self) -> tuple[str, int] | None:
        """The key holding the most, with its count."""
        ...


class MemoryCounters:
    """Counters of one process."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def get(self, key: str) -> int:
        return self._counts.get(key, 0)

    def take(self, key: str, limit: int) -> bool:
        count = self._counts.get(key, 0)
        if count >= limit:
            return False
        self._counts[key] = count + 1
        return True

    def add(self, key: str, amount: int = 1) -> int:
        count = self._counts.get(key, 0) + amount
        self._counts[key] = count
        return count

    def release(self, key: str, amount: int = 1) -> int:
        left = self._counts.get(key, 0) - amount
        if left > 0:
            self._counts[key] = left
            return left
        self._counts.pop(key, None)
        return 0

    def owners(self) -> int:
        return len(self._counts)

    def largest(self) -> tuple[str, int] | None:
        return max(self._counts.items(), key=lambda item: item[1], default=None)

    def __contains__(self, key: str) -> bool:
        return key in self._counts
