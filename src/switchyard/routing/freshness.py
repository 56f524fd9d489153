"""How long one kind of a backend's list stays fresh, and whether it may be shared.

A 2026-07-28 backend says so on every list result (`ttlMs`, `cacheScope`); the schema's
`CacheableResult.ttlMs`:

    - If 0, The response SHOULD be considered immediately stale,
      The client MAY re-fetch every time the result is needed.
    - If positive, the client SHOULD consider the result fresh for this many
      milliseconds after receiving the response.

So a `ttlMs` of 0 (the official SDK's default) is listed again every time a client asks for
that list; a positive one once it has run out, when a client next asks. A legacy backend's
silence (no `ttlMs` at all) promises nothing either way: its listing is kept until it
announces `list_changed` (or a reload). What Switchyard tells its own clients is the
aggregate: the smallest remaining lifetime of the parts, `public` only when every part is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Freshness:
    ttl_ms: int
    """What the backend said (0: immediately stale, or nothing said: see `expires`)."""
    public: bool
    """The backend's `cacheScope` was `public` on every page."""
    expires: float
    """Monotonic time from which the listing is listed again: the fetch itself for `ttlMs`
    0; +inf (until list_changed) when no page carried a `ttlMs`."""

    @classmethod
    def of_pages(cls, pages: Iterable[tuple[int | None, bool]], fetched: float) -> Freshness:
        """One kind's freshness from every page's (`ttlMs`, public), `ttlMs` None where a page
        carried none: the shortest lifetime, and private if any page is (the spec wants one
        scope for all pages; trust the least). A page without `ttlMs` among pages with one
        does not lift the others' lifetime."""
        ttl = math.inf
        public = True
        seen = False
        for page_ttl, page_public in pages:
            seen = True
            if page_ttl is not None:
                ttl = min(ttl, page_ttl)
            public = public and page_public
        if ttl == math.inf:
            return cls(0, False, math.inf)
        ttl_ms = int(ttl)
        return cls(ttl_ms, public and seen, fetched + ttl_ms / 1000)

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
