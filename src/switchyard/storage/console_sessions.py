"""Web console sessions in the shared database, so every gateway process behind a load
balancer knows every session and a restart signs nobody out.

A row is keyed by the SHA-256 of the cookie's random id, never the id itself: reading the table
yields no cookie that works. It holds the session's CSRF token, its expiry and what names the
credential again on every page — an API key's prefix and the fingerprint of its stored digest
(never the key), or a verified token's identity (subject, issuer, roles, scopes, attributes;
never the token). Sessions are bounded per principal and in total, the oldest going first.

The console's sign-in form and OAuth redirect are bound to a pre-session that has no row at
all: a cookie signed with a secret kept here once for every process (`signing_secret`), so an
anonymous visitor costs the database nothing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from switchyard.storage.database import Database, Migration, Row

COMPONENT: Final = "console_sessions"
TABLE: Final = "switchyard_console_sessions"
SECRETS_TABLE: Final = "switchyard_console_secrets"
SIGNING: Final = "pre-session"

MIGRATIONS: Final = (
    Migration(
        1,
        statements=(
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                id_digest TEXT PRIMARY KEY,
                principal TEXT NOT NULL,
                via TEXT NOT NULL,
                csrf TEXT NOT NULL,
                key_prefix TEXT,
                key_fingerprint TEXT,
                claims TEXT,
                created BIGINT NOT NULL,  -- nanoseconds: orders the oldest first
                expires BIGINT NOT NULL  -- milliseconds
            )""",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_principal ON {TABLE} (principal, created)",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_expires ON {TABLE} (expires)",
            f"""CREATE TABLE IF NOT EXISTS {SECRETS_TABLE} (
                name TEXT PRIMARY KEY,
                secret TEXT NOT NULL
            )""",
        ),
    ),
)

_COLUMNS: Final = "principal, via, csrf, key_prefix, key_fingerprint, claims, expires"


def now_ms() -> int:
    return int(time.time() * 1000)


def id_digest(session_id: str) -> str:
    """What the table keeps of a cookie's id. Plain SHA-256: the id is 256 random bits."""
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    principal: str
    """The qualified principal (`issuer#name`) the bounds count by."""
    via: str
    """`api_key` or `jwt`."""
    csrf: str
    key_prefix: str | None
    key_fingerprint: str | None
    claims: dict[str, Any] | None
    """For a token sign-in: the identity the verified token established."""
    expires: int
    """Milliseconds since the epoch."""

    @classmethod
    def from_row(cls, row: Row) -> ConsoleSession:
        return cls(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            json.loads(row[5]) if row[5] is not None else None,
            int(row[6]),
        )


class ConsoleSessionStore:
    def __init__(self, db: Database, *, per_principal: int = 10, total: int = 10_000) -> None:
        self.db = db
        self.per_principal = per_principal
        self.total = total

    async def migrate(self) -> None:
        await self.db.migrate(COMPONENT, MIGRATIONS)

    async def create(
        self,
        principal: str,
        via: str,
        ttl_ms: int,
        *,
        key_prefix: str | None = None,
        key_fingerprint: str | None = None,
        claims: dict[str, Any] | None = None,
    ) -> tuple[str, ConsoleSession]:
        """A new session: the cookie's id (returned once, never stored) and the session. Expired
        rows are purged and the bounds kept in the same transaction."""
        session_id = secrets.token_urlsafe(32)
        session = ConsoleSession(
            principal,
            via,
            secrets.token_urlsafe(32),
            key_prefix,
            key_fingerprint,
            claims,
            now_ms() + ttl_ms,
        )
        async with self.db.transaction() as tx:
            await tx.execute(f"DELETE FROM {TABLE} WHERE expires <= ?", now_ms())
            await self._evict(tx, "WHERE principal = ?", (principal,), self.per_principal)
            await self._evict(tx, "", (), self.total)
            await tx.execute(
                f"INSERT INTO {TABLE} (id_digest, {_COLUMNS}, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                id_digest(session_id),
                session.principal,
                session.via,
                session.csrf,
                session.key_prefix,
                session.key_fingerprint,
                json.dumps(claims, sort_keys=True) if claims is not None else None,
                session.expires,
                time.time_ns(),
            )
        return session_id, session

    @staticmethod
    async def _evict(tx: Any, where: str, args: tuple[Any, ...], keep: int) -> None:
        """Drop the oldest rows so that one more fits under `keep`."""
        row = await tx.fetchone(f"SELECT COUNT(*) FROM {TABLE} {where}", *args)
        excess = int(row[0]) - keep + 1 if row is not None else 0
        if excess <= 0:
            return
        oldest = await tx.fetch(
            f"SELECT id_digest FROM {TABLE} {where} ORDER BY created, id_digest LIMIT ?",
            *args,
            excess,
        )
        for (digest,) in oldest:
            await tx.execute(f"DELETE FROM {TABLE} WHERE id_digest = ?", digest)

    async def get(self, session_id: str) -> ConsoleSession | None:
        """The live session a cookie names; None when unknown or expired."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE id_digest = ? AND expires > ?",
            id_digest(session_id),
            now_ms(),
        )
        return ConsoleSession.from_row(row) if row is not None else None

    async def delete(self, session_id: str) -> bool:
        return (
            await self.db.execute(f"DELETE FROM {TABLE} WHERE id_digest = ?", id_digest(session_id))
            == 1
        )

    async def count(self, principal: str | None = None) -> int:
        if principal is None:
            row = await self.db.fetchone(f"SELECT COUNT(*) FROM {TABLE}")
        else:
            row = await self.db.fetchone(
                f"SELECT COUNT(*) FROM {TABLE} WHERE principal = ?", principal
            )
        return int(row[0]) if row is not None else 0

    async def signing_secret(self) -> bytes:
        """The secret every process signs pre-session cookies with: made by whichever process
        asks first, read by the others."""
        await self.db.execute(
            f"INSERT INTO {SECRETS_TABLE} (name, secret) VALUES (?, ?) "
            "ON CONFLICT (name) DO NOTHING",
            SIGNING,
            secrets.token_urlsafe(32),
        )
        row = await self.db.fetchone(f"SELECT secret FROM {SECRETS_TABLE} WHERE name = ?", SIGNING)
        assert row is not None
        return str(row[0]).encode()
