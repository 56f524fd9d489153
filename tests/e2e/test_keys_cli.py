"""`switchyard keys` as a real process against real SQLite and PostgreSQL stores: a key is
shown once, stored only as a digest, and its revocation reaches a running verifier in 5 s."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from switchyard.auth import keys
from switchyard.auth.key_store import ApiKeyVerifier, KeyStore, open_key_store

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PG_DSN = os.environ.get("SWITCHYARD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Run:
    rc: int
    out: str
    err: str


@dataclass
class Cli:
    """The keys CLI in a subprocess, pointed at one store; keeps every output it saw."""

    kind: str
    tmp_path: Path
    table: str = field(default_factory=lambda: f"sy_test_cli_{uuid.uuid4().hex}")
    outputs: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.tmp_path / "data"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        if self.kind == "sqlite":
            env["SWITCHYARD_DATA_DIR"] = str(self.data_dir)
        else:
            # The DSN through the environment, as operators should pass it; the store follows.
            env["SWITCHYARD_DATABASE_URL"] = PG_DSN
        return env

    async def __call__(self, *args: str) -> Run:
        extra = ["--table", self.table] if self.kind == "postgres" else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "switchyard.auth.keys_cli",
            *args,
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
            cwd=self.tmp_path,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        run = Run(proc.returncode, out.decode(), err.decode())
        self.outputs += [run.out, run.err]
        return run

    async def open_store(self) -> KeyStore:
        if self.kind == "sqlite":
            return await open_key_store(data_dir=self.data_dir)
        return await open_key_store(dsn=PG_DSN, table=self.table)

    async def stored_bytes(self) -> bytes:
        """Everything the store holds, as raw as it can be had."""
        if self.kind == "sqlite":
            return b"".join(p.read_bytes() for p in sorted(self.data_dir.iterdir()))
        conn = await asyncpg.connect(PG_DSN)
        try:
            rows = await conn.fetch(f'SELECT row_to_json(t)::text AS j FROM "{self.table}" t')
        finally:
            await conn.close()
        return "\n".join(r["j"] for r in rows).encode()


@pytest.fixture(params=["sqlite", "postgres"])
async def cli(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cli]:
    c = Cli(request.param, tmp_path)
    try:
        yield c
    finally:
        if c.kind == "postgres":
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f'DROP TABLE IF EXISTS "{c.table}"')
            finally:
                await conn.close()


async def test_create_list_revoke(cli: Cli) -> None:
    created = await cli(
        "create", "--principal", "alice", "--role", "admin", "--role", "ops",
        "--attr", "team=core", "--expires", "30d",
    )  # fmt: skip
    assert created.rc == 0, created.err
    lines = created.out.splitlines()
    assert len(lines) == 1
    key = lines[0]
    parsed = keys.parse(key)
    assert parsed is not None
    prefix, secret = parsed.prefix, parsed.secret
    assert "will not be shown again" in created.err
    assert prefix in created.err
    assert secret not in created.err

    bob = await cli("create", "--principal", "bob")
    assert bob.rc == 0, bob.err
    bob_key = bob.out.strip()
    bob_parsed = keys.parse(bob_key)
    assert bob_parsed is not None

    listed = await cli("list")
    assert listed.rc == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == ["PREFIX", "PRINCIPAL", "ROLES", "CREATED", "EXPIRES", "REVOKED"]
    assert rows[0].split()[:3] == [prefix, "alice", "admin,ops"]
    assert rows[0].split()[5] == "-"
    assert rows[1].split()[:3] == [bob_parsed.prefix, "bob", "-"]

    as_json = await cli("list", "--json")
    assert as_json.rc == 0, as_json.err
    records = [json.loads(line) for line in as_json.out.splitlines()]
    assert records[0]["prefix"] == prefix
    assert records[0]["attributes"] == {"team": "core"}
    assert records[0]["expires"] is not None
    assert records[0]["revoked"] is None
    assert all(set(r) == {
        "prefix", "principal", "roles", "attributes", "created", "expires", "revoked"
    } for r in records)  # fmt: skip

    # The store has the digest only; the listings have not even that.
    stored = await cli.stored_bytes()
    digest = keys.secret_digest(prefix, secret)
    for s, k in ((secret, key), (bob_parsed.secret, bob_key)):
        assert s.encode() not in stored
        assert k.encode() not in stored
    assert digest.hex() not in listed.out + as_json.out

    # A gateway holding the key in its cache sees the CLI's revocation within 5 s.
    store = await cli.open_store()
    try:
        verifier = ApiKeyVerifier(store)  # the default cache TTL
        principal = await verifier.verify(key)
        assert principal is not None
        assert (principal.name, principal.roles) == ("alice", ("admin", "ops"))
        assert dict(principal.attributes) == {"team": "core"}

        revoked = await cli("revoke", prefix)
        assert revoked.rc == 0, revoked.err
        start = time.monotonic()
        while await verifier.verify(key) is not None:
            assert time.monotonic() - start < 5.0, "revocation not effective within 5 s"
            await asyncio.sleep(0.05)
        assert await verifier.verify(bob_key) is not None
    finally:
        await store.aclose()

    again = await cli("revoke", prefix)
    assert again.rc == 0
    assert "already revoked" in again.err
    unknown = await cli("revoke", "zzzzzzzz")
    assert unknown.rc == 1
    assert "no key" in unknown.err
    bad = await cli("revoke", "not-a-prefix")
    assert bad.rc == 2
    assert "not-a-prefix" not in bad.err

    # A pasted whole key revokes by its prefix and is not repeated back.
    pasted = await cli("revoke", bob_key)
    assert pasted.rc == 0, pasted.err
    assert bob_parsed.secret not in pasted.err

    final = await cli("list", "--json")
    assert [r["revoked"] is not None for r in map(json.loads, final.out.splitlines())] == [
        True,
        True,
    ]

    # Each secret appeared exactly once: on its own create's stdout.
    everything = "\n".join(cli.outputs)
    assert everything.count(secret) == 1
    assert everything.count(bob_parsed.secret) == 1


async def test_bad_arguments_touch_no_store(cli: Cli) -> None:
    for args in (
        ("create", "--principal", "alice", "--expires", "2001-01-01"),
        ("create", "--principal", "alice", "--expires", "soon"),
        ("create", "--principal", ""),
        ("create", "--principal", "alice", "--attr", "novalue"),
    ):
        run = await cli(*args)
        assert run.rc == 2, args
        assert run.out == ""
    if cli.kind == "sqlite":
        assert not cli.data_dir.exists()


async def test_sqlite_default_is_var_under_the_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchyard.auth.keys_cli", "create", "--principal", "alice",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert keys.parse(out.decode().strip()) is not None
    assert (tmp_path / "var" / "keys.db").is_file()


async def test_postgres_without_a_dsn_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchyard.auth.keys_cli", "list", "--store", "postgres",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"SWITCHYARD_DATABASE_URL" in err
