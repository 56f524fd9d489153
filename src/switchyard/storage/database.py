"""The relational database every durable feature shares: embedded SQLite by default, PostgreSQL
when `storage.database_url` is set.

One SQL dialect for callers: statements use `?` placeholders (translated to `$1..$n` for
PostgreSQL), values are `str`, `int`, `float`, `bytes` or None, and rows come back as tuples.
What truly differs between the two (DDL, triggers) goes into a `Migration`'s per-dialect
statements. Every failure of either backend surfaces as `StorageError`, so a caller decides on
"the store failed" without knowing which driver it was.

SQLite blocks, so its statements run on one dedicated thread holding one connection: a single
writer, in order, never on the event loop. PostgreSQL goes through a small asyncpg pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import asyncpg  # type: ignore[import-untyped]

from switchyard.storage.settings import StorageSettings

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]

SCHEMA_TABLE: Final = "switchyard_schema"
DEFAULT_COMMAND_TIMEOUT_S: Final = 10.0


class StorageError(Exception):
    """The database failed or refused a statement. The message never carries the DSN."""


class SchemaTooNew(StorageError):
    """The database was migrated by a newer Switchyard than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step of a component. `statements` run on both dialects; `sqlite` and
    `postgresql` hold what only one of them understands (run after the common ones)."""

    version: int
    statements: tuple[str, ...] = ()
    sqlite: tuple[str, ...] = ()
    postgresql: tuple[str, ...] = ()

    def for_dialect(self, dialect: Dialect) -> tuple[str, ...]:
        return self.statements + (self.sqlite if dialect == "sqlite" else self.postgresql)


def to_postgres(sql: str) -> str:
    """`?` placeholders as `$1..$n`; a `?` inside a quoted literal or identifier is kept."""
    out: list[str] = []
    n = 0
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


class Session:
    """Statements on one connection: the database itself, or an open transaction."""

    dialect: Dialect

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed (-1 when the driver cannot say)."""
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        raise NotImplementedError

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None


class Database(Session):
    async def close(self) -> None:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Session]:
        """Everything inside commits together, or not at all (an exception rolls back)."""
        raise NotImplementedError

    def stream(self, sql: str, *args: Any, batch: int = 5000) -> AsyncIterator[list[Row]]:
        """A large result in chunks of at most `batch` rows, in constant memory."""
        raise NotImplementedError

    async def insert_built(self, sql: str, build: Callable[[], Sequence[Sequence[Any]]]) -> None:
        """Run `sql` for every row `build()` returns, in one transaction of its own (all or
        none). `build` runs off the event loop; it may raise, and then nothing is written."""
        rows = await asyncio.to_thread(build)
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Bring `component`'s tables to the last of `migrations` (ascending versions); its
        version is kept in `switchyard_schema`. Safe to run from several processes at once.
        Refuses (`SchemaTooNew`) a database a newer Switchyard migrated further."""
        if not migrations:
            raise ValueError("no migrations")
        latest = migrations[-1].version
        async with self.transaction() as tx:
            if self.dialect == "postgresql":
                # CREATE TABLE IF NOT EXISTS races with itself across processes; serialise.
                await tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", SCHEMA_TABLE)
            await tx.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = await tx.fetchone(
                f"SELECT version FROM {SCHEMA_TABLE} WHERE component = ?", component
            )
            current = int(row[0]) if row is not None else 0
            if current > latest:
                raise SchemaTooNew(
                    f"the {component} tables are at schema version {current}; this Switchyard "
                    f"knows up to {latest}: upgrade Switchyard"
                )
            for migration in migrations:
                if migration.version <= current:
                    continue
                for statement in migration.for_dialect(self.dialect):
                    await tx.execute(statement)
            if current < latest:
                if row is None:
                    await tx.execute(
                        f"INSERT INTO {SCHEMA_TABLE} (component, version) VALUES (?, ?)",
                        component,
                        latest,
                    )
                else:
                    await tx.execute(
                        f"UPDATE {SCHEMA_TABLE} SET version = ? WHERE component = ?",
                        latest,
                        component,
                    )
        return latest

    async def schema_version(self, component: str) -> int | None:
        """The component's schema version; None when it was never migrated here."""
        try:
            row = await self.fetchone(
                f"SELECT version FROM {SCHEMA_TABLE} WHERE component = ?", component
            )
        except StorageError:
            return None
        return int(row[0]) if row is not None else None


async def open_database(
    settings: StorageSettings, *, command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S
) -> Database:
    """PostgreSQL when `database_url` is set, else the SQLite file at `sqlite_path`."""
    if settings.database_url:
        return await PostgresDatabase.open(settings.database_url, command_timeout=command_timeout)
    return await SqliteDatabase.open(settings.sqlite_path, busy_timeout=command_timeout)


# --- SQLite ---------------------------------------------------------------------------------


class _SqliteSession(Session):
    dialect: Dialect = "sqlite"

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def execute(self, sql: str, *args: Any) -> int:
        changed: int = await self._db._call(lambda c: c.execute(sql, args).rowcount)
        return changed

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        await self._db._call(lambda c: c.executemany(sql, batch))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._db._call(lambda c: c.execute(sql, args).fetchall())
        return rows


def _use_wal(conn: sqlite3.Connection, wait_s: float) -> None:
    """Switch a database to WAL once. Changing the journal mode answers "database is locked"
    at once, past the busy timeout, while another connection (a second store opened at the
    same moment) holds a lock: that is retried within the same bound."""
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class _BuildFailed(Exception):
    """What an `insert_built` build raised, carried past the translation of driver errors."""


class SqliteDatabase(Database):
    """One SQLite file in WAL mode (readers in other processes never block its writer)."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        # Held by a transaction for its whole length, so no other statement of this process
        # lands inside it.
        self._lock = asyncio.Lock()
        self._session = _SqliteSession(self)

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = 10.0) -> SqliteDatabase:
        db = cls(Path(path), busy_timeout)
        try:
            await db._run(db._connect)
        except BaseException:
            db._executor.shutdown(wait=False)
            raise
        return db

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Owner-only before SQLite touches it; its -wal and -shm files inherit the mode. Only
        # when new: closing any descriptor of a file drops every POSIX lock this process holds
        # on it, so opening a second store on a file already open here would let another
        # process take itself for the last user and delete the WAL under our writes.
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            _use_wal(conn, self._busy_timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def _run(self, fn: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"SQLite {self.path.name}: {exc}") from exc
        except RuntimeError as exc:  # the executor is shut down
            raise StorageError(f"SQLite {self.path.name}: closed") from exc

    async def _call(self, fn: Any) -> Any:
        def run() -> Any:
            if self._conn is None:
                raise sqlite3.ProgrammingError("database is closed")
            return fn(self._conn)

        return await self._run(run)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._session.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._lock:
            await self._session.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            return await self._session.fetch(sql, *args)

    async def insert_built(self, sql: str, build: Callable[[], Sequence[Sequence[Any]]]) -> None:
        # Building, BEGIN, the inserts and COMMIT in one trip to the connection's thread: each
        # trip costs a thread switch and an event-loop wake-up, dearer than a small batch.
        def run(conn: sqlite3.Connection) -> None:
            try:
                rows = build()
            except Exception as exc:
                raise _BuildFailed from exc
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

        async with self._lock:
            try:
                await self._call(run)
            except _BuildFailed as failed:
                # The caller's own error, not the database's: raised as it was.
                cause = failed.__cause__
                assert cause is not None
                raise cause from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self._lock:
            await self._call(lambda c: c.execute("BEGIN IMMEDIATE"))
            try:
                yield self._session
            except BaseException:
                with contextlib.suppress(StorageError):
                    await self._call(lambda c: c.execute("ROLLBACK"))
                raise
            await self._call(lambda c: c.execute("COMMIT"))

    async def stream(self, sql: str, *args: Any, batch: int = 5000) -> AsyncIterator[list[Row]]:
        # A second connection: its read snapshot neither blocks nor sees half of a writer's
        # transaction, and the writer's connection stays free meanwhile.
        def open_reader() -> sqlite3.Cursor:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("BEGIN")
            return conn.execute(sql, args)

        loop = asyncio.get_running_loop()
        try:
            cursor = await loop.run_in_executor(None, open_reader)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite {self.path.name}: {exc}") from exc
        try:
            while True:
                try:
                    rows = await loop.run_in_executor(None, cursor.fetchmany, batch)
                except sqlite3.Error as exc:
                    raise StorageError(f"SQLite {self.path.name}: {exc}") from exc
                if not rows:
                    return
                yield rows
        finally:
            conn = cursor.connection
            cursor.close()
            conn.close()

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        with contextlib.suppress(StorageError):
            await self._run(close)
        self._executor.shutdown(wait=False)


# --- PostgreSQL -----------------------------------------------------------------------------

_PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _pg_failure(exc: BaseException) -> StorageError:
    # asyncpg's messages name the server's complaint, never the DSN or its password.
    return StorageError(f"PostgreSQL: {type(exc).__name__}: {exc}")


class _PgSession(Session):
    dialect: Dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status: str = await self._conn.execute(to_postgres(sql), *args)
        except _PG_ERRORS as exc:
            raise _pg_failure(exc) from exc
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else -1

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(to_postgres(sql), list(rows))
        except _PG_ERRORS as exc:
            raise _pg_failure(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            records = await self._conn.fetch(to_postgres(sql), *args)
        except _PG_ERRORS as exc:
            raise _pg_failure(exc) from exc
        return [tuple(r) for r in records]


@dataclass
class PostgresDatabase(Database):
    """A PostgreSQL database shared by every gateway process. A `search_path` query parameter
    in the URL (`...?search_path=switchyard`) puts every table in that schema."""

    _pool: Any
    dialect: Dialect = field(default="postgresql", init=False)

    def __repr__(self) -> str:
        return "PostgresDatabase()"  # the DSN may hold a password

    @classmethod
    async def open(
        cls, dsn: str, *, command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S, max_size: int = 4
    ) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                command_timeout=command_timeout,
                timeout=command_timeout,
            )
        except (*_PG_ERRORS, ValueError) as exc:
            raise _pg_failure(exc) from exc
        return cls(pool)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._acquire() as conn:
            return await _PgSession(conn).execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._acquire() as conn:
            await _PgSession(conn).executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._acquire() as conn:
            return await _PgSession(conn).fetch(sql, *args)

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        try:
            conn = await self._pool.acquire()
        except _PG_ERRORS as exc:
            raise _pg_failure(exc) from exc
        try:
            yield conn
        finally:
            with contextlib.suppress(*_PG_ERRORS):
                await self._pool.release(conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self._acquire() as conn:
            tx = conn.transaction()
            try:
                await tx.start()
            except _PG_ERRORS as exc:
                raise _pg_failure(exc) from exc
            try:
                yield _PgSession(conn)
            except BaseException:
                with contextlib.suppress(*_PG_ERRORS):
                    await tx.rollback()
                raise
            try:
                await tx.commit()
            except _PG_ERRORS as exc:
                raise _pg_failure(exc) from exc

    async def stream(self, sql: str, *args: Any, batch: int = 5000) -> AsyncIterator[list[Row]]:
        async with self._acquire() as conn:
            tx = conn.transaction(readonly=True, isolation="repeatable_read")
            try:
                await tx.start()
                cursor = await conn.cursor(to_postgres(sql), *args)
            except _PG_ERRORS as exc:
                raise _pg_failure(exc) from exc
            try:
                while True:
                    try:
                        rows = await cursor.fetch(batch)
                    except _PG_ERRORS as exc:
                        raise _pg_failure(exc) from exc
                    if not rows:
                        return
                    yield [tuple(r) for r in rows]
            finally:
                with contextlib.suppress(*_PG_ERRORS):
                    await tx.rollback()

    async def close(self) -> None:
        with contextlib.suppress(*_PG_ERRORS):
            await asyncio.wait_for(self._pool.close(), 10.0)
