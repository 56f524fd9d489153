"""Per-caller lists: what a `token_exchange` backend shows each caller.

Such a backend acts on each caller's identity and may show each one something else (their own
resources, the tools they are entitled to). What it lists to Switchyard's own identity (the
shared listing, fetched as for every backend) says, per kind, whether that is so: a list whose
answer is not `cacheScope: "public"` (a legacy backend's answers carry no scope at all) is
listed again for each caller, with the caller's exchanged token, and that caller's lists,
routing, virtual servers, access filtering and pin checks all use the result. A public answer
is shared, as for any other backend.

Each backend keeps its callers' listings in its own LRU of qualified principals (bounded, idle
ones forgotten), fresh for the `ttlMs` of the caller's own answer (0: listed again each time
that caller lists; none, from a legacy backend: until `list_changed`). Nothing one principal
lists is ever shown to another; one principal's failure to list keeps only that principal's
items out. A caller without an exchangeable token (an API key, or authentication off) is
listed none of such a backend's per-caller kinds, and its calls are refused as before.

A gateway without a `token_exchange` backend has no `CallerLists` at all: its request path
does not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from switchyard.call import RequestContext
from switchyard.routing import catalog
from switchyard.routing.catalog import Catalog, Listing
from switchyard.routing.freshness import Freshness
from switchyard.routing.router import Router, SoleServer
from switchyard.routing.views import ViewSpec, build_view
from switchyard.upstream.backend import LIST_METHODS, Backend, walk_pages
from switchyard.upstream.outbound import Caller, Outbound
from switchyard.wire.frame import Raw, Reply

log = logging.getLogger("switchyard.caller_lists")

DEFAULT_MAX_PRINCIPALS: Final = 1000
DEFAULT_IDLE_S: Final = 900.0
# A principal whose listing failed is not asked again for this long (it sees none meanwhile).
FAILURE_BACKOFF_S: Final = 1.0

CheckListing = Callable[[Listing], Awaitable[Listing]]
"""Judges one caller's listing against the pins (tool pinning on)."""


def per_caller(backend: Backend) -> bool:
    """Does `backend` act on each caller's identity (`auth.type: token_exchange`)?"""
    spec = backend.settings.credentials
    return spec is not None and spec.kind == "token_exchange"


def private_kinds(listing: Listing | None) -> frozenset[str]:
    """The kinds whose shared answer did not say `cacheScope: public` on every page."""
    if listing is None:
        return frozenset()
    return frozenset(kind for kind, fresh in listing.fresh.items() if not fresh.public)


@dataclass(slots=True)
class _Held:
    """One principal's listing of one backend's per-caller kinds."""

    listing: Listing | None = None
    used: float = field(default_factory=time.monotonic)
    pending: asyncio.Task[Listing | None] | None = None
    retry_after: float = 0.0


class BackendLists:
    """One backend's per-caller listings: an LRU of principals, bounded and idle-expired."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        spec = backend.settings.credentials
        self.max_principals = spec.lists_max_principals if spec else DEFAULT_MAX_PRINCIPALS
        self.idle_s = spec.lists_idle_s if spec else DEFAULT_IDLE_S
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self.generation = 0
        """Bumped by every invalidation: a listing fetched before it is not kept."""
        self._tasks: set[asyncio.Task[Listing | None]] = set()

    @property
    def principals(self) -> int:
        return len(self._held)

    def held(self, principal: str) -> Listing | None:
        """The principal's listing in hand, whatever its age (routing never waits for a
        re-listing: only a list does)."""
        held = self._held.get(principal)
        if held is None:
            return None
        held.used = time.monotonic()
        self._held.move_to_end(principal)
        return held.listing

    async def listing(self, caller: Caller, relist: str | None) -> Listing | None:
        """The caller's listing of this backend's per-caller kinds: the one in hand, unless
        there is none or `relist` (the kind being listed) has run out. None: it could not be
        listed (this principal alone sees none of them)."""
        principal = caller.principal
        assert principal is not None
        now = time.monotonic()
        self._expire(now)
        held = self._held.get(principal)
        if held is None:
            held = self._held[principal] = _Held()
            while len(self._held) > self.max_principals:
                self._held.popitem(last=False)
        else:
            self._held.move_to_end(principal)
        held.used = now
        if not self._due(held, relist, now):
            return held.listing
        if held.pending is None or held.pending.done():
            # Only the kind whose lifetime ran out, unless nothing is in hand yet.
            only = relist if held.listing is not None else None
            held.pending = asyncio.create_task(self._fetch(caller, held, self.generation, only))
            self._tasks.add(held.pending)
            held.pending.add_done_callback(self._tasks.discard)
        with contextlib.suppress(TimeoutError):
            # Shielded: a caller giving up does not abort the listing for the others waiting.
            return await asyncio.wait_for(
                asyncio.shield(held.pending), self.backend.settings.list_timeout_s
            )
        return held.listing

    def _due(self, held: _Held, relist: str | None, now: float) -> bool:
        if now < held.retry_after:
            return False
        if held.listing is None:
            return True
        if relist is None:
            return False
        fresh = held.listing.fresh.get(relist)
        return fresh is not None and fresh.expired(now)

    def _expire(self, now: float) -> None:
        while self._held:
            principal, held = next(iter(self._held.items()))
            if now - held.used < self.idle_s:
                return
            del self._held[principal]

    async def _fetch(
        self, caller: Caller, held: _Held, generation: int, only: str | None
    ) -> Listing | None:
        backend = self.backend
        kinds = private_kinds(backend.listing)
        previous = held.listing
        items: dict[str, tuple[dict[str, Raw], ...]] = {}
        fresh: dict[str, Freshness] = {}
        try:
            for kind in catalog.KINDS:
                if kind not in kinds:
                    continue
                if (
                    only is not None
                    and kind != only
                    and previous is not None
                    and kind in previous.items
                ):
                    items[kind] = previous.items[kind]
                    if kind in previous.fresh:
                        fresh[kind] = previous.fresh[kind]
                    continue
                pages: list[tuple[int | None, bool]] = []
                fetched = time.monotonic()
                items[kind] = await self._walk(caller, kind, pages)
                fresh[kind] = Freshness.of_pages(pages, fetched)
        except Exception as exc:
            log.warning(
                "backend %r: listing for a caller failed (that caller sees none of its "
                "per-caller items for now): %s",
                backend.name,
                exc,
            )
            held.retry_after = time.monotonic() + FAILURE_BACKOFF_S
            return held.listing
        listing = Listing(backend.name, backend.settings.prefix, items, fresh)
        if generation == self.generation:
            held.listing = listing
        return listing

    async def _walk(
        self, caller: Caller, kind: str, pages: list[tuple[int | None, bool]]
    ) -> tuple[dict[str, Raw], ...]:
        backend = self.backend
        method = LIST_METHODS[kind][0]

        async def page(cursor: str | None) -> Reply:
            conn = backend.connection
            if conn is None:
                raise RuntimeError("backend not connected")
            params = Backend.list_params(conn, cursor)
            return await backend.request(Outbound(method, params, caller=caller, idempotent=True))

        return await walk_pages(backend.name, kind, method, page, pages)

    def invalidate(self) -> set[str]:
        """Forget every principal's listing (the backend's lists changed); the principals
        that had one."""
        self.generation += 1
        principals = set(self._held)
        self._held.clear()
        return principals

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


@dataclass(slots=True)
class _Built:
    """One caller's catalog (and its views), built from the listings it was made of."""

    generation: int
    sources: tuple[Listing | None, ...]
    """The caller's own listings it was built from (held: compared by identity)."""
    catalog: Catalog
    router: Router | None = None
    views: dict[str, Catalog] = field(default_factory=dict)
    used: float = field(default_factory=time.monotonic)

    def made_of(self, generation: int, sources: tuple[Listing | None, ...]) -> bool:
        return (
            self.generation == generation
            and len(self.sources) == len(sources)
            and all(a is b for a, b in zip(self.sources, sources, strict=True))
        )


class CallerLists:
    """Every caller's catalog where a `token_exchange` backend lists per caller."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        separator: str,
        views: Sequence[ViewSpec],
        shared: Callable[[], list[Listing]],
        shared_router: Router,
        sole_server: SoleServer,
        check: CheckListing | None = None,
    ) -> None:
        self._backends = backends
        self._separator = separator
        self._views = {spec.name: spec for spec in views}
        self._shared = shared
        self._shared_router = shared_router
        self._sole_server = sole_server
        self._check = check
        self._lists: dict[str, BackendLists] = {
            name: BackendLists(b) for name, b in backends.items() if per_caller(b)
        }
        self._built: OrderedDict[str, _Built] = OrderedDict()
        self._generation = 0
        """Bumped whenever the shared catalog is rebuilt."""
        self._tokenless: _Built | None = None
        cap = max((b.max_principals for b in self._lists.values()), default=1)
        self._max_built = cap
        self._idle_s = max((b.idle_s for b in self._lists.values()), default=DEFAULT_IDLE_S)

    @staticmethod
    def needed(backends: Iterable[Backend]) -> bool:
        return any(per_caller(b) for b in backends)

    def lists_of(self, backend: str) -> BackendLists | None:
        return self._lists.get(backend)

    def per_caller_kind(self, backend: Backend, kind: str) -> bool:
        """Is `kind` of `backend` listed per caller (so the shared listing of it serves
        only the admin view, and is not re-listed on expiry for clients)?"""
        return backend.name in self._lists and kind in private_kinds(backend.listing)

    def shared_changed(self) -> None:
        self._generation += 1
        self._tokenless = None

    def invalidate(self, backend: str) -> set[str]:
        """`backend`'s lists changed: every principal lists it again; who had listed it."""
        lists = self._lists.get(backend)
        if lists is None:
            return set()
        return lists.invalidate()

    def close(self) -> None:
        for lists in self._lists.values():
            lists.cancel()

    async def router(self, ctx: RequestContext) -> Router:
        """The router over this caller's catalog (routing never re-lists what is in hand). A
        caller without an exchangeable token is routed as before, by the shared catalog: its
        call reaches the backend's credential, which refuses it (-31002)."""
        identity = ctx.identity
        if identity is None or not identity.token:
            return self._shared_router
        built = await self._built_for(ctx, None)
        router = built.router
        if router is None:
            router = built.router = Router(lambda view: self._view(built, view), self._sole_server)
        return router

    async def catalog(self, ctx: RequestContext, kind: str, relist: bool) -> Catalog:
        """The catalog (or virtual server's view) a caller's `kind` list is served from; its
        per-caller part listed again first where its lifetime ran out, when `relist`."""
        built = await self._built_for(ctx, kind if relist else None)
        return self._view(built, ctx.view)

    def _view(self, built: _Built, view: str | None) -> Catalog:
        if view is None:
            return built.catalog
        found = built.views.get(view)
        if found is None:
            spec = self._views.get(view)
            found = build_view(built.catalog, spec) if spec is not None else Catalog()
            built.views[view] = found
        return found

    async def _built_for(self, ctx: RequestContext, relist: str | None) -> _Built:
        identity = ctx.identity
        if identity is None or not identity.token:
            return self._tokenless_built()
        caller = Caller(identity.key, identity.token)
        shared = self._shared()
        own: dict[str, Listing | None] = {}
        for listing in shared:
            lists = self._lists.get(listing.backend)
            if lists is None or not private_kinds(self._backends[listing.backend].listing):
                continue
            mine = lists.held(caller.principal or "") if relist is None else None
            if mine is None:
                mine = await lists.listing(caller, relist)
            own[listing.backend] = mine
        sources = tuple(own.values())
        principal = identity.key
        built = self._built.get(principal)
        now = time.monotonic()
        if built is not None and built.made_of(self._generation, sources):
            built.used = now
            self._built.move_to_end(principal)
            return built
        generation = self._generation
        cat = await self._compose(shared, own)
        built = _Built(generation, sources, cat, used=now)
        self._built[principal] = built
        self._built.move_to_end(principal)
        while len(self._built) > self._max_built or (
            self._built and now - next(iter(self._built.values())).used >= self._idle_s
        ):
            self._built.popitem(last=False)
        return built

    def _tokenless_built(self) -> _Built:
        built = self._tokenless
        if built is None:
            listings = [self._without_private(listing) for listing in self._shared()]
            cat = catalog.build(listings, self._separator)
            built = self._tokenless = _Built(self._generation, (), cat)
        return built

    def _without_private(self, listing: Listing) -> Listing:
        if listing.backend not in self._lists:
            return listing
        kinds = private_kinds(self._backends[listing.backend].listing)
        if not kinds:
            return listing
        items = {k: (() if k in kinds else v) for k, v in listing.items.items()}
        return Listing(listing.backend, listing.prefix, items, listing.fresh)

    async def _compose(self, shared: list[Listing], own: dict[str, Listing | None]) -> Catalog:
        listings: list[Listing] = []
        for listing in shared:
            if listing.backend not in own:
                listings.append(listing)
                continue
            mine = own[listing.backend]
            base = self._without_private(listing)
            if mine is None:
                listings.append(base)
                continue
            if self._check is not None:
                mine = await self._check(mine)
            kinds = private_kinds(self._backends[listing.backend].listing)
            items = dict(base.items)
            items.update({k: v for k, v in mine.items.items() if k in kinds})
            listings.append(Listing(listing.backend, listing.prefix, items, listing.fresh))
        return catalog.build(listings, self._separator)

    def status(self) -> dict[str, int]:
        """Principals held per backend (for readiness)."""
        return {name: lists.principals for name, lists in self._lists.items()}
