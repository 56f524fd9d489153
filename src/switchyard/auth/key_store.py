"""Where API key records live (SQLite by default, PostgreSQL when configured) and how a
presented key is verified against them.

Stores hold digests, never keys. Only `create` ever sees a plaintext key, and it hands it
straight back to its caller to be shown once. Revocation is a write to the shared store; a
gateway notices it through `ApiKeyVerifier`, whose cache lives at most `cache_ttl_s`.
"""

from __future__ import annotations

import asyncio
import builtins
import hmac
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]

from switchyard.auth import keys
from switchyard.auth.keys import KeyRecord, Principal

DEFAULT_PG_TABLE = "switchyard_api_keys"
SQLITE_FILENAME = "keys.db"
DATA_DIR_ENV = "SWITCHYARD_DATA_DIR"
DATABASE_URL_ENV = "SWITCHYARD_DATABASE_URL"
# The promise made to operators: a revocation bites in a running gateway within 5 s. The cache
# TTL plus one store round trip must fit inside it.
MAX_CACHE_TTL_S = 4.0

# A prefix collision (40 bits) is rare but possible; a fresh prefix settles it.
_CREATE_ATTEMPTS = 5
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")

T = TypeVar("T")


class KeyStore(Protocol):
    async def create(
        self,
        principal: str,
        roles: Sequence[str] = (),
        attributes: Mapping[str, str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, KeyRecord]:
        """Make a key; return its plaintext (to be shown once, never stored) and its record."""
        ...

    async def revoke(self, prefix: str) -> bool:
        """Revoke a key; True if this call revoked it, False if unknown or already revoked."""
        ...

    async def list(self) -> builtins.list[KeyRecord]:
        """Every key, revoked and expired ones included, oldest first."""
        ...

    async def lookup(self, prefix: str) -> KeyRecord | None: ...

    async def aclose(self) -> None: ...


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or "var")


async def open_key_store(
    *,
    dsn: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    table: str = DEFAULT_PG_TABLE,
) -> KeyStore:
    """PostgreSQL when a DSN is given, else SQLite at `<data_dir>/keys.db`."""
    if dsn:
        return await PostgresKeyStore.open(dsn, table=table)
    base = Path(data_dir) if data_dir is not None else default_data_dir()
    return await SqliteKeyStore.open(base / SQLITE_FILENAME)


def _now() -> datetime:
    return datetime.now(UTC)


def _new_record(
    principal: str,
    roles: Sequence[str],
    attributes: Mapping[str, str] | None,
    expires_at: datetime | None,
) -> tuple[str, KeyRecord]:
    keys.check_name("principal", principal)
    now = _now()
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValueError("expires_at must carry a time zone")
        if expires_at <= now:
            raise ValueError("expires_at is not in the future")
        expires_at = expires_at.astimezone(UTC)
    plaintext, prefix, secret = keys.generate()
    record = KeyRecord(
        prefix=prefix,
        principal=principal,
        roles=keys.normalize_roles(roles),
        attributes=keys.normalize_attributes(attributes or {}),
        created_at=now,
        expires_at=expires_at,
        revoked_at=None,
        digest=keys.secret_digest(prefix, secret),
    )
    return plaintext, record


class _Store:
    """`create` on top of a store's insert, which reports a prefix collision as False."""

    async def _insert(self, record: KeyRecord) -> bool:
        raise NotImplementedError

    async def create(
        self,
        principal: str,
        roles: Sequence[str] = (),
        attributes: Mapping[str, str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, KeyRecord]:
        for _ in range(_CREATE_ATTEMPTS):
            plaintext, record = _new_record(principal, roles, attributes, expires_at)
            if await self._insert(record):
                return plaintext, record
        raise RuntimeError("could not allocate an unused key prefix")


# --- SQLite ---------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    prefix     TEXT PRIMARY KEY,
    digest     BLOB NOT NULL,
    principal  TEXT NOT NULL,
    roles      TEXT NOT NULL,
    attributes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
)
"""
_SQLITE_COLUMNS = "prefix, digest, principal, roles, attributes, created_at, expires_at, revoked_at"


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _sqlite_record(row: tuple[Any, ...]) -> KeyRecord:
    prefix, digest, principal, roles, attributes, created_at, expires_at, revoked_at = row
    return KeyRecord(
        prefix=prefix,
        principal=principal,
        roles=tuple(json.loads(roles)),
        attributes=json.loads(attributes),
        created_at=datetime.fromisoformat(created_at),
        expires_at=_ts(expires_at),
        revoked_at=_ts(revoked_at),
        digest=bytes(digest),
    )


class SqliteKeyStore(_Store):
    """Keys in a SQLite file, shared by the gateway and the CLI through WAL mode.

    sqlite3 blocks, so every statement runs in a worker thread; one connection, one lock.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SqliteKeyStore:
        store = cls(path)
        await asyncio.to_thread(store._connect)
        return store

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created owner-only before SQLite touches it; SQLite gives its -wal and -shm files
        # the database's own permissions.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        # Autocommit (isolation_level=None): every read is its own snapshot, so a revocation
        # committed by another process is seen by the next lookup.
        conn = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SQLITE_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._locked, fn)

    def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("key store is closed")
            return fn(self._conn)

    async def _insert(self, record: KeyRecord) -> bool:
        def insert(conn: sqlite3.Connection) -> bool:
            try:
                conn.execute(
                    f"INSERT INTO api_keys ({_SQLITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.prefix,
                        record.digest,
                        record.principal,
                        json.dumps(list(record.roles)),
                        json.dumps(dict(record.attributes), sort_keys=True),
                        record.created_at.isoformat(),
                        record.expires_at.isoformat() if record.expires_at else None,
                        None,
                    ),
                )
            except sqlite3.IntegrityError:
                return False
            return True

        return await self._run(insert)

    async def revoke(self, prefix: str) -> bool:
        when = _now().isoformat()

        def revoke(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                (when, prefix),
            )
            return cur.rowcount == 1

        return await self._run(revoke)

    async def list(self) -> builtins.list[KeyRecord]:
        def select(conn: sqlite3.Connection) -> builtins.list[KeyRecord]:
            rows = conn.execute(
                f"SELECT {_SQLITE_COLUMNS} FROM api_keys ORDER BY created_at, prefix"
            ).fetchall()
            return [_sqlite_record(row) for row in rows]

        return await self._run(select)

    async def lookup(self, prefix: str) -> KeyRecord | None:
        def select(conn: sqlite3.Connection) -> KeyRecord | None:
            row = conn.execute(
                f"SELECT {_SQLITE_COLUMNS} FROM api_keys WHERE prefix = ?", (prefix,)
            ).fetchone()
            return None if row is None else _sqlite_record(row)

        return await self._run(select)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_record(row: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        prefix=row["prefix"],
        principal=row["principal"],
        roles=tuple(row["roles"]),
        attributes=json.loads(row["attributes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        digest=bytes(row["digest"]),
    )


class PostgresKeyStore(_Store):
    """Keys in a PostgreSQL table, for gateways that share one store across hosts."""

    def __init__(
        self, dsn: str, *, table: str = DEFAULT_PG_TABLE, min_size: int = 1, max_size: int = 4
    ) -> None:
        if not _TABLE_RE.fullmatch(table):
            raise ValueError("table must be an identifier or schema.identifier")
        # Identifiers cannot be bound as parameters; the pattern above keeps this injection-free.
        self.table = table
        self._qtable = ".".join(f'"{part}"' for part in table.split("."))
        # The DSN may carry a password: kept private and out of every message.
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None

    def __repr__(self) -> str:
        return f"PostgresKeyStore(table={self.table!r})"

    @property
    def _db(self) -> Any:
        if self._pool is None:
            raise RuntimeError("key store is closed")
        return self._pool

    @classmethod
    async def open(
        cls, dsn: str, *, table: str = DEFAULT_PG_TABLE, min_size: int = 1, max_size: int = 4
    ) -> PostgresKeyStore:
        store = cls(dsn, table=table, min_size=min_size, max_size=max_size)
        # A bounded command timeout keeps a stuck database from stretching the revocation
        # window into an outage of unknown length: lookups fail instead.
        store._pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, command_timeout=5.0, timeout=10.0
        )
        try:
            await store._create_schema()
        except BaseException:
            await store._pool.close()
            raise
        return store

    async def _create_schema(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # CREATE TABLE IF NOT EXISTS races with itself across processes; serialise it.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            await conn.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {self._qtable} (
                    prefix     text PRIMARY KEY,
                    digest     bytea NOT NULL,
                    principal  text NOT NULL,
                    roles      text[] NOT NULL,
                    attributes jsonb NOT NULL,
                    created_at timestamptz NOT NULL,
                    expires_at timestamptz,
                    revoked_at timestamptz
                )
                """
            )

    async def _insert(self, record: KeyRecord) -> bool:
        status: str = await self._db.execute(
            f"""
            INSERT INTO {self._qtable}
                (prefix, digest, principal, roles, attributes, created_at, expires_at)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
            ON CONFLICT (prefix) DO NOTHING
            """,
            record.prefix,
            record.digest,
            record.principal,
            list(record.roles),
            json.dumps(dict(record.attributes), sort_keys=True),
            record.created_at,
            record.expires_at,
        )
        return status == "INSERT 0 1"

    async def revoke(self, prefix: str) -> bool:
        status: str = await self._db.execute(
            f"UPDATE {self._qtable} SET revoked_at = $2 WHERE prefix = $1 AND revoked_at IS NULL",
            prefix,
            _now(),
        )
        return status == "UPDATE 1"

    async def list(self) -> builtins.list[KeyRecord]:
        rows = await self._db.fetch(f"SELECT * FROM {self._qtable} ORDER BY created_at, prefix")
        return [_pg_record(row) for row in rows]

    async def lookup(self, prefix: str) -> KeyRecord | None:
        row = await self._db.fetchrow(f"SELECT * FROM {self._qtable} WHERE prefix = $1", prefix)
        return None if row is None else _pg_record(row)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# --- Verification ---------------------------------------------------------------------------


class ApiKeyVerifier:
    """Turns a presented API key into a Principal, or None.

    Lookups are cached per prefix, found and not found alike, for `cache_ttl_s`: that bounds how
    long a revocation made elsewhere (the CLI, another gateway) goes unseen. The cache holds
    records, never presented keys, and the digest is compared on every request. Concurrent
    lookups of one prefix share a single store query. Store failures propagate: an outage is
    not an authentication failure.
    """

    def __init__(
        self, store: KeyStore, cache_ttl_s: float = 2.0, *, max_cached: int = 10_000
    ) -> None:
        if not 0 <= cache_ttl_s <= MAX_CACHE_TTL_S:
            raise ValueError(
                f"cache_ttl_s must be within 0..{MAX_CACHE_TTL_S} "
                "so that revocations take effect within 5 s"
            )
        if max_cached < 1:
            raise ValueError("max_cached must be positive")
        self._store = store
        self._ttl = cache_ttl_s
        self._max = max_cached
        # prefix -> (monotonic deadline, record). Insertion order is deadline order, because
        # the TTL is fixed and a refreshed entry is re-inserted at the end.
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def verify(self, presented_key: str) -> Principal | None:
        parsed = keys.parse(presented_key)
        if parsed is None:
            return None
        record = await self._record(parsed.prefix)
        if record is None or record.revoked or record.is_expired(_now()):
            return None
        if not record.matches(parsed.secret):
            return None
        return Principal(
            name=record.principal,
            roles=record.roles,
            attributes=record.attributes,
            key_prefix=record.prefix,
        )

    async def principal_for(self, prefix: str, fingerprint: str) -> Principal | None:
        """The principal of the key with this prefix while it is still good (not revoked, not
        expired) and still the key `fingerprint` names; what a console session re-checks on
        every page instead of keeping the key. Same cache as `verify`."""
        record = await self._record(prefix)
        if record is None or record.revoked or record.is_expired(_now()):
            return None
        if not hmac.compare_digest(keys.fingerprint(record.digest), fingerprint):
            return None
        return Principal(record.principal, record.roles, record.attributes, record.prefix)

    def invalidate(self, prefix: str | None = None) -> None:
        """Forget one prefix (or everything), e.g. after revoking through this process."""
        if prefix is None:
            self._cache.clear()
        else:
            self._cache.pop(prefix, None)

    async def _record(self, prefix: str) -> KeyRecord | None:
        hit = self._cache.get(prefix)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._inflight.get(prefix)
        if pending is None:
            pending = asyncio.ensure_future(self._store.lookup(prefix))
            self._inflight[prefix] = pending
            pending.add_done_callback(lambda fut: self._settle(prefix, fut))
        # Shielded: one waiter giving up must not cancel the query the others are waiting on.
        return await asyncio.shield(pending)

    def _settle(self, prefix: str, fut: asyncio.Future[KeyRecord | None]) -> None:
        if self._inflight.get(prefix) is fut:
            del self._inflight[prefix]
        if fut.cancelled() or fut.exception() is not None:
            # exception() also marks it retrieved, so an unawaited failure is not reported twice.
            return
        if self._ttl <= 0:
            return
        now = time.monotonic()
        self._cache.pop(prefix, None)
        while self._cache:
            oldest = next(iter(self._cache))
            if self._cache[oldest][0] > now and len(self._cache) < self._max:
                break
            del self._cache[oldest]
        self._cache[prefix] = (now + self._ttl, fut.result())
