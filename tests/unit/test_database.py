"""The shared database layer, on the embedded SQLite and on the real PostgreSQL alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchyard.storage.database import (
    Database,
    Migration,
    SchemaTooNew,
    StorageError,
    open_database,
    to_postgres,
)
from switchyard.storage.settings import StorageSettings
from tests.databases import BACKENDS, storage_for

pytestmark = pytest.mark.anyio


def _items(version: int = 1) -> tuple[Migration, ...]:
    first = Migration(
        1,
        sqlite=("CREATE TABLE items (name TEXT PRIMARY KEY, size BIGINT, data BLOB)",),
        postgresql=("CREATE TABLE items (name TEXT PRIMARY KEY, size BIGINT, data BYTEA)",),
    )
    second = Migration(2, statements=("ALTER TABLE items ADD COLUMN note TEXT",))
    return (first, second)[:version]


@pytest.fixture(params=BACKENDS)
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StorageSettings]:
    async with storage_for(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def db(settings: StorageSettings) -> AsyncIterator[Database]:
    database = await open_database(settings)
    try:
        await database.migrate("items", _items())
        yield database
    finally:
        await database.close()


def test_placeholders_become_numbered_outside_quotes() -> None:
    assert to_postgres("SELECT ? , '?' , \"a?\" , ?") == "SELECT $1 , '?' , \"a?\" , $2"


async def test_statements_rows_and_types_round_trip(db: Database) -> None:
    assert (
        await db.execute("INSERT INTO items (name, size, data) VALUES (?, ?, ?)", "a", 1, b"\0x")
        == 1
    )
    await db.executemany(
        "INSERT INTO items (name, size, data) VALUES (?, ?, ?)",
        [("b", 2**40, None), ("c", -3, b"")],
    )
    rows = await db.fetch("SELECT name, size, data FROM items ORDER BY name")
    assert [(r[0], r[1], bytes(r[2]) if r[2] is not None else None) for r in rows] == [
        ("a", 1, b"\0x"),
        ("b", 2**40, None),
        ("c", -3, b""),
    ]
    assert await db.fetchone("SELECT size FROM items WHERE name = ?", "zzz") is None
    assert await db.execute("UPDATE items SET size = size + 1 WHERE size > ?", 0) == 2


async def test_a_transaction_commits_together_or_not_at_all(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items (name, size) VALUES (?, ?)", "kept", 1)
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name, size) VALUES (?, ?)", "gone", 1)
            raise RuntimeError("abort")
    with pytest.raises(StorageError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name, size) VALUES (?, ?)", "gone too", 1)
            await tx.execute("INSERT INTO items (name, size) VALUES (?, ?)", "kept", 2)
    assert await db.fetch("SELECT name FROM items ORDER BY name") == [("kept",)]


async def test_built_rows_are_inserted_together_or_not_at_all(db: Database) -> None:
    """`insert_built`: the rows `build()` returns commit as one transaction; a build that
    raises or a row the table refuses leaves nothing behind, and the connection is usable
    (no transaction left open) for the next write."""
    sql = "INSERT INTO items (name, size) VALUES (?, ?)"
    await db.insert_built(sql, lambda: [("a", 1), ("b", 2)])

    def broken() -> list[tuple[str, int]]:
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError):
        await db.insert_built(sql, broken)
    with pytest.raises(StorageError):  # "a" exists: the whole batch goes, "c" too
        await db.insert_built(sql, lambda: [("c", 3), ("a", 4)])
    await db.insert_built(sql, lambda: [("d", 5)])
    assert await db.fetch("SELECT name, size FROM items ORDER BY name") == [
        ("a", 1),
        ("b", 2),
        ("d", 5),
    ]


async def test_concurrent_statements_never_land_inside_a_transaction(db: Database) -> None:
    """A transaction that fails rolls back only its own statements, even with other writes
    of the same process racing it."""

    async def failing() -> None:
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO items (name, size) VALUES (?, ?)", "tx", 1)
                await asyncio.sleep(0)
                raise RuntimeError("abort")

    async def plain(i: int) -> None:
        await db.execute("INSERT INTO items (name, size) VALUES (?, ?)", f"plain-{i}", i)

    await asyncio.gather(failing(), *(plain(i) for i in range(20)))
    rows = await db.fetch("SELECT name FROM items ORDER BY name")
    assert len(rows) == 20 and ("tx",) not in rows


async def test_a_large_result_streams_in_bounded_chunks(db: Database) -> None:
    await db.executemany(
        "INSERT INTO items (name, size) VALUES (?, ?)", [(f"n{i:05d}", i) for i in range(2500)]
    )
    sizes = []
    seen = 0
    async for chunk in db.stream(
        "SELECT size FROM items WHERE size >= ? ORDER BY size", 100, batch=1000
    ):
        sizes.append(len(chunk))
        seen += sum(1 for _ in chunk)
    assert sizes == [1000, 1000, 400] and seen == 2400


async def test_migrations_are_versioned_idempotent_and_refuse_a_newer_schema(
    settings: StorageSettings,
) -> None:
    first = await open_database(settings)
    second = await open_database(settings)
    try:
        # Two processes starting together migrate once.
        assert await asyncio.gather(
            first.migrate("items", _items(1)), second.migrate("items", _items(1))
        ) == [1, 1]
        assert await first.schema_version("items") == 1
        assert await first.migrate("items", _items(2)) == 2
        await first.execute("INSERT INTO items (name, size, note) VALUES (?, ?, ?)", "x", 1, "n")
        assert await second.migrate("items", _items(2)) == 2  # nothing left to do
        assert await first.schema_version("other") is None
        with pytest.raises(SchemaTooNew, match="schema version 2; this Switchyard knows up to 1"):
            await second.migrate("items", _items(1))
    finally:
        await first.close()
        await second.close()


async def test_an_unreachable_postgresql_is_a_storage_error_without_the_url() -> None:
    from tests.harness import free_port

    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{free_port()}/test"
    with pytest.raises(StorageError) as caught:
        await open_database(StorageSettings(database_url=url), command_timeout=2.0)
    assert "hunter2" not in str(caught.value)
