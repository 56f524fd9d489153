"""API keys: format, digests, both real stores, verification, caching and revocation."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.auth import key_store, keys
from switchyard.auth.key_store import (
    ApiKeyVerifier,
    KeyStore,
    PostgresKeyStore,
    SqliteKeyStore,
    open_key_store,
)
from switchyard.auth.keys import KeyRecord, Principal

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("SWITCHYARD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]
URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

Opener = Callable[[], Awaitable[KeyStore]]


class _Backend:
    """One real database per test; every `open()` is a separate connection to it, as a second
    process (the CLI, another gateway) would have."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "keys.db"
        # Unique per test so parallel workers never share or drop each other's table.
        self.table = f"sy_test_keys_{uuid.uuid4().hex}"
        self.opened: list[KeyStore] = []

    async def open(self) -> KeyStore:
        store: KeyStore
        if self.kind == "sqlite":
            store = await SqliteKeyStore.open(self.path)
        else:
            store = await PostgresKeyStore.open(PG_DSN, table=self.table)
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.aclose()
        if self.kind == "postgres":
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f'DROP TABLE IF EXISTS "{self.table}"')
            finally:
                await conn.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[_Backend]:
    b = _Backend(request.param, tmp_path)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def store(backend: _Backend) -> KeyStore:
    return await backend.open()


class CountingStore:
    """A real store that counts lookups, to see what the verifier's cache saves."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner = inner
        self.lookups = 0

    async def create(self, *args: Any, **kwargs: Any) -> tuple[str, KeyRecord]:
        return await self.inner.create(*args, **kwargs)

    async def revoke(self, prefix: str) -> bool:
        return await self.inner.revoke(prefix)

    async def list(self) -> list[KeyRecord]:
        return await self.inner.list()

    async def lookup(self, prefix: str) -> KeyRecord | None:
        self.lookups += 1
        return await self.inner.lookup(prefix)

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- Format and digests ---------------------------------------------------------------------


def test_generated_keys_have_the_format_and_fresh_entropy() -> None:
    seen_prefixes, seen_secrets = set(), set()
    for _ in range(2000):
        plaintext, prefix, secret = keys.generate()
        assert plaintext == f"sy_{prefix}_{secret}"
        assert len(plaintext) == keys.KEY_LEN
        assert keys.PREFIX_RE.fullmatch(prefix)
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32
        parsed = keys.parse(plaintext)
        assert parsed is not None
        assert (parsed.prefix, parsed.secret) == (prefix, secret)
        seen_prefixes.add(prefix)
        seen_secrets.add(secret)
    # 40-bit prefixes: a collision among 2000 has odds around 2e-6.
    assert len(seen_prefixes) == 2000
    assert len(seen_secrets) == 2000


def test_digest_is_not_the_key_and_stays_out_of_reprs() -> None:
    plaintext, prefix, secret = keys.generate()
    d = keys.secret_digest(prefix, secret)
    assert len(d) == 32
    for form in (d, d.hex().encode()):
        assert secret.encode() not in form
        assert plaintext.encode() not in form
    # Bound to the prefix: the same secret under another prefix digests differently.
    assert keys.secret_digest("aaaaaaaa", secret) != keys.secret_digest("bbbbbbbb", secret)
    now = datetime.now(UTC)
    record = KeyRecord(prefix, "alice", ("admin",), {}, now, None, None, digest=d)
    assert record.matches(secret)
    assert not record.matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert d.hex() not in repr(record)
    assert repr(d) not in repr(record)
    assert secret not in repr(keys.parse(plaintext))


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "sy_",
        "sy_abcdefgh_",
        "sy_abcdefgh",
        "sk_abcdefgh_" + "A" * 43,
        "SY_abcdefgh_" + "A" * 43,
        "sy_ABCDEFGH_" + "A" * 43,  # prefixes are lowercase
        "sy_abcdefg1_" + "A" * 43,  # 1 is not base32
        "sy_abcdefgh_" + "A" * 42,
        "sy_abcdefgh_" + "A" * 44,
        "sy_abcdefgh_" + "A" * 42 + "=",
        "sy_abcdefgh_" + "A" * 42 + "\n",
        " sy_abcdefgh_" + "A" * 42,
        "sy_abcdefgh_" + "A" * 42 + "é",
        "sy_abcdefgh_" + "A" * 10_000,
    ],
)
def test_parse_refuses_anything_not_shaped_like_a_key(presented: str) -> None:
    assert keys.parse(presented) is None


def test_parse_expires() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert keys.parse_expires("90m", now) == now + timedelta(minutes=90)
    assert keys.parse_expires("12h", now) == now + timedelta(hours=12)
    assert keys.parse_expires("30d", now) == now + timedelta(days=30)
    assert keys.parse_expires("2w", now) == now + timedelta(weeks=2)
    assert keys.parse_expires("2030-02-01", now) == datetime(2030, 2, 1, tzinfo=UTC)
    assert keys.parse_expires("2030-02-01T10:00:00+02:00", now) == datetime(
        2030, 2, 1, 8, tzinfo=UTC
    )
    assert keys.parse_expires("2030-02-01T10:00:00", now) == datetime(2030, 2, 1, 10, tzinfo=UTC)
    for bad in ("0d", "-1d", "30", "30y", "1.5h", "tomorrow", "", "2029-12-31", "2030-01-01"):
        with pytest.raises(ValueError):
            keys.parse_expires(bad, now)


def test_names_are_checked() -> None:
    assert keys.normalize_roles(["a", "b", "a"]) == ("a", "b")
    for bad in ("", "  ", "x\ny", "x" * 201):
        with pytest.raises(ValueError):
            keys.check_name("principal", bad)
    with pytest.raises(ValueError):
        keys.normalize_attributes({"": "x"})
    with pytest.raises(ValueError):
        keys.normalize_attributes({"k": "a\x00b"})


def test_records_and_principals_are_immutable() -> None:
    attrs = {"team": "core"}
    p = Principal("alice", ("admin",), attrs, "abcdefgh")
    attrs["team"] = "other"
    assert p.attributes == {"team": "core"}
    with pytest.raises(TypeError):
        p.attributes["team"] = "x"  # type: ignore[index]


def test_verifier_refuses_a_cache_ttl_that_breaks_the_revocation_promise(tmp_path: Path) -> None:
    store = SqliteKeyStore(tmp_path / "k.db")
    with pytest.raises(ValueError):
        ApiKeyVerifier(store, cache_ttl_s=10)
    with pytest.raises(ValueError):
        ApiKeyVerifier(store, cache_ttl_s=-1)


def test_postgres_table_names_are_identifiers() -> None:
    PostgresKeyStore(PG_DSN, table="keys")
    PostgresKeyStore(PG_DSN, table="auth.keys")
    for bad in ('x"; drop table y; --', "1abc", "a.b.c", "", "a b"):
        with pytest.raises(ValueError):
            PostgresKeyStore(PG_DSN, table=bad)
    assert "postgres@" not in repr(PostgresKeyStore("postgresql://u:hunter2@h/db"))
    assert "hunter2" not in repr(PostgresKeyStore("postgresql://u:hunter2@h/db"))


# --- Stores, against the real databases -----------------------------------------------------


async def test_store_round_trip(store: KeyStore) -> None:
    expires = datetime.now(UTC) + timedelta(days=30)
    plaintext, record = await store.create(
        "alice", ["admin", "ops", "admin"], {"team": "core"}, expires
    )
    parsed = keys.parse(plaintext)
    assert parsed is not None
    assert record.prefix == parsed.prefix
    assert record.roles == ("admin", "ops")
    assert record.matches(parsed.secret)
    found = await store.lookup(record.prefix)
    assert found == record
    assert found is not None
    assert found.digest == record.digest
    assert found.expires_at == expires
    assert found.created_at.tzinfo is not None
    assert dict(found.attributes) == {"team": "core"}
    _, other = await store.create("bob")
    assert [r.prefix for r in await store.list()] == [record.prefix, other.prefix]
    assert other.roles == ()
    assert other.expires_at is None
    assert await store.lookup("zzzzzzzz") is None


async def test_store_revoke(store: KeyStore) -> None:
    _, record = await store.create("alice")
    assert await store.revoke(record.prefix) is True
    assert await store.revoke(record.prefix) is False
    assert await store.revoke("zzzzzzzz") is False
    found = await store.lookup(record.prefix)
    assert found is not None
    assert found.revoked_at is not None
    assert found.revoked


async def test_store_refuses_bad_input(store: KeyStore) -> None:
    with pytest.raises(ValueError):
        await store.create("")
    with pytest.raises(ValueError):
        await store.create("alice", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(ValueError):
        await store.create("alice", expires_at=datetime(2099, 1, 1))
    assert await store.list() == []


async def test_store_survives_a_prefix_collision(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, record = await store.create("alice")
    fresh = keys.generate()
    queue = [(first, record.prefix, first.split("_", 2)[2]), fresh]
    real = keys.generate
    monkeypatch.setattr(keys, "generate", lambda: queue.pop(0) if queue else real())
    plaintext, second = await store.create("bob")
    assert plaintext == fresh[0]
    assert second.prefix != record.prefix
    assert [r.principal for r in await store.list()] == ["alice", "bob"]


async def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    store = await open_key_store(data_dir=tmp_path / "data")
    try:
        await store.create("alice")
    finally:
        await store.aclose()
    path = tmp_path / "data" / "keys.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes()[18:20] == b"\x02\x02"  # WAL read/write versions in the header


async def test_closed_store_fails_loudly(backend: _Backend) -> None:
    store = await backend.open()
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.lookup("abcdefgh")


# --- Verification ---------------------------------------------------------------------------


async def test_verify(store: KeyStore) -> None:
    plaintext, record = await store.create("alice", ["admin"], {"team": "core"})
    verifier = ApiKeyVerifier(store)
    principal = await verifier.verify(plaintext)
    assert principal == Principal("alice", ("admin",), {"team": "core"}, record.prefix)
    wrong = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    assert await verifier.verify(wrong) is None
    _, unknown_prefix, secret = keys.generate()
    assert await verifier.verify(f"sy_{unknown_prefix}_{secret}") is None
    assert await verifier.verify(f"sy_{record.prefix}_{secret}") is None
    assert await verifier.verify(plaintext + "x") is None
    assert await verifier.verify("") is None
    assert await verifier.verify(plaintext.upper()) is None


async def test_verify_refuses_expired_keys(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    plaintext, _ = await store.create("alice", expires_at=datetime.now(UTC) + timedelta(hours=1))
    verifier = ApiKeyVerifier(store)
    assert await verifier.verify(plaintext) is not None
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    monkeypatch.setattr(key_store, "_now", lambda: later)
    # Expiry is checked against the clock on every request, cache or no cache.
    assert await verifier.verify(plaintext) is None


async def test_verify_refuses_revoked_keys(store: KeyStore) -> None:
    plaintext, record = await store.create("alice")
    await store.revoke(record.prefix)
    assert await ApiKeyVerifier(store).verify(plaintext) is None


async def _until(
    check: Callable[[], Awaitable[bool]], deadline_s: float, step_s: float = 0.02
) -> float:
    """Seconds until `check()` holds, polling; fails past the deadline."""
    start = time.monotonic()
    while not await check():
        elapsed = time.monotonic() - start
        assert elapsed < deadline_s, f"not within {deadline_s} s"
        await asyncio.sleep(step_s)
    return time.monotonic() - start


async def test_revocation_elsewhere_takes_effect_within_the_cache_ttl(backend: _Backend) -> None:
    gateway_store = CountingStore(await backend.open())
    cli_store = await backend.open()  # another connection, as the CLI would have
    ttl = 0.2
    verifier = ApiKeyVerifier(gateway_store, cache_ttl_s=ttl)
    plaintext, record = await cli_store.create("alice")
    assert await verifier.verify(plaintext) is not None
    assert await verifier.verify(plaintext) is not None
    assert gateway_store.lookups == 1  # the second request was served from the cache
    assert await cli_store.revoke(record.prefix)
    took = await _until(lambda: _refused(verifier, plaintext), deadline_s=ttl + 1.0)
    assert took <= ttl + 1.0


async def _refused(verifier: ApiKeyVerifier, plaintext: str) -> bool:
    return await verifier.verify(plaintext) is None


async def test_unknown_prefixes_are_cached_too(
    backend: _Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_store = CountingStore(await backend.open())
    cli_store = await backend.open()
    ttl = 0.2
    verifier = ApiKeyVerifier(gateway_store, cache_ttl_s=ttl)
    upcoming = keys.generate()
    assert await verifier.verify(upcoming[0]) is None
    assert await verifier.verify(upcoming[0]) is None
    assert gateway_store.lookups == 1
    monkeypatch.setattr(keys, "generate", lambda: upcoming)
    await cli_store.create("alice")

    async def accepted() -> bool:
        return await verifier.verify(upcoming[0]) is not None

    await _until(accepted, deadline_s=ttl + 1.0)


async def test_concurrent_lookups_of_one_prefix_share_a_query(store: KeyStore) -> None:
    plaintext, _ = await store.create("alice")
    counting = CountingStore(store)
    verifier = ApiKeyVerifier(counting)
    results = await asyncio.gather(*(verifier.verify(plaintext) for _ in range(20)))
    assert all(p is not None and p.name == "alice" for p in results)
    assert counting.lookups == 1


async def test_cache_is_bounded(tmp_path: Path) -> None:
    store = await SqliteKeyStore.open(tmp_path / "keys.db")
    try:
        verifier = ApiKeyVerifier(store, max_cached=3)
        for _ in range(10):
            assert await verifier.verify(keys.generate()[0]) is None
        assert len(verifier._cache) <= 3
    finally:
        await store.aclose()


async def test_store_failure_propagates_without_the_key(backend: _Backend) -> None:
    store = await backend.open()
    plaintext, _ = await store.create("alice")
    verifier = ApiKeyVerifier(store)
    await store.aclose()
    with pytest.raises(RuntimeError) as caught:
        await verifier.verify(plaintext)
    secret = plaintext.split("_", 2)[2]
    rendered = "".join(
        str(e) + repr(e) for e in (caught.value, caught.value.__cause__, caught.value.__context__)
    )
    assert secret not in rendered


# --- Property: only the exact key authenticates ---------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
def test_only_the_exact_key_yields_a_principal(kind: str, tmp_path: Path) -> None:
    with asyncio.Runner() as runner:
        b = _Backend(kind, tmp_path)
        try:
            store = runner.run(b.open())
            key, _ = runner.run(store.create("alice", ["admin"]))
            revoked, revoked_record = runner.run(store.create("mallory"))
            runner.run(store.revoke(revoked_record.prefix))
            prefix = key.split("_", 2)[1]
            verifier = ApiKeyVerifier(store, cache_ttl_s=0.5)

            def edit(i: int, c: str, how: int) -> str:
                i %= len(key)
                if how == 0:
                    return key[:i] + c + key[i + 1 :]
                if how == 1:
                    return key[:i] + key[i + 1 :]
                return key[:i] + c + key[i:]

            candidates = st.one_of(
                st.text(max_size=120),
                st.just(key),
                st.just(revoked),
                st.builds(edit, st.integers(0, 200), st.characters(), st.integers(0, 2)),
                st.text(URLSAFE, min_size=43, max_size=43).map(lambda s: f"sy_{prefix}_{s}"),
                st.text(max_size=5).map(lambda s: key + s),
                st.text(max_size=5).map(lambda s: s + key),
                st.just(key.upper()),
            )

            @settings(
                max_examples=300,
                deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture],
            )
            @given(candidates)
            def prop(presented: str) -> None:
                principal = runner.run(verifier.verify(presented))
                if presented == key:
                    assert principal is not None
                    assert principal.name == "alice"
                else:
                    assert principal is None

            prop()
        finally:
            runner.run(b.close())
