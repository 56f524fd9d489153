"""The audit tables in the shared database, and the only statements that touch them.

Append-only by construction: triggers refuse UPDATE, and DELETE except inside `retain` (on
PostgreSQL a transaction-local setting opens the gate, on SQLite a gate row that only exists
inside the retention transaction). The triggers stop mistakes and a gateway's own database
role, not an owner of the database: the hash chain and signed checkpoints are what detect
tampering by anyone who can write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from switchyard.storage.database import Database, Migration, Row, Session

COMPONENT: Final = "audit"

_APPEND_ONLY_SQLITE = tuple(
    stmt
    for table in ("audit_records", "audit_checkpoints", "audit_markers", "audit_writers")
    for stmt in (
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        "WHEN NOT EXISTS (SELECT 1 FROM audit_retention_gate) "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only; only retention deletes'); END",
    )
)

_APPEND_ONLY_PG = (
    """
    CREATE OR REPLACE FUNCTION switchyard_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    BEGIN
        IF TG_OP = 'DELETE' AND current_setting('switchyard.audit_retention', true) = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '% is append-only; only retention deletes', TG_TABLE_NAME;
    END
    $fn$
    """,
    *(
        stmt
        for table in ("audit_records", "audit_checkpoints", "audit_markers", "audit_writers")
        for stmt in (
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION switchyard_audit_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION switchyard_audit_append_only()",
        )
    ),
)


def _schema(dialect: str) -> tuple[str, ...]:
    # Only the generated row id is spelled differently.
    ident = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "BIGSERIAL PRIMARY KEY"
    return (
        f"CREATE TABLE audit_records (id {ident}, writer TEXT NOT NULL, seq BIGINT NOT NULL, "
        "ts TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL, record TEXT NOT NULL)",
        f"CREATE TABLE audit_checkpoints (id {ident}, writer TEXT NOT NULL, "
        "cseq BIGINT NOT NULL, seq BIGINT NOT NULL, ts TEXT NOT NULL, key_id TEXT NOT NULL, "
        "body TEXT NOT NULL, sig TEXT NOT NULL)",
        f"CREATE TABLE audit_markers (id {ident}, writer TEXT NOT NULL, "
        "from_seq BIGINT NOT NULL, ts TEXT NOT NULL, key_id TEXT NOT NULL, body TEXT NOT NULL, "
        "sig TEXT NOT NULL)",
        "CREATE TABLE audit_writers (writer TEXT PRIMARY KEY, started TEXT NOT NULL, "
        "host TEXT NOT NULL, pid INTEGER NOT NULL)",
        "CREATE TABLE audit_keys (key_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, "
        "added TEXT NOT NULL)",
        "CREATE INDEX audit_records_ts ON audit_records (ts)",
        "CREATE INDEX audit_records_stream ON audit_records (writer, seq, id)",
        "CREATE INDEX audit_checkpoints_stream ON audit_checkpoints (writer, cseq, id)",
    )


MIGRATIONS: Final = (
    Migration(
        1,
        sqlite=(
            *_schema("sqlite"),
            "CREATE TABLE audit_retention_gate (open INTEGER NOT NULL)",
            *_APPEND_ONLY_SQLITE,
        ),
        postgresql=(*_schema("postgresql"), *_APPEND_ONLY_PG),
    ),
)


async def migrate(db: Database) -> int:
    return await db.migrate(COMPONENT, MIGRATIONS)


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    writer: str
    cseq: int
    seq: int
    ts: str
    key_id: str
    body: str
    sig: str


@dataclass(frozen=True, slots=True)
class MarkerRow:
    writer: str
    from_seq: int
    ts: str
    key_id: str
    body: str
    sig: str


INSERT_RECORD: Final = (
    "INSERT INTO audit_records (writer, seq, ts, prev, hash, record) VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_CHECKPOINT: Final = (
    "INSERT INTO audit_checkpoints (writer, cseq, seq, ts, key_id, body, sig) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_MARKER: Final = (
    "INSERT INTO audit_markers (writer, from_seq, ts, key_id, body, sig) VALUES (?, ?, ?, ?, ?, ?)"
)


async def register_writer(tx: Session, writer: str, started: str, host: str, pid: int) -> None:
    await tx.execute(
        "INSERT INTO audit_writers (writer, started, host, pid) VALUES (?, ?, ?, ?)",
        writer,
        started,
        host,
        pid,
    )


async def publish_key(db: Database, key_id: str, public_pem: str, added: str) -> None:
    """Record a public key in the database (for readers; verification trusts the key ring)."""
    async with db.transaction() as tx:
        found = await tx.fetchone("SELECT key_id FROM audit_keys WHERE key_id = ?", key_id)
        if found is None:
            await tx.execute(
                "INSERT INTO audit_keys (key_id, public_key, added) VALUES (?, ?, ?)",
                key_id,
                public_pem,
                added,
            )


async def writers(db: Session) -> list[str]:
    return [r[0] for r in await db.fetch("SELECT writer FROM audit_writers ORDER BY writer")]


async def stream_head(db: Session, writer: str) -> tuple[int, str] | None:
    """The last record a writer committed: (seq, hash)."""
    row = await db.fetchone(
        "SELECT seq, hash FROM audit_records WHERE writer = ? ORDER BY seq DESC, id DESC LIMIT 1",
        writer,
    )
    return (int(row[0]), str(row[1])) if row is not None else None


async def checkpoints(db: Session, writer: str | None = None) -> list[CheckpointRow]:
    sql = "SELECT writer, cseq, seq, ts, key_id, body, sig FROM audit_checkpoints"
    rows: Sequence[Row]
    if writer is None:
        rows = await db.fetch(sql + " ORDER BY writer, cseq, id")
    else:
        rows = await db.fetch(sql + " WHERE writer = ? ORDER BY cseq, id", writer)
    return [CheckpointRow(r[0], int(r[1]), int(r[2]), r[3], r[4], r[5], r[6]) for r in rows]


async def markers(db: Session) -> list[MarkerRow]:
    rows = await db.fetch(
        "SELECT writer, from_seq, ts, key_id, body, sig FROM audit_markers "
        "ORDER BY writer, from_seq, id"
    )
    return [MarkerRow(r[0], int(r[1]), r[2], r[3], r[4], r[5]) for r in rows]


def records(db: Database, batch: int = 10_000) -> AsyncIterator[list[Row]]:
    """Every record as (writer, seq, prev, hash, record), stream by stream in chain order."""
    return db.stream(
        "SELECT writer, seq, prev, hash, record FROM audit_records ORDER BY writer, seq, id",
        batch=batch,
    )


def records_since(db: Database, since: str | None, batch: int = 5_000) -> AsyncIterator[list[Row]]:
    """Records with `ts >= since` (ISO 8601 UTC text), oldest first."""
    sql = "SELECT writer, seq, prev, hash, record FROM audit_records"
    if since is None:
        return db.stream(sql + " ORDER BY ts, writer, seq, id", batch=batch)
    return db.stream(sql + " WHERE ts >= ? ORDER BY ts, writer, seq, id", since, batch=batch)


async def open_retention_gate(tx: Session) -> None:
    if tx.dialect == "postgresql":
        await tx.execute("SELECT pg_advisory_xact_lock(hashtext('switchyard_audit_retention'))")
        await tx.execute("SELECT set_config('switchyard.audit_retention', 'on', true)")
    else:
        await tx.execute("INSERT INTO audit_retention_gate (open) VALUES (1)")


async def close_retention_gate(tx: Session) -> None:
    if tx.dialect == "sqlite":
        await tx.execute("DELETE FROM audit_retention_gate")
