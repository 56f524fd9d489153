"""The audit trail against an attacker who can write to its database: every kind of tampering
is detected with its exact kind, stream and position, on SQLite and on PostgreSQL; a clean
trail (two writers, a key rotation, retention) verifies without a false alarm."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from switchyard.audit import store
from switchyard.audit.canonical import canonical
from switchyard.audit.keyring import KeyRing, key_id
from switchyard.audit.record import link, timestamp
from switchyard.audit.settings import AuditSettings, RawArgumentsRule
from switchyard.audit.verify import Report, verify
from switchyard.audit.writer import AuditWriter
from switchyard.observability import decisions
from switchyard.observability.decisions import Decision
from switchyard.observability.logging import write_decision
from switchyard.storage.database import Database, StorageError, open_database
from switchyard.storage.settings import StorageSettings
from switchyard.wire.frame import Raw
from tests.databases import BACKENDS, storage_for

pytestmark = pytest.mark.anyio

HMAC_KEY = b"audit-test-hmac-key-0123456789ab"


@dataclasses.dataclass
class Trail:
    storage: StorageSettings
    settings: AuditSettings
    db: Database

    def writer(self, writer_id: str, **changes: Any) -> AuditWriter:
        return AuditWriter(
            dataclasses.replace(self.settings, writer_id=writer_id, **changes), self.storage
        )

    async def write(self, writer_id: str, count: int, **changes: Any) -> AuditWriter:
        writer = self.writer(writer_id, **changes)
        await writer.start()
        try:
            for i in range(count):
                writer.submit(decision(i))
        finally:
            await writer.stop()
        assert writer.written == count
        return writer

    async def verify(self) -> Report:
        return await verify(self.db, KeyRing(self.settings.keys_dir).public_keys())

    async def first(self) -> tuple[str, str | None, int | None, int | None]:
        report = await self.verify()
        found = report.first
        assert found is not None, "tampering went unnoticed"
        return found.kind, found.writer, found.seq, found.checkpoint

    async def attack(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Run statements as the database's owner: the append-only triggers switched off."""
        tables = ("audit_records", "audit_checkpoints", "audit_markers", "audit_writers")
        async with self.db.transaction() as tx:
            if tx.dialect == "postgresql":
                for table in tables:
                    await tx.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            else:
                for (name,) in await tx.fetch(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'"
                ):
                    await tx.execute(f"DROP TRIGGER {name}")
            for sql, args in statements:
                await tx.execute(sql, *args)
            if tx.dialect == "postgresql":
                for table in tables:
                    await tx.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")

    async def row(self, writer: str, seq: int) -> tuple[Any, ...]:
        found = await self.db.fetchone(
            "SELECT prev, hash, record, ts FROM audit_records WHERE writer = ? AND seq = ?",
            writer,
            seq,
        )
        assert found is not None
        return found


def decision(i: int, **fields: Any) -> Decision:
    return Decision(
        at=time.time(),
        decision="allow",
        outcome="ok",
        method="tools/call",
        request_id=f"{i}".encode(),
        principal="alice",
        issuer="api_key",
        via="api_key",
        face="streamable-http",
        era="modern",
        backend="clock",
        target="clock_now",
        name="now",
        latency_ms=1.5,
        request_bytes=40,
        result_bytes=80,
        arguments=Raw(b'{"zone": "UTC", "n": %d}' % i),
        **fields,
    )


@pytest.fixture(params=BACKENDS)
async def trail(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Trail]:
    async with storage_for(request.param, tmp_path) as storage:
        settings = AuditSettings(
            hmac_key=HMAC_KEY,
            keys_dir=tmp_path / "keys",
            checkpoint_every=10,
            checkpoint_interval_s=3600.0,
            flush_interval_s=0.01,
            batch_size=10,
        )
        # The schema exists before the attacker's connection looks at it.
        db = await open_database(storage)
        try:
            await store.migrate(db)
            yield Trail(storage, settings, db)
        finally:
            await db.close()


async def written(trail: Trail, count: int = 30) -> None:
    await trail.write("w-a", count)
    report = await trail.verify()
    assert report.ok, report.breaks
    stream = report.streams["w-a"]
    assert (stream.records, stream.last_seq, stream.anchored_seq, stream.final) == (
        count,
        count,
        count,
        True,
    )


def _forge(record: dict[str, Any], prev: str) -> tuple[str, str]:
    body = canonical(record)
    return link(prev, body), body.decode()


# --- a clean trail ------------------------------------------------------------------------


async def test_records_hold_the_decision_and_a_digest_of_the_arguments(trail: Trail) -> None:
    await written(trail, 3)
    _, _, text, _ = await trail.row("w-a", 2)
    record = json.loads(text)
    # HMAC over the arguments' canonical form, not the client's spelling of them.
    expected_digest = hmac.new(HMAC_KEY, b'{"n":1,"zone":"UTC"}', hashlib.sha256).hexdigest()
    assert record == {
        "v": 1,
        "event": "decision",
        "writer": "w-a",
        "seq": 2,
        "ts": record["ts"],
        "request_id": "1",
        "trace_id": None,
        "principal": "api_key#alice",
        "via": "api_key",
        "view": None,
        "face": "streamable-http",
        "era": "modern",
        "method": "tools/call",
        "backend": "clock",
        "name": "now",
        "public": "clock_now",
        "decision": "allow",
        "reason": None,
        "outcome": "ok",
        "status": None,
        "latency_us": 1500,
        "request_bytes": 40,
        "result_bytes": 80,
        "args_hmac": expected_digest,
    }
    assert canonical(record).decode() == text  # stored in its canonical form
    assert HMAC_KEY.decode() not in text


async def test_raw_arguments_only_where_a_rule_asks(trail: Trail) -> None:
    rule = RawArgumentsRule(principals=("api_key#alice",), names=("now",))
    writer = trail.writer("w-raw", raw_arguments=(rule,))
    await writer.start()
    writer.submit(decision(1))
    writer.submit(decision(2, view="other"))
    writer.submit(dataclasses.replace(decision(3), principal="bob"))
    await writer.stop()
    rows = await trail.db.fetch(
        "SELECT record FROM audit_records WHERE writer = 'w-raw' ORDER BY seq"
    )
    kept = [json.loads(r[0]).get("args") for r in rows]
    assert kept == [{"n": 1, "zone": "UTC"}, {"n": 2, "zone": "UTC"}, None]


async def test_two_writers_and_a_key_rotation_verify_clean(trail: Trail) -> None:
    a = trail.writer("w-a")
    b = trail.writer("w-b")
    await a.start()
    await b.start()
    first_key = KeyRing(trail.settings.keys_dir).current_id()
    for i in range(15):
        a.submit(decision(i))
        b.submit(decision(100 + i))
    await _drained(a, b)
    rotated = KeyRing(trail.settings.keys_dir).generate()
    for i in range(15, 30):
        a.submit(decision(i))
        b.submit(decision(100 + i))
    await a.stop()
    await b.stop()
    report = await trail.verify()
    assert report.ok, report.breaks
    assert {w: s.records for w, s in report.streams.items()} == {"w-a": 30, "w-b": 30}
    keys = {r[0] for r in await trail.db.fetch("SELECT DISTINCT key_id FROM audit_checkpoints")}
    assert keys == {first_key, rotated}


async def _drained(*writers: AuditWriter) -> None:
    deadline = time.monotonic() + 10
    while any(w.pending for w in writers):
        assert time.monotonic() < deadline, "records never written"
        await asyncio.sleep(0.01)


async def test_retention_deletes_whole_prefixes_and_leaves_a_signed_marker(trail: Trail) -> None:
    await written(trail, 25)
    pruner = trail.writer("w-pruner")
    await pruner.start()
    try:
        removed = await pruner.retain(timestamp(time.time() + 5))
    finally:
        await pruner.stop()
    assert removed == 25
    assert await trail.db.fetch("SELECT seq FROM audit_records WHERE writer = 'w-a'") == []
    report = await trail.verify()
    assert report.ok, report.breaks
    # After retention, the stream still detects a cut: delete what retention left of w-b.
    await trail.write("w-b", 12)
    await trail.attack(("DELETE FROM audit_records WHERE writer = 'w-b' AND seq > 6", ()))
    assert await trail.first() == ("truncated_tail", "w-b", 7, None)


async def test_the_tables_refuse_updates_and_deletes_outside_retention(trail: Trail) -> None:
    await written(trail, 3)
    for sql in (
        "UPDATE audit_records SET record = 'x' WHERE seq = 1",
        "DELETE FROM audit_records WHERE seq = 1",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_writers SET pid = 0",
    ):
        with pytest.raises(StorageError, match="append-only"):
            await trail.db.execute(sql)
    if trail.db.dialect == "postgresql":
        with pytest.raises(StorageError, match="append-only"):
            await trail.db.execute("TRUNCATE audit_records")
    assert (await trail.verify()).ok


async def test_decisions_reach_the_writer_through_the_observability_sink(trail: Trail) -> None:
    writer = trail.writer("w-sink")
    await writer.start()
    try:
        write_decision(
            decision="deny",
            outcome=401,
            status=401,
            reason="missing credential",
            method="HTTP POST /mcp",
            face="http",
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        )
    finally:
        await writer.stop()
    assert not decisions.wanted()
    [(text,)] = await trail.db.fetch("SELECT record FROM audit_records WHERE writer = 'w-sink'")
    record = json.loads(text)
    assert (record["decision"], record["outcome"], record["status"], record["trace_id"]) == (
        "deny",
        401,
        401,
        "4bf92f3577b34da6a3ce929d0e0e4736",
    )
    assert record["principal"] is None and record["args_hmac"] is None


# --- the tamper suite ---------------------------------------------------------------------


async def test_edit_of_a_field_is_detected(trail: Trail) -> None:
    await written(trail)
    _, _, text, _ = await trail.row("w-a", 12)
    await trail.attack(
        (
            "UPDATE audit_records SET record = ? WHERE writer = 'w-a' AND seq = 12",
            (text.replace('"decision":"allow"', '"decision":"deny"'),),
        )
    )
    assert await trail.first() == ("edit", "w-a", 12, None)


async def test_edit_with_a_recomputed_hash_is_detected(trail: Trail) -> None:
    await written(trail)
    prev, _, text, _ = await trail.row("w-a", 12)
    record = json.loads(text)
    record["principal"] = "api_key#mallory"
    digest, body = _forge(record, prev)
    await trail.attack(
        (
            "UPDATE audit_records SET record = ?, hash = ? WHERE writer = 'w-a' AND seq = 12",
            (body, digest),
        )
    )
    assert await trail.first() == ("edit", "w-a", 12, None)


async def test_delete_of_a_middle_record_is_detected(trail: Trail) -> None:
    await written(trail)
    await trail.attack(("DELETE FROM audit_records WHERE writer = 'w-a' AND seq = 12", ()))
    assert await trail.first() == ("delete", "w-a", 12, None)


async def test_insert_of_a_forged_record_is_detected(trail: Trail) -> None:
    await written(trail)
    prev, _, text, ts = await trail.row("w-a", 13)
    forged = json.loads(text)
    forged["principal"] = "api_key#mallory"
    digest, body = _forge(forged, prev)
    await trail.attack(
        (
            "INSERT INTO audit_records (writer, seq, ts, prev, hash, record) "
            "VALUES ('w-a', 13, ?, ?, ?, ?)",
            (ts, prev, digest, body),
        )
    )
    assert await trail.first() == ("insert", "w-a", 13, None)


async def test_reorder_of_two_records_is_detected(trail: Trail) -> None:
    await written(trail)
    await trail.attack(
        ("UPDATE audit_records SET seq = -1 WHERE writer = 'w-a' AND seq = 12", ()),
        ("UPDATE audit_records SET seq = 12 WHERE writer = 'w-a' AND seq = 13", ()),
        ("UPDATE audit_records SET seq = 13 WHERE writer = 'w-a' AND seq = -1", ()),
    )
    assert await trail.first() == ("reorder", "w-a", 12, None)


async def test_replay_of_an_old_record_is_detected(trail: Trail) -> None:
    await written(trail)
    prev, digest, text, ts = await trail.row("w-a", 5)
    await trail.attack(
        (
            "INSERT INTO audit_records (writer, seq, ts, prev, hash, record) "
            "VALUES ('w-a', 31, ?, ?, ?, ?)",
            (ts, prev, digest, text),
        )
    )
    assert await trail.first() == ("replay", "w-a", 5, None)


async def test_truncation_of_the_tail_is_detected(trail: Trail) -> None:
    await written(trail)
    await trail.attack(("DELETE FROM audit_records WHERE writer = 'w-a' AND seq > 25", ()))
    assert await trail.first() == ("truncated_tail", "w-a", 26, None)


async def test_truncation_of_everything_is_detected(trail: Trail) -> None:
    await written(trail)
    await trail.attack(("DELETE FROM audit_records", ()))
    assert await trail.first() == ("truncated_all", "w-a", 1, None)


async def test_truncation_of_records_and_checkpoints_is_detected_by_the_anchor(
    trail: Trail, tmp_path: Path
) -> None:
    anchor = tmp_path / "anchor.jsonl"
    await trail.write("w-a", 30, anchor_file=anchor)
    await trail.attack(
        ("DELETE FROM audit_records WHERE seq > 20", ()),
        ("DELETE FROM audit_checkpoints WHERE seq > 20", ()),
    )
    assert (await trail.verify()).ok  # the database alone cannot tell
    report = await verify(trail.db, KeyRing(trail.settings.keys_dir).public_keys(), anchor=anchor)
    assert report.first is not None
    assert (report.first.kind, report.first.writer, report.first.seq) == (
        "truncated_tail",
        "w-a",
        21,
    )


async def test_a_lost_writer_stream_is_detected(trail: Trail) -> None:
    a = trail.writer("w-a")
    b = trail.writer("w-b")
    await a.start()
    await b.start()
    for i in range(12):
        a.submit(decision(i))
        b.submit(decision(i))
    await a.stop()
    await b.stop()
    assert (await trail.verify()).ok
    await trail.attack(
        ("DELETE FROM audit_records WHERE writer = 'w-b'", ()),
        ("DELETE FROM audit_checkpoints WHERE writer = 'w-b'", ()),
        ("DELETE FROM audit_writers WHERE writer = 'w-b'", ()),
    )
    assert await trail.first() == ("stream_lost", "w-b", None, None)


async def test_a_checkpoint_signed_by_an_unknown_key_is_detected(trail: Trail) -> None:
    await written(trail)
    [(body,)] = await trail.db.fetch(
        "SELECT body FROM audit_checkpoints WHERE writer = 'w-a' AND cseq = 3"
    )
    mallory = Ed25519PrivateKey.generate()
    forged = json.loads(body)
    forged["key_id"] = key_id(mallory.public_key())
    text = canonical(forged)
    await trail.attack(
        (
            "UPDATE audit_checkpoints SET body = ?, sig = ?, key_id = ? "
            "WHERE writer = 'w-a' AND cseq = 3",
            (text.decode(), mallory.sign(text).hex(), forged["key_id"]),
        )
    )
    assert await trail.first() == ("unknown_key", "w-a", None, 3)


async def test_a_forged_checkpoint_signature_is_detected(trail: Trail) -> None:
    await written(trail)
    [(body,)] = await trail.db.fetch(
        "SELECT body FROM audit_checkpoints WHERE writer = 'w-a' AND cseq = 2"
    )
    await trail.attack(
        (
            "UPDATE audit_checkpoints SET body = ? WHERE writer = 'w-a' AND cseq = 2",
            (body.replace('"final":false', '"final":true'),),
        )
    )
    assert await trail.first() == ("bad_signature", "w-a", None, 2)


async def test_a_record_of_an_unknown_schema_version_is_reported_as_such(trail: Trail) -> None:
    await written(trail)
    prev, _, text, _ = await trail.row("w-a", 12)
    record = json.loads(text)
    record["v"] = 2
    digest, body = _forge(record, prev)
    await trail.attack(
        (
            "UPDATE audit_records SET record = ?, hash = ? WHERE writer = 'w-a' AND seq = 12",
            (body, digest),
        )
    )
    assert await trail.first() == ("schema_change", "w-a", 12, None)


async def test_tables_of_a_newer_schema_version_are_reported_as_such(trail: Trail) -> None:
    await written(trail, 3)
    await trail.attack(
        ("UPDATE switchyard_schema SET version = 7 WHERE component = 'audit'", ()),
    )
    assert await trail.first() == ("schema_change", None, None, None)


def _decision_variants() -> list[Decision]:
    base = Decision(
        at=1_764_000_000.123,
        decision="allow",
        outcome="ok",
        method="tools/call",
        request_id=b'"r-1"',
        principal="alice",
        via="api_key",
        issuer="api_key",
        view="team",
        face="http",
        era="legacy",
        backend="echo",
        target="echo_echo",
        name="echo",
        latency_ms=0.8126,
        status=200,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        request_bytes=120,
        result_bytes=300,
        arguments=Raw(b'{"b": [1, 2.50, {"z": null, "a": "\\u00e9"}], "a": "x"}'),
    )
    return [
        base,
        Decision(at=0.0, decision="deny", outcome=-32001),
        dataclasses.replace(base, issuer=None, arguments=None, latency_ms=None, view=None),
        dataclasses.replace(
            base, reason='quote " back\\slash\n\x00\x1f ü 😀 \u2028', outcome=-32602
        ),
        dataclasses.replace(base, name="n" * 5000, method="m" * 500, backend="ü" * 2000),
        dataclasses.replace(base, request_id=b"\xff\xfe not utf-8", principal="\x7f"),
        dataclasses.replace(base, arguments=Raw(b"not json {")),
    ]


def test_the_fast_record_body_is_the_canonical_bytes_of_the_record() -> None:
    """Most decisions are encoded without building the record's dict; those bytes are what
    the chain hashes and `audit verify` recomputes, so they must be exactly the JCS bytes."""
    from switchyard.audit.record import decision_body, decision_record

    settings = AuditSettings(hmac_key=HMAC_KEY, keys_dir=Path("unused"))
    for i, item in enumerate(_decision_variants()):
        fast = decision_body(item, settings, "w-1", i + 1)
        assert fast is not None, item
        record = decision_record(item, settings, "w-1", i + 1)
        assert fast == (record["ts"], canonical(record)), item


def test_the_arguments_digest_is_hmac_sha256_under_each_key() -> None:
    """The digest reuses a keyed HMAC per key: it must equal a fresh HMAC-SHA256 for keys
    shorter and longer than SHA-256's block, used in turn, and never mix two keys."""
    from switchyard.audit.record import arguments_digest

    body = b'{"a":"x","b":[1,2.5]}'
    keys = (HMAC_KEY, b"k" * 64, b"long" * 40, HMAC_KEY + b"-other")
    for _ in range(2):
        for key in keys:
            expected = hmac.new(key, body, hashlib.sha256).hexdigest()
            assert arguments_digest(key, Raw(b'{"b": [1, 2.50], "a": "x"}')) == expected
    assert len({arguments_digest(k, Raw(body)) for k in keys}) == len(keys)


def test_decisions_the_fast_body_cannot_encode_take_the_general_path() -> None:
    from switchyard.audit.record import decision_body

    raw = AuditSettings(
        hmac_key=HMAC_KEY, keys_dir=Path("unused"), raw_arguments=(RawArgumentsRule(),)
    )
    plain = AuditSettings(hmac_key=HMAC_KEY, keys_dir=Path("unused"))
    base = _decision_variants()[0]
    # Raw arguments go into the record as a nested value: the general encoder writes them.
    assert decision_body(base, raw, "w", 1) is None
    assert decision_body(dataclasses.replace(base, arguments=None), raw, "w", 1) is not None
    # A number past 2**53 has no exact JSON form; a lone surrogate is not text.
    assert decision_body(dataclasses.replace(base, result_bytes=2**60), plain, "w", 1) is None
    assert decision_body(dataclasses.replace(base, reason="\ud800"), plain, "w", 1) is None


async def test_a_string_that_is_not_unicode_text_does_not_stop_the_writer(trail: Trail) -> None:
    """No decoder the gateway uses yields a lone surrogate, but the writer must not die on
    one (with `fail_closed` a dead writer refuses every call)."""
    writer = trail.writer("w-surrogate")
    await writer.start()
    try:
        writer.submit(dataclasses.replace(decision(0), reason="bad \ud800 text"))
        writer.submit(decision(1))
    finally:
        await writer.stop()
    assert writer.written == 2
    rows = await trail.db.fetch(
        "SELECT record FROM audit_records WHERE writer = ? ORDER BY seq", "w-surrogate"
    )
    assert json.loads(rows[0][0])["reason"] == "bad ? text"
    report = await trail.verify()
    assert report.ok, report.breaks
