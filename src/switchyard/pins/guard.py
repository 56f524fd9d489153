"""The gateway's pin check: what each backend lists goes through here before it enters the
catalog, so an item that is not trusted is neither listed nor routable (a call to it gets the
unknown-tool answer). Checked when listings change and when the store changes, never per call.

Fail closed: when the pin store cannot be read or written, only definitions already known to
be pinned stay visible; everything else waits until the store answers again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from switchyard.pins.events import PinEvent, record_pin_event
from switchyard.pins.fingerprint import Definition, PinKey, UnpinnableItem, definition
from switchyard.pins.poisoning import Checker, Finding, strongest
from switchyard.pins.settings import PinningSettings
from switchyard.pins.store import Pin, PinStore
from switchyard.routing import catalog, names
from switchyard.storage.database import Database, StorageError, open_database
from switchyard.storage.settings import StorageSettings
from switchyard.wire import frame
from switchyard.wire.frame import Raw

log = logging.getLogger("switchyard.pins")

PINNED_KINDS = (catalog.TOOLS, catalog.PROMPTS, catalog.TEMPLATES)


@dataclass(frozen=True, slots=True)
class _Seen:
    definition: Definition
    findings: tuple[Finding, ...]


class PinGuard:
    def __init__(self, settings: PinningSettings, storage: StorageSettings, separator: str):
        self.settings = settings
        self.storage = storage
        self.separator = separator
        self.checker = Checker(settings.poisoning)
        self._db: Database | None = None
        self._store: PinStore | None = None
        self._pins: dict[PinKey, Pin] = {}
        """The store as last read: what decides when the store cannot be reached."""
        self._version: int | None = None
        self.failure: str | None = None
        """Why the store is unusable right now; None while it answers."""
        self._seen: dict[tuple[str, bytes], _Seen] = {}
        self._warned: set[tuple[PinKey, str]] = set()
        self._foreign: dict[str, frozenset[str]] = {}
        self._fresh = False
        """Whether this check already read the store (it is read once per check, if at all)."""
        self.hidden: dict[str, tuple[str, ...]] = {}
        """Per backend, the keys of what it lists that is hidden now."""

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
            self._store = None

    async def _open(self) -> PinStore:
        if self._store is None:
            db = await open_database(self.storage)
            try:
                store = PinStore(db)
                await store.migrate()
            except BaseException:
                await db.close()
                raise
            self._db, self._store = db, store
        return self._store

    async def changed(self) -> bool:
        """Whether the store moved since the last check (an approval, another process's pin),
        or is failing: either way the catalog must be checked again."""
        if not self.settings.needs_store or (self._store is None and self.failure is None):
            return False  # never needed yet: nothing in the store can concern this process
        try:
            store = await self._open()
            version = await store.version()
        except StorageError as exc:
            self._fail(exc)
            return True
        recovered = self.failure is not None
        return recovered or version != self._version

    def _fail(self, exc: StorageError) -> None:
        if self.failure is None:
            log.error("pin store unavailable; only pinned definitions stay visible: %s", exc)
        self.failure = str(exc)

    async def _snapshot(self) -> None:
        store = await self._open()
        version = await store.version()
        if version != self._version or self.failure is not None:
            self._pins = await store.load()
            self._version = version
        if self.failure is not None:
            log.warning("pin store available again")
            self.failure = None

    async def visible(self, listings: Sequence[catalog.Listing]) -> list[catalog.Listing]:
        """Each listing with only what may be shown."""
        self._fresh = False
        foreign = self._foreign_names(listings)
        # Another backend's names changed: this one's cross-tool findings must be redone.
        rescan = {b for b, names_ in foreign.items() if self._foreign.get(b) != names_}
        self._foreign = foreign
        seen: dict[tuple[str, bytes], _Seen] = {}
        out: list[catalog.Listing] = []
        for listing in listings:
            items: dict[str, tuple[dict[str, Raw], ...]] = dict(listing.items)
            hidden: list[str] = []
            for kind in PINNED_KINDS:
                kept: list[dict[str, Raw]] = []
                for item in listing.items.get(kind, ()):
                    check = self._check(
                        listing.backend,
                        kind,
                        item,
                        foreign[listing.backend],
                        seen,
                        listing.backend in rescan,
                    )
                    if check is not None and await self._allows(check):
                        kept.append(item)
                    elif check is not None:
                        hidden.append(str(check.definition.key))
                items[kind] = tuple(kept)
            self.hidden[listing.backend] = tuple(hidden)
            out.append(catalog.Listing(listing.backend, listing.prefix, items))
        self._seen = seen
        live = {listing.backend for listing in listings}
        for backend in [b for b in self.hidden if b not in live]:
            del self.hidden[backend]
        return out

    async def caller_view(self, listing: catalog.Listing) -> catalog.Listing:
        """One caller's own listing of a backend (per-caller lists), with only what may be
        shown: each item is judged like a shared one (a new one by the backend's mode: `tofu`
        pins it on first sight, `approve` hides it until approved), but the gateway-wide
        state (what is hidden, the cross-tool scan) is left as the shared listings made it."""
        self._fresh = False
        seen: dict[tuple[str, bytes], _Seen] = {}
        foreign = self._foreign.get(listing.backend, frozenset())
        items: dict[str, tuple[dict[str, Raw], ...]] = dict(listing.items)
        for kind in PINNED_KINDS:
            if kind not in listing.items:
                continue  # a kind this caller was not listed stays as the shared listing has it
            kept: list[dict[str, Raw]] = []
            for item in listing.items[kind]:
                check = self._check(listing.backend, kind, item, foreign, seen, False)
                if check is not None and await self._allows(check):
                    kept.append(item)
            items[kind] = tuple(kept)
        return catalog.Listing(listing.backend, listing.prefix, items, listing.fresh)

    def _check(
        self,
        backend: str,
        kind: str,
        item: dict[str, Raw],
        foreign: frozenset[str],
        seen: dict[tuple[str, bytes], _Seen],
        rescan: bool,
    ) -> _Seen | None:
        raw = frame.encode_object(item)
        cache_key = (backend, raw)
        found = seen.get(cache_key) or (None if rescan else self._seen.get(cache_key))
        if found is None:
            try:
                defn = definition(backend, kind, item)
            except UnpinnableItem as exc:
                log.warning(
                    "backend %r: a %s left out: no canonical form (%s)", backend, kind[:-1], exc
                )
                return None
            found = _Seen(defn, self.checker.scan(defn.value, foreign))
        seen[cache_key] = found
        return found

    def _foreign_names(self, listings: Sequence[catalog.Listing]) -> dict[str, frozenset[str]]:
        """Per backend, the tool names (backend-side and public) of every other backend."""
        owners: dict[str, set[str]] = {}
        for listing in listings:
            for item in listing.items.get(catalog.TOOLS, ()):
                raw = item.get("name")
                try:
                    name = frame.decode_str(raw) if raw is not None else None
                except (frame.DecodeError, frame.ValidationError):
                    name = None
                if name is None:
                    continue
                owners.setdefault(name, set()).add(listing.backend)
                public = names.public_name(listing.prefix, self.separator, name)
                owners.setdefault(public, set()).add(listing.backend)
        result: dict[str, frozenset[str]] = {}
        for listing in listings:
            me = listing.backend
            result[me] = frozenset(n for n, owned in owners.items() if owned - {me})
        return result

    async def _allows(self, seen: _Seen) -> bool:
        defn, findings = seen.definition, seen.findings
        action = strongest(findings)
        blocked = action == "block"
        quarantined = action == "quarantine"
        key = defn.key
        if action == "warn" and (key, defn.fingerprint) not in self._warned:
            self._warned.add((key, defn.fingerprint))
            record_pin_event(
                PinEvent(
                    "warned",
                    str(key),
                    defn.fingerprint,
                    findings=tuple(f.as_json() for f in findings),
                )
            )
        mode = self.settings.mode_for(key.backend)
        if mode == "off" and not quarantined and not blocked:
            return True
        if not self._fresh:
            self._fresh = True
            try:
                await self._snapshot()
            except StorageError as exc:
                self._fail(exc)
        pin = self._pins.get(key)
        if pin is not None and pin.settled_for(defn.fingerprint, quarantined, blocked):
            return not blocked and pin.trusts(defn.fingerprint, quarantined)
        if self.failure is not None or self._store is None:
            return False
        try:
            pin, events = await self._store.observe(
                defn,
                findings,
                trust_new=mode == "tofu",
                quarantined=quarantined,
                blocked=blocked,
            )
        except StorageError as exc:
            self._fail(exc)
            cached = self._pins.get(key)
            return (
                cached is not None and not blocked and cached.trusts(defn.fingerprint, quarantined)
            )
        self._pins[key] = pin
        for event in events:
            record_pin_event(event)
        return not blocked and pin.trusts(defn.fingerprint, quarantined)

    def session_view(self, listing: catalog.Listing, shared: catalog.Listing | None) -> str | None:
        """Why a backend's session for one client may not serve it, or None. The catalog, and
        so the pin check, sees what the backend lists on the gateway's own connection
        (`shared`); a session that lists another definition under one of those names would
        run, on that client's behalf, something nobody reviewed. Names only the session lists
        are not in the catalog: no call reaches them."""
        if self.settings.mode_for(listing.backend) == "off":
            return None
        expected: dict[PinKey, str] = {}
        for kind in PINNED_KINDS:
            for item in shared.items.get(kind, ()) if shared is not None else ():
                try:
                    known = definition(listing.backend, kind, item)
                except UnpinnableItem:
                    continue
                expected[known.key] = known.fingerprint
        for kind in PINNED_KINDS:
            for item in listing.items.get(kind, ()):
                try:
                    defn = definition(listing.backend, kind, item)
                except UnpinnableItem:
                    continue  # left out of the catalog as well
                previous = expected.get(defn.key)
                if previous is None or previous == defn.fingerprint:
                    continue
                record_pin_event(
                    PinEvent(
                        "session_mismatch",
                        str(defn.key),
                        defn.fingerprint,
                        previous=previous,
                        reason="this client's session lists another definition",
                    )
                )
                return (
                    f"its session for this client lists another definition of "
                    f"{kind[:-1]} {defn.key.name!r} than every client was shown"
                )
        return None

    def status(self) -> dict[str, object]:
        return {
            "store": "ok" if self.failure is None else "unavailable",
            "hidden": {b: len(keys) for b, keys in self.hidden.items() if keys},
        }
