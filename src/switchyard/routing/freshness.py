"""How long one kind of a backend's list stays fresh, and whether it may be shared.

A 2026-07-28 backend says so on every list result (`ttlMs`, `cacheScope`). A `ttlMs` of 0
(the official SDK's default) or a legacy backend's silence makes no promise of a lifetime:
such a listing is kept until the backend announces `list_changed` (or a reload), as before;
a positive `ttlMs` makes Switchyard list that kind again once it has run out, when a client
next asks for it. What Switchyard tells its own clients is the aggregate: the smallest
remaining lifetime of the parts, `public` only when every part is public.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Freshness:
    ttl_ms: int
    """What the backend said (0: no lifetime promised)."""
    public: bool
    """The backend's `cacheScope` was `public` on every page."""
    expires: float
    """Monotonic time after which the listing is listed again; +inf: until list_changed."""

    @classmethod
    def of_pages(cls, pages: Iterable[tuple[int, bool]], fetched: float) -> Freshness:
        """One kind's freshness from every page's (`ttlMs`, public): the shortest lifetime,
        and private if any page is (the spec wants one scope for all pages; trust the least)."""
        ttl = math.inf
        public = True
        seen = False
        for page_ttl, page_public in pages:
            seen = True
            ttl = min(ttl, page_ttl)
            public = public and page_public
        ttl_ms = int(ttl) if seen and ttl != math.inf else 0
        return cls(ttl_ms, public and seen, fetched + ttl_ms / 1000 if ttl_ms > 0 else math.inf)

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def remaining_ms(self, now: float) -> int:
        if self.ttl_ms <= 0 or self.expires == math.inf:
            return 0
        return max(0, int((self.expires - now) * 1000))

    def invalidated(self) -> Freshness:
        return replace(self, expires=-math.inf)


def aggregate(parts: Iterable[Freshness | None], now: float) -> tuple[int, bool]:
    """The (`ttlMs`, public) of a list made of `parts` (None: a part that promised nothing):
    the minimum remaining lifetime, public only if every part is. No part: (0, False)."""
    ttl: int | None = None
    public = True
    for part in parts:
        if part is None:
            return 0, False
        remaining = part.remaining_ms(now)
        ttl = remaining if ttl is None else min(ttl, remaining)
        public = public and part.public
    if ttl is None:
        return 0, False
    return ttl, public and ttl > 0
