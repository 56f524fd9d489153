"""Tokens for tokenized values, kept per principal, bounded and expiring.

A token is an HMAC of the value under the gateway's redaction key and the principal, so the
same value gives the same token to one caller (a model can refer to it consistently) and a
different token to another; a token is resolved only from its own principal's table, so
another caller holding the text of it gets nothing back. Each principal holds at most
`per_principal` tokens (its own oldest go first); past `total`, the principal holding the most
loses its oldest, so one caller's volume never evicts a quieter caller's tokens first.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

TOKEN_PATTERN: Final = re.compile(r"«tok:([a-z0-9_]{1,40}):([0-9a-f]{20})»")
"""`«tok:email:7f3a9c0d1e2b4a5c8d9e»`: detector name and 80 bits of HMAC."""


@dataclass(slots=True)
class _Entry:
    value: str
    expires: float


class TokenVault:
    def __init__(
        self,
        key: bytes,
        ttl_s: float = 3600.0,
        per_principal: int = 10_000,
        total: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.per_principal = per_principal
        self.total = total
        self._clock = clock
        self._tables: dict[str, OrderedDict[str, _Entry]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def held_by(self, principal: str) -> int:
        table = self._tables.get(principal)
        return len(table) if table is not None else 0

    def tokenize(self, principal: str, detector: str, value: str) -> str:
        digest = hmac.new(
            self._key, b"\0".join((principal.encode(), value.encode())), hashlib.sha256
        ).hexdigest()[:20]
        token = f"«tok:{detector}:{digest}»"
        table = self._tables.setdefault(principal, OrderedDict())
        entry = table.get(token)
        now = self._clock()
        if entry is not None:
            entry.expires = now + self.ttl_s
            table.move_to_end(token)
            return token
        self._expire(table, now)
        if len(table) >= self.per_principal:
            table.popitem(last=False)
            self._count -= 1
        elif self._count >= self.total:
            self._evict_largest()
        table[token] = _Entry(value, now + self.ttl_s)
        self._count += 1
        return token

    def resolve(self, principal: str, text: str) -> tuple[str, int]:
        """`text` with `principal`'s own live tokens replaced by their values, and how many
        were; anyone else's token, or an expired one, stays as it is."""
        table = self._tables.get(principal)
        if not table or "«tok:" not in text:
            return text, 0
        now = self._clock()
        resolved = 0

        def swap(m: re.Match[str]) -> str:
            nonlocal resolved
            entry = table.get(m.group(0))
            if entry is None or entry.expires <= now:
                return m.group(0)
            resolved += 1
            return entry.value

        return TOKEN_PATTERN.sub(swap, text), resolved

    def _expire(self, table: OrderedDict[str, _Entry], now: float) -> None:
        # Entries are in expiry order (a refresh moves one to the end): stop at the first live.
        while table:
            token, entry = next(iter(table.items()))
            if entry.expires > now:
                return
            del table[token]
            self._count -= 1

    def _evict_largest(self) -> None:
        principal = max(self._tables, key=lambda p: len(self._tables[p]))
        table = self._tables[principal]
        table.popitem(last=False)
        self._count -= 1
        if not table:
            del self._tables[principal]
