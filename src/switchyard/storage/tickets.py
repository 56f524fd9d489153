"""Approval tickets: one row per gated call, in the shared database.

A ticket is bound to the call it stands for — qualified principal, view, backend, tool, the
digest of the arguments and the approval policy's version — and expires. Every state change
is one conditional UPDATE, so two gateway processes sharing PostgreSQL can never both
approve, deny or consume the same ticket: whoever's UPDATE changes the row wins, the other
sees zero rows changed. Consuming is `approved -> consumed`: an approval runs exactly one call.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

from switchyard.storage.database import Database, Migration, Row

COMPONENT: Final = "approvals"
TABLE: Final = "switchyard_approval_tickets"
State = Literal["pending", "approved", "denied", "consumed", "superseded", "expired"]
STATES: Final = ("pending", "approved", "denied", "consumed", "superseded", "expired")
ID_PREFIX: Final = "apr_"

MIGRATIONS: Final = (
    Migration(
        1,
        statements=(
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                principal TEXT NOT NULL,
                view_name TEXT NOT NULL,
                backend TEXT NOT NULL,
                tool TEXT NOT NULL,
                public_name TEXT NOT NULL,
                args_digest TEXT NOT NULL,
                policy_version TEXT NOT NULL,
                rule TEXT NOT NULL,
                approver TEXT NOT NULL,
                created BIGINT NOT NULL,
                expires BIGINT NOT NULL,
                decided_by TEXT,
                decided_at BIGINT,
                reason TEXT,
                consumed_at BIGINT,
                escalated_at BIGINT,
                arguments TEXT,
                steps INTEGER NOT NULL DEFAULT 0
            )""",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_binding ON {TABLE} "
            "(principal, backend, tool, args_digest)",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_state ON {TABLE} (state, created)",
        ),
    ),
)

_COLUMNS: Final = (
    "id, state, principal, view_name, backend, tool, public_name, args_digest, policy_version, "
    "rule, approver, created, expires, decided_by, decided_at, reason, consumed_at, escalated_at, "
    "arguments"
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Binding:
    """The exact call a ticket stands for."""

    principal: str
    view: str
    """The virtual server's name; empty for the full gateway."""
    backend: str
    tool: str
    public_name: str
    args_digest: str
    policy_version: str


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    state: State
    binding: Binding
    rule: str
    approver: str
    created: int
    expires: int
    decided_by: str | None
    decided_at: int | None
    reason: str | None
    consumed_at: int | None
    escalated_at: int | None
    arguments: str | None = None
    """The call's arguments as JSON, for approvers to see (None: not kept)."""

    @classmethod
    def from_row(cls, row: Row) -> Ticket:
        return cls(
            row[0],
            row[1],
            Binding(row[2], row[3], row[4], row[5], row[6], row[7], row[8]),
            row[9],
            row[10],
            int(row[11]),
            int(row[12]),
            row[13],
            int(row[14]) if row[14] is not None else None,
            row[15],
            int(row[16]) if row[16] is not None else None,
            int(row[17]) if row[17] is not None else None,
            row[18],
        )

    def status(self, at_ms: int | None = None) -> str:
        """The state as a reader sees it: a pending or approved ticket past its expiry is
        `expired` (nothing rewrites the row; every transition checks the expiry itself)."""
        if self.state in ("pending", "approved") and (at_ms or now_ms()) >= self.expires:
            return "expired"
        return self.state

    def as_json(self) -> dict[str, Any]:
        b = self.binding
        return {
            "id": self.id,
            "status": self.status(),
            "principal": b.principal,
            "view": b.view or None,
            "backend": b.backend,
            "tool": b.tool,
            "name": b.public_name,
            "argsDigest": b.args_digest,
            "policyVersion": b.policy_version,
            "rule": self.rule,
            "approver": self.approver,
            "createdAt": _iso(self.created),
            "expiresAt": _iso(self.expires),
            "decidedBy": self.decided_by,
            "decidedAt": _iso(self.decided_at) if self.decided_at is not None else None,
            "reason": self.reason,
            "consumedAt": _iso(self.consumed_at) if self.consumed_at is not None else None,
            "escalatedAt": _iso(self.escalated_at) if self.escalated_at is not None else None,
            "arguments": json.loads(self.arguments) if self.arguments is not None else None,
        }


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def new_id() -> str:
    """144 random bits: a ticket id cannot be guessed."""
    return ID_PREFIX + secrets.token_urlsafe(18)


class TicketStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate(COMPONENT, MIGRATIONS)

    async def create(
        self,
        binding: Binding,
        rule: str,
        approver: str,
        ttl_ms: int,
        arguments: str | None = None,
        at_ms: int | None = None,
    ) -> Ticket:
        at = at_ms if at_ms is not None else now_ms()
        ticket_id = new_id()
        b = binding
        await self.db.execute(
            f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES "
            "(?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, ?)",
            ticket_id,
            b.principal,
            b.view,
            b.backend,
            b.tool,
            b.public_name,
            b.args_digest,
            b.policy_version,
            rule,
            approver,
            at,
            at + ttl_ms,
            arguments,
        )
        ticket = await self.get(ticket_id)
        assert ticket is not None
        return ticket

    async def get(self, ticket_id: str) -> Ticket | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", ticket_id)
        return Ticket.from_row(row) if row is not None else None

    async def find(self, binding: Binding, states: tuple[str, ...]) -> list[Ticket]:
        """Live tickets for exactly this call (any policy version), oldest first."""
        marks = ", ".join("?" for _ in states)
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE principal = ? AND view_name = ? AND "
            f"backend = ? AND tool = ? AND args_digest = ? AND state IN ({marks}) AND "
            "expires > ? ORDER BY created",
            binding.principal,
            binding.view,
            binding.backend,
            binding.tool,
            binding.args_digest,
            *states,
            now_ms(),
        )
        return [Ticket.from_row(r) for r in rows]

    async def listed(self, state: str | None = None, limit: int = 100) -> list[Ticket]:
        at = now_ms()
        if state is None:
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY created DESC LIMIT ?", limit
            )
        elif state == "expired":
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE state IN ('pending', 'approved') AND "
                "expires <= ? ORDER BY created DESC LIMIT ?",
                at,
                limit,
            )
        elif state in ("pending", "approved"):
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE state = ? AND expires > ? "
                "ORDER BY created DESC LIMIT ?",
                state,
                at,
                limit,
            )
        else:
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE state = ? ORDER BY created DESC LIMIT ?",
                state,
                limit,
            )
        return [Ticket.from_row(r) for r in rows]

    async def count(self, state: str) -> int:
        row = await self.db.fetchone(
            f"SELECT COUNT(*) FROM {TABLE} WHERE state = ? AND expires > ?", state, now_ms()
        )
        return int(row[0]) if row is not None else 0

    async def decide(
        self, ticket_id: str, approve: bool, by: str, reason: str | None, policy_version: str
    ) -> bool:
        """pending -> approved/denied, if still pending, unexpired and of this policy version;
        False when another decision (or the clock, or a policy change) came first."""
        at = now_ms()
        changed = await self.db.execute(
            f"UPDATE {TABLE} SET state = ?, decided_by = ?, decided_at = ?, reason = ? "
            "WHERE id = ? AND state = 'pending' AND expires > ? AND policy_version = ?",
            "approved" if approve else "denied",
            by,
            at,
            reason,
            ticket_id,
            at,
            policy_version,
        )
        return changed == 1

    async def consume(self, ticket_id: str, binding: Binding) -> bool:
        """approved -> consumed for exactly this call; True for the one caller that wins."""
        at = now_ms()
        b = binding
        changed = await self.db.execute(
            f"UPDATE {TABLE} SET state = 'consumed', consumed_at = ? WHERE id = ? AND "
            "state = 'approved' AND expires > ? AND principal = ? AND view_name = ? AND "
            "backend = ? AND tool = ? AND args_digest = ? AND policy_version = ?",
            at,
            ticket_id,
            at,
            b.principal,
            b.view,
            b.backend,
            b.tool,
            b.args_digest,
            b.policy_version,
        )
        return changed == 1

    async def advance(self, ticket_id: str, binding: Binding, step: int) -> bool:
        """Take round `step` of an approved call whose backend asked for more input: once."""
        b = binding
        changed = await self.db.execute(
            f"UPDATE {TABLE} SET steps = ? WHERE id = ? AND state = 'consumed' AND steps = ? "
            "AND principal = ? AND view_name = ? AND backend = ? AND tool = ? AND "
            "args_digest = ? AND policy_version = ?",
            step + 1,
            ticket_id,
            step,
            b.principal,
            b.view,
            b.backend,
            b.tool,
            b.args_digest,
            b.policy_version,
        )
        return changed == 1

    async def expire(self, binding: Binding) -> list[Ticket]:
        """Mark this call's tickets that ran out of time `expired`, each once; those this
        caller marked (so the expiry is reported once, then the call asks anew)."""
        b = binding
        rows = await self.db.fetch(
            f"SELECT id FROM {TABLE} WHERE principal = ? AND view_name = ? AND backend = ? AND "
            "tool = ? AND args_digest = ? AND state IN ('pending', 'approved') AND expires <= ?",
            b.principal,
            b.view,
            b.backend,
            b.tool,
            b.args_digest,
            now_ms(),
        )
        out: list[Ticket] = []
        for (ticket_id,) in rows:
            changed = await self.db.execute(
                f"UPDATE {TABLE} SET state = 'expired' WHERE id = ? AND "
                "state IN ('pending', 'approved')",
                ticket_id,
            )
            ticket = await self.get(ticket_id)
            if changed == 1 and ticket is not None:
                out.append(ticket)
        return out

    async def supersede(self, ticket_id: str) -> bool:
        """A ticket of an older policy version is out of use for good."""
        changed = await self.db.execute(
            f"UPDATE {TABLE} SET state = 'superseded' WHERE id = ? AND "
            "state IN ('pending', 'approved')",
            ticket_id,
        )
        return changed == 1

    async def escalate_due(self, older_than_ms: int) -> list[Ticket]:
        """Mark pending tickets created before `older_than_ms` escalated, once each."""
        at = now_ms()
        rows = await self.db.fetch(
            f"SELECT id FROM {TABLE} WHERE state = 'pending' AND escalated_at IS NULL AND "
            "created <= ? AND expires > ?",
            older_than_ms,
            at,
        )
        out: list[Ticket] = []
        for (ticket_id,) in rows:
            changed = await self.db.execute(
                f"UPDATE {TABLE} SET escalated_at = ? WHERE id = ? AND escalated_at IS NULL",
                at,
                ticket_id,
            )
            if changed == 1:
                ticket = await self.get(ticket_id)
                if ticket is not None:
                    out.append(ticket)
        return out
