"""The console's sessions table on both databases: what a row keeps, the bounds per principal and
in total, the purge of expired rows, sign-out, and one signing secret however many ask."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchyard.storage.console_sessions import TABLE, ConsoleSessionStore
from switchyard.storage.database import open_database
from tests.databases import BACKENDS, storage_for

pytestmark = pytest.mark.anyio
HOUR_MS = 3600 * 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ConsoleSessionStore]:
    async with storage_for(request.param, tmp_path) as settings:
        db = await open_database(settings)
        sessions = ConsoleSessionStore(db, per_principal=3, total=5)
        await sessions.migrate()
        await sessions.migrate()  # twice, as a second process does
        try:
            yield sessions
        finally:
            await db.close()


async def test_a_row_keeps_a_digest_of_the_id_and_no_credential(
    store: ConsoleSessionStore,
) -> None:
    sid, made = await store.create(
        "api_key#alice", "api_key", HOUR_MS, key_prefix="abcdefgh", key_fingerprint="f" * 64
    )
    rows = await store.db.fetch(f"SELECT * FROM {TABLE}")
    assert len(rows) == 1
    assert rows[0][0] == hashlib.sha256(sid.encode()).hexdigest()
    assert sid not in repr(rows)
    found = await store.get(sid)
    assert found == made and found.csrf == made.csrf
    assert found.key_prefix == "abcdefgh" and found.claims is None
    assert await store.get(sid + "x") is None
    assert await store.get(hashlib.sha256(sid.encode()).hexdigest()) is None  # the digest is no id
    # Another principal's session is another row, another CSRF token.
    other, theirs = await store.create(
        "https://issuer#bob", "jwt", HOUR_MS, claims={"name": "bob", "roles": ["admin"]}
    )
    assert theirs.csrf != made.csrf
    assert (await store.get(other)) == theirs
    assert theirs.claims == {"name": "bob", "roles": ["admin"]}
    # Sign-out deletes the one row.
    assert await store.delete(sid) is True
    assert await store.get(sid) is None and await store.get(other) is not None
    assert await store.delete(sid) is False


async def test_bounded_per_principal_and_in_total_oldest_first(store: ConsoleSessionStore) -> None:
    alice = [(await store.create("api_key#alice", "api_key", HOUR_MS))[0] for _ in range(4)]
    assert await store.get(alice[0]) is None  # three per principal: the oldest went
    assert [await store.get(s) is not None for s in alice[1:]] == [True, True, True]
    bob = [(await store.create("api_key#bob", "api_key", HOUR_MS))[0] for _ in range(3)]
    # Five in all: bob's sessions pushed out alice's oldest, never his own newest.
    assert await store.count() == 5
    assert await store.count("api_key#alice") == 2
    assert [await store.get(s) is not None for s in bob] == [True, True, True]
    assert await store.get(alice[1]) is None and await store.get(alice[3]) is not None


async def test_expired_sessions_are_not_served_and_are_purged(store: ConsoleSessionStore) -> None:
    gone, _ = await store.create("api_key#alice", "api_key", 0)
    assert await store.get(gone) is None
    assert await store.count() == 1  # still a row until the next session is made
    kept, _ = await store.create("api_key#bob", "api_key", HOUR_MS)
    assert await store.count() == 1 and await store.get(kept) is not None


async def test_one_signing_secret_for_every_caller(store: ConsoleSessionStore) -> None:
    secrets = await asyncio.gather(*(store.signing_secret() for _ in range(5)))
    assert len(set(secrets)) == 1 and len(secrets[0]) >= 43
