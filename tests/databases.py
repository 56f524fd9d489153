"""Real databases for tests: a fresh SQLite file, or a schema of its own in the shared
PostgreSQL (dropped afterwards), so concurrent runs never see each other's tables."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from switchyard.storage.settings import StorageSettings

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


@contextlib.asynccontextmanager
async def pg_schema(prefix: str = "sy_test") -> AsyncIterator[str]:
    """A fresh schema; yields the URL whose tables all land in it."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(PG_BASE)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    try:
        yield f"{PG_BASE}?search_path={schema}"
    finally:
        conn = await asyncpg.connect(PG_BASE)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def storage_for(backend: str, tmp: Path) -> AsyncIterator[StorageSettings]:
    if backend == "sqlite":
        yield StorageSettings(sqlite_path=tmp / f"db-{secrets.token_hex(4)}" / "switchyard.db")
        return
    async with pg_schema() as url:
        yield StorageSettings(database_url=url)
