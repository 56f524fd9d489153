"""The pin store: one row per (backend, kind, name) in the shared database, holding the pinned
definition (what is trusted) and at most one candidate (what the backend shows now, when that
differs and awaits a decision).

Every write is one transaction that first locks the store's version row, so gateway processes
sharing PostgreSQL take turns: two that see a new item at once agree on one pin, and the loser
sees the winner's. Each write bumps that version; gateways poll it to notice approvals and
other processes' pins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

from switchyard.pins.events import PinEvent
from switchyard.pins.fingerprint import Definition, PinKey
from switchyard.pins.poisoning import Finding
from switchyard.storage.database import Database, Migration, Row, Session

COMPONENT: Final = "pins"
TABLE: Final = "switchyard_pins"
VERSION_TABLE: Final = "switchyard_pins_version"
STATES: Final = ("pinned", "pending", "rejected", "blocked")
State = Literal["pinned", "pending", "rejected", "blocked"]

MIGRATIONS: Final = (
    Migration(
        1,
        statements=(
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                backend TEXT NOT NULL,
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                state TEXT NOT NULL,
                reason TEXT,
                pinned_fp TEXT,
                pinned_def TEXT,
                pinned_at BIGINT,
                approved_by TEXT,
                candidate_fp TEXT,
                candidate_def TEXT,
                findings TEXT,
                candidate_at BIGINT,
                first_seen BIGINT NOT NULL,
                updated BIGINT NOT NULL,
                PRIMARY KEY (backend, kind, name)
            )""",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_state ON {TABLE} (state)",
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
            f"INSERT INTO {VERSION_TABLE} (id, version) VALUES (1, 0)",
        ),
    ),
)
_COLUMNS: Final = (
    "backend, kind, name, state, reason, pinned_fp, pinned_def, pinned_at, approved_by, "
    "candidate_fp, candidate_def, findings, candidate_at, first_seen, updated"
)


class PinNotFound(LookupError):
    pass


class NotApprovable(ValueError):
    """The pin has nothing to approve, or its candidate is blocked."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Pin:
    key: PinKey
    state: State
    reason: str | None
    """Why the candidate waits: `new`, `drifted` or `poisoning`."""
    pinned_fp: str | None
    pinned_def: bytes | None
    pinned_at: int | None
    approved_by: str | None
    """Who approved the pinned definition; None: trusted on first use."""
    candidate_fp: str | None
    candidate_def: bytes | None
    findings: tuple[dict[str, str], ...]
    candidate_at: int | None
    first_seen: int
    updated: int

    @classmethod
    def from_row(cls, row: Row) -> Pin:
        findings = tuple(json.loads(row[11])) if row[11] else ()
        return cls(
            PinKey(row[0], row[1], row[2]),
            row[3],
            row[4],
            row[5],
            row[6].encode() if row[6] is not None else None,
            row[7],
            row[8],
            row[9],
            row[10].encode() if row[10] is not None else None,
            findings,
            row[12],
            row[13],
            row[14],
        )

    def trusts(self, fingerprint: str, quarantined: bool) -> bool:
        """Whether a definition with this fingerprint may be shown: it is the pinned one, and
        a poisoning finding on it was seen by a person who approved it anyway."""
        return (
            (self.state != "blocked" or self.candidate_fp != fingerprint)
            and self.pinned_fp == fingerprint
            and not (quarantined and self.approved_by is None)
        )

    def settled_for(self, fingerprint: str, quarantined: bool, blocked: bool) -> bool:
        """Whether observing this definition would change nothing."""
        if blocked:
            return self.state == "blocked" and self.candidate_fp == fingerprint
        if fingerprint == self.pinned_fp:
            if quarantined and self.approved_by is None:
                return self.state == "pending" and self.candidate_fp == fingerprint
            return not (self.state == "blocked" and self.candidate_fp == fingerprint)
        return self.candidate_fp == fingerprint and self.state in ("pending", "rejected")


def _findings_text(findings: tuple[Finding, ...]) -> str | None:
    return json.dumps([f.as_json() for f in findings], ensure_ascii=False) if findings else None


class PinStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate(COMPONENT, MIGRATIONS)

    async def version(self) -> int:
        row = await self.db.fetchone(f"SELECT version FROM {VERSION_TABLE} WHERE id = 1")
        return int(row[0]) if row is not None else 0

    async def load(self, backend: str | None = None) -> dict[PinKey, Pin]:
        if backend is None:
            rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM {TABLE}")
        else:
            rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM {TABLE} WHERE backend = ?", backend)
        pins = (Pin.from_row(r) for r in rows)
        return {p.key: p for p in pins}

    async def pins(self, state: str | None = None) -> list[Pin]:
        if state is None:
            rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM {TABLE}")
        else:
            rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM {TABLE} WHERE state = ?", state)
        return sorted((Pin.from_row(r) for r in rows), key=lambda p: p.key)

    async def get(self, key: PinKey) -> Pin | None:
        return await _select(self.db, key)

    async def observe(
        self,
        definition: Definition,
        findings: tuple[Finding, ...],
        *,
        trust_new: bool,
        quarantined: bool,
        blocked: bool,
    ) -> tuple[Pin, list[PinEvent]]:
        """Record what a backend lists now; returns the pin as it stands after, and what
        happened. `trust_new`: a never-seen item is pinned at once (trust on first use)."""
        key = definition.key
        fp = definition.fingerprint
        body = definition.canonical.decode()
        found = _findings_text(findings)
        shown = tuple(f.as_json() for f in findings)
        events: list[PinEvent] = []
        async with self.db.transaction() as tx:
            await _lock(tx)
            now = _now_ms()
            pin = await _select(tx, key, lock=True)
            if pin is None:
                if blocked:
                    state, reason, event = "blocked", "poisoning", "blocked"
                elif trust_new and not quarantined:
                    state, reason, event = "pinned", None, "pinned"
                else:
                    state = "pending"
                    reason = "poisoning" if quarantined else "new"
                    event = "quarantined" if quarantined else "pending_new"
                pinned = state == "pinned"
                await tx.execute(
                    f"INSERT INTO {TABLE} ({_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    key.backend,
                    key.kind,
                    key.name,
                    state,
                    reason,
                    fp if pinned else None,
                    body if pinned else None,
                    now if pinned else None,
                    None,
                    None if pinned else fp,
                    None if pinned else body,
                    found,
                    None if pinned else now,
                    now,
                    now,
                )
                await _bump(tx)
                events.append(PinEvent(event, str(key), fp, None, state, reason, shown))
                created = await _select(tx, key)
                assert created is not None
                return created, events
            if pin.settled_for(fp, quarantined, blocked):
                return pin, events
            if blocked:
                state, reason, event = "blocked", "poisoning", "blocked"
            elif fp == pin.pinned_fp:
                # Only a trusted-on-first-use pin gets here: now flagged, nobody ever saw it.
                state, reason, event = "pending", "poisoning", "quarantined"
            else:
                state = "pending"
                reason = "drifted" if pin.pinned_fp is not None else "new"
                event = (
                    "quarantined"
                    if quarantined
                    else ("drifted" if pin.pinned_fp else "pending_new")
                )
            await tx.execute(
                f"UPDATE {TABLE} SET state = ?, reason = ?, candidate_fp = ?, candidate_def = ?, "
                "findings = ?, candidate_at = ?, updated = ? "
                "WHERE backend = ? AND kind = ? AND name = ?",
                state,
                reason,
                fp,
                body,
                found,
                now,
                now,
                key.backend,
                key.kind,
                key.name,
            )
            await _bump(tx)
            events.append(PinEvent(event, str(key), fp, pin.pinned_fp, state, reason, shown))
            updated = await _select(tx, key)
            assert updated is not None
            return updated, events

    async def approve(
        self, key: PinKey, actor: str, fingerprint: str | None = None
    ) -> tuple[Pin, PinEvent]:
        """Pin the candidate. `fingerprint` (or a prefix of it), when given, must name it: what
        was reviewed is what gets approved, even if the backend changed in between."""
        async with self.db.transaction() as tx:
            await _lock(tx)
            pin = await _select(tx, key, lock=True)
            if pin is None:
                raise PinNotFound(str(key))
            if pin.state == "blocked":
                raise NotApprovable(
                    f"{key}: blocked by a poisoning rule whose action is block; "
                    "a blocked definition is never approved"
                )
            if pin.candidate_fp is None or pin.candidate_def is None:
                raise NotApprovable(f"{key}: nothing waits for approval (state {pin.state})")
            if fingerprint is not None and not _names(fingerprint, pin.candidate_fp):
                raise NotApprovable(
                    f"{key}: the candidate is now {pin.candidate_fp}, not {fingerprint}; "
                    "review its diff again"
                )
            now = _now_ms()
            await tx.execute(
                f"UPDATE {TABLE} SET state = 'pinned', reason = NULL, pinned_fp = candidate_fp, "
                "pinned_def = candidate_def, pinned_at = ?, approved_by = ?, candidate_fp = NULL, "
                "candidate_def = NULL, candidate_at = NULL, updated = ? "
                "WHERE backend = ? AND kind = ? AND name = ?",
                now,
                actor,
                now,
                key.backend,
                key.kind,
                key.name,
            )
            await _bump(tx)
            after = await _select(tx, key)
            assert after is not None
        event = PinEvent(
            "approved", str(key), after.pinned_fp, pin.pinned_fp, "pinned", pin.reason,
            pin.findings, actor,
        )  # fmt: skip
        return after, event

    async def reject(
        self, key: PinKey, actor: str, fingerprint: str | None = None
    ) -> tuple[Pin, PinEvent]:
        """Refuse the candidate: it stays hidden, and so does any later one until approved."""
        async with self.db.transaction() as tx:
            await _lock(tx)
            pin = await _select(tx, key, lock=True)
            if pin is None:
                raise PinNotFound(str(key))
            if pin.candidate_fp is None:
                raise NotApprovable(f"{key}: nothing waits for a decision (state {pin.state})")
            if fingerprint is not None and not _names(fingerprint, pin.candidate_fp):
                raise NotApprovable(
                    f"{key}: the candidate is now {pin.candidate_fp}, not {fingerprint}"
                )
            if pin.state == "blocked":
                return pin, PinEvent(
                    "rejected", str(key), pin.candidate_fp, pin.pinned_fp, "blocked",
                    pin.reason, pin.findings, actor,
                )  # fmt: skip
            now = _now_ms()
            await tx.execute(
                f"UPDATE {TABLE} SET state = 'rejected', updated = ? "
                "WHERE backend = ? AND kind = ? AND name = ?",
                now,
                key.backend,
                key.kind,
                key.name,
            )
            await _bump(tx)
            after = await _select(tx, key)
            assert after is not None
        event = PinEvent(
            "rejected", str(key), pin.candidate_fp, pin.pinned_fp, "rejected", pin.reason,
            pin.findings, actor,
        )  # fmt: skip
        return after, event


def _names(given: str, fingerprint: str) -> bool:
    given = given.removeprefix("sha256:")
    return len(given) >= 8 and fingerprint.removeprefix("sha256:").startswith(given)


async def _lock(tx: Session) -> None:
    if tx.dialect == "postgresql":
        await tx.execute(f"SELECT version FROM {VERSION_TABLE} WHERE id = 1 FOR UPDATE")
    # SQLite: the transaction began IMMEDIATE, so it already holds the only write lock.


async def _bump(tx: Session) -> None:
    await tx.execute(f"UPDATE {VERSION_TABLE} SET version = version + 1 WHERE id = 1")


async def _select(session: Session, key: PinKey, lock: bool = False) -> Pin | None:
    suffix = " FOR UPDATE" if lock and session.dialect == "postgresql" else ""
    row = await session.fetchone(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE backend = ? AND kind = ? AND name = ?{suffix}",
        key.backend,
        key.kind,
        key.name,
    )
    return Pin.from_row(row) if row is not None else None


def pin_json(pin: Pin) -> dict[str, Any]:
    """A pin as `switchyard pins list --json` shows it (definitions left out)."""
    return {
        "key": str(pin.key),
        "state": pin.state,
        "reason": pin.reason,
        "pinned": pin.pinned_fp,
        "approved_by": pin.approved_by,
        "pinned_at": pin.pinned_at,
        "candidate": pin.candidate_fp,
        "candidate_at": pin.candidate_at,
        "findings": list(pin.findings),
        "first_seen": pin.first_seen,
        "updated": pin.updated,
    }
