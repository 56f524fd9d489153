"""Verify the audit trail: every stream's hash chain, its signed checkpoints, retention markers
and (when configured) the anchor file. Names the first break of each stream and its kind.

Reads in constant memory: records stream in chain order (writer, seq); only checkpoints (one
per `checkpoint_every` records) are held. A break ends the check of its stream, since nothing
after it can be trusted.

What a break means:
  edit            a record (or checkpoint) no longer hashes to what the chain holds
  delete          a record (or checkpoint) is missing from the middle of its stream
  insert          a record that was never written: a second record claims a sequence number,
                  a record from another stream, or a record after the writer closed its stream
  reorder         records are out of their chain order
  replay          a record appears again later in its stream
  truncated_tail  a stream ends before the last record its signed checkpoints vouch for
  truncated_all   no record is left while signed checkpoints vouch for some
  stream_lost     a writer is known (registered, or named by another writer's checkpoint or by
                  the anchor) but its whole stream is gone
  unknown_key     a checkpoint or marker is signed by a key the key ring does not hold
  bad_signature   a checkpoint or marker's signature does not verify
  schema_change   records or tables of a version this Switchyard does not know
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from switchyard.audit import store
from switchyard.audit.keyring import verify as verify_signature
from switchyard.audit.record import GENESIS, SUPPORTED_VERSIONS, RecordHead, record_head
from switchyard.storage.database import Database, Row

EDIT: Final = "edit"
DELETE: Final = "delete"
INSERT: Final = "insert"
REORDER: Final = "reorder"
REPLAY: Final = "replay"
TRUNCATED_TAIL: Final = "truncated_tail"
TRUNCATED_ALL: Final = "truncated_all"
STREAM_LOST: Final = "stream_lost"
UNKNOWN_KEY: Final = "unknown_key"
BAD_SIGNATURE: Final = "bad_signature"
SCHEMA_CHANGE: Final = "schema_change"


class VerifyError(Exception):
    """The trail cannot be read at all (no audit tables, an unreadable anchor)."""


@dataclass(frozen=True, slots=True)
class Break:
    kind: str
    writer: str | None
    seq: int | None = None
    """The record's sequence number where the stream breaks."""
    checkpoint: int | None = None
    """The checkpoint's sequence number, for a break in the checkpoints."""
    detail: str = ""

    def describe(self) -> str:
        where = f"writer {self.writer}" if self.writer is not None else "the audit tables"
        if self.seq is not None:
            where += f", record {self.seq}"
        if self.checkpoint is not None:
            where += f", checkpoint {self.checkpoint}"
        return f"{self.kind} at {where}: {self.detail}"


@dataclass(slots=True)
class Stream:
    writer: str
    records: int = 0
    first_seq: int = 1
    last_seq: int = 0
    checkpoints: int = 0
    anchored_seq: int = 0
    """The last record a valid signed checkpoint (or retention marker) vouches for."""
    final: bool = False
    """The writer closed its stream (a clean stop)."""
    breach: Break | None = None

    @property
    def unanchored(self) -> int:
        """Records after the last checkpoint: chained, but no signature vouches for them yet."""
        return max(0, self.last_seq - self.anchored_seq)


@dataclass(slots=True)
class Report:
    streams: dict[str, Stream] = field(default_factory=dict)
    schema: Break | None = None
    records: int = 0

    @property
    def breaks(self) -> list[Break]:
        found = [self.schema] if self.schema is not None else []
        found += [s.breach for _, s in sorted(self.streams.items()) if s.breach is not None]
        return found

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first(self) -> Break | None:
        breaks = self.breaks
        return breaks[0] if breaks else None


@dataclass(slots=True)
class _Signed:
    body: dict[str, Any]
    raw: str


@dataclass(slots=True)
class _Checkpoints:
    """One writer's verified checkpoints: the record heads they vouch for."""

    heads: dict[int, str] = field(default_factory=dict)
    claimed: int = 0
    final: bool = False
    last_cseq: int = 0
    start_seq: int = 1
    start_prev: str = GENESIS
    checkpoint_prev: str = GENESIS
    retained: bool = False


def _checked(
    raw: str, sig: str, key_id: str, trusted: Mapping[str, Ed25519PublicKey]
) -> tuple[dict[str, Any] | None, str | None, str]:
    """The body of a signed checkpoint or marker; else the kind of break and why."""
    public = trusted.get(key_id)
    if public is None:
        return None, UNKNOWN_KEY, f"signed by {key_id}, which the key ring does not hold"
    if not verify_signature(public, sig, raw.encode("utf-8")):
        return None, BAD_SIGNATURE, f"the signature does not verify with {key_id}"
    body = json.loads(raw)
    if not isinstance(body, dict) or body.get("v") not in SUPPORTED_VERSIONS:
        version = body.get("v") if isinstance(body, dict) else None
        return None, SCHEMA_CHANGE, f"written in schema version {version!r}"
    if body.get("key_id") != key_id:
        return None, EDIT, "its key id column differs from the signed one"
    return body, None, ""


async def verify(
    db: Database, trusted: Mapping[str, Ed25519PublicKey], anchor: Path | None = None
) -> Report:
    report = Report()
    version = await db.schema_version(store.COMPONENT)
    if version is None:
        raise VerifyError("this database holds no audit trail")
    known = store.MIGRATIONS[-1].version
    if version > known:
        report.schema = Break(
            SCHEMA_CHANGE,
            None,
            detail=f"the audit tables are at schema version {version}; this Switchyard "
            f"verifies up to {known}",
        )
        return report

    registered = await store.writers(db)
    named: set[str] = set(registered)
    state: dict[str, _Checkpoints] = {}

    def stream(writer: str) -> Stream:
        if writer not in report.streams:
            report.streams[writer] = Stream(writer)
        return report.streams[writer]

    def breach(writer: str, found: Break) -> None:
        s = stream(writer)
        if s.breach is None:
            s.breach = found

    # Retention markers: where each stream starts now.
    for marker in await store.markers(db):
        body, kind, why = _checked(marker.body, marker.sig, marker.key_id, trusted)
        if body is None:
            breach(marker.writer, Break(kind or EDIT, marker.writer, marker.from_seq, None, why))
            continue
        if body.get("writer") != marker.writer or body.get("from_seq") != marker.from_seq:
            breach(marker.writer, Break(EDIT, marker.writer, marker.from_seq, None, "marker moved"))
            continue
        cp = state.setdefault(marker.writer, _Checkpoints())
        if marker.from_seq >= cp.start_seq:
            cp.start_seq = marker.from_seq
            cp.start_prev = body["prev"]
            cp.last_cseq = int(body["from_cseq"]) - 1
            cp.claimed = marker.from_seq - 1
            cp.final = bool(body.get("final"))
            cp.retained = True
            cp.checkpoint_prev = body["checkpoint_prev"]

    # Checkpoints, each writer's its own signed chain.
    by_writer: dict[str, list[store.CheckpointRow]] = {}
    for row in await store.checkpoints(db):
        by_writer.setdefault(row.writer, []).append(row)
    for writer, rows in by_writer.items():
        cp = state.setdefault(writer, _Checkpoints())
        s = stream(writer)
        cprev = cp.checkpoint_prev
        for row in rows:
            if s.breach is not None:
                break
            body, kind, why = _checked(row.body, row.sig, row.key_id, trusted)
            if body is None:
                breach(writer, Break(kind or EDIT, writer, None, row.cseq, why))
                break
            if body.get("writer") != writer or body.get("cseq") != row.cseq:
                breach(writer, Break(EDIT, writer, None, row.cseq, "checkpoint moved"))
                break
            if row.cseq <= cp.last_cseq:
                breach(writer, Break(REPLAY, writer, None, row.cseq, "checkpoint repeated"))
                break
            if row.cseq > cp.last_cseq + 1:
                breach(
                    writer,
                    Break(DELETE, writer, None, cp.last_cseq + 1, "checkpoint missing"),
                )
                break
            if body["prev"] != cprev:
                breach(
                    writer,
                    Break(EDIT, writer, None, row.cseq, "does not follow the checkpoint before"),
                )
                break
            cprev = hashlib.sha256(row.body.encode("utf-8")).hexdigest()
            cp.last_cseq = row.cseq
            seq = int(body["seq"])
            if seq >= cp.start_seq:
                cp.heads[seq] = body["head"]
            cp.claimed = max(cp.claimed, seq)
            cp.final = bool(body.get("final"))
            s.checkpoints += 1
            named.update(w for w in body.get("writers", ()) if isinstance(w, str))

    if anchor is not None:
        _anchored(anchor, trusted, state, named, breach)

    # Records, stream by stream in chain order.
    walk: _Walk | None = None
    async for chunk in store.records(db):
        for record in chunk:
            writer = record[0]
            if walk is None or walk.stream.writer != writer:
                if walk is not None:
                    walk.finish()
                walk = _Walk(stream(writer), state.setdefault(writer, _Checkpoints()))
            walk.push(record)
            report.records += 1
    if walk is not None:
        walk.finish()

    # The ends of the streams, and the streams that are gone.
    for writer in sorted(named | set(state) | set(report.streams)):
        s = stream(writer)
        cp = state.setdefault(writer, _Checkpoints())
        if s.records == 0 and writer not in by_writer and not cp.retained:
            breach(
                writer,
                Break(STREAM_LOST, writer, detail="no record, checkpoint or marker of it is left"),
            )
            continue
        if s.records == 0:
            s.first_seq = cp.start_seq
            s.last_seq = cp.start_seq - 1
        s.anchored_seq = min(cp.claimed, s.last_seq) if s.last_seq else cp.claimed
        s.final = cp.final
        if s.breach is not None:
            continue
        if cp.claimed > s.last_seq:
            kind = TRUNCATED_TAIL
            breach(
                writer,
                Break(
                    kind,
                    writer,
                    s.last_seq + 1,
                    None,
                    f"the stream ends at {s.last_seq}; signed checkpoints vouch for records "
                    f"up to {cp.claimed}",
                ),
            )
        elif cp.final and s.last_seq > cp.claimed:
            breach(
                writer,
                Break(
                    INSERT,
                    writer,
                    cp.claimed + 1,
                    None,
                    "a record after the writer closed its stream",
                ),
            )
    if report.records == 0:
        for s in report.streams.values():
            if s.breach is not None and s.breach.kind in (TRUNCATED_TAIL, STREAM_LOST):
                s.breach = Break(
                    TRUNCATED_ALL,
                    s.writer,
                    s.breach.seq,
                    None,
                    "no record is left; " + s.breach.detail,
                )
    return report


def _anchored(
    anchor: Path,
    trusted: Mapping[str, Ed25519PublicKey],
    state: dict[str, _Checkpoints],
    named: set[str],
    breach: Any,
) -> None:
    """Checkpoints copied to the anchor file vouch for records even when the database lost
    them (and its own checkpoints) together."""
    try:
        lines = anchor.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise VerifyError(f"{anchor}: unreadable: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            raw, sig = entry["body"], entry["sig"]
            key_id = json.loads(raw)["key_id"]
        except (ValueError, KeyError, TypeError):
            raise VerifyError(f"{anchor}:{number}: not a checkpoint line") from None
        body, kind, why = _checked(raw, sig, key_id, trusted)
        if body is None:
            writer = None
            breach_writer = json.loads(raw).get("writer")
            if isinstance(breach_writer, str):
                writer = breach_writer
                breach(
                    writer, Break(kind or EDIT, writer, None, None, f"anchor line {number}: {why}")
                )
            continue
        writer = body["writer"]
        named.add(writer)
        cp = state.setdefault(writer, _Checkpoints())
        seq = int(body["seq"])
        if int(body["cseq"]) > cp.last_cseq and seq >= cp.claimed:
            # The database lacks checkpoints the anchor holds: it was cut back.
            cp.claimed = seq
            cp.final = bool(body.get("final"))
            cp.heads.setdefault(seq, body["head"])
        elif seq >= cp.start_seq and cp.heads.get(seq, body["head"]) != body["head"]:
            breach(writer, Break(EDIT, writer, seq, int(body["cseq"]), "differs from the anchor"))


class _Walk:
    """One stream's records in (seq, id) order, against its chain and its checkpoints."""

    def __init__(self, stream: Stream, checkpoints: _Checkpoints) -> None:
        self.stream = stream
        self.cp = checkpoints
        self.expected = checkpoints.start_seq
        self.prev = checkpoints.start_prev
        self.last_prev: str | None = None
        self.last_hash: str | None = None
        self.held: tuple[RecordHead, Row] | None = None
        stream.first_seq = checkpoints.start_seq
        stream.last_seq = checkpoints.start_seq - 1

    def _break(self, kind: str, seq: int | None, detail: str) -> None:
        if self.stream.breach is None:
            self.stream.breach = Break(kind, self.stream.writer, seq, None, detail)

    def push(self, row: Row) -> None:
        s = self.stream
        s.records += 1
        if s.breach is not None:
            return
        _writer, column_seq, prev, digest, text = row
        try:
            head = record_head.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._break(EDIT, column_seq, "not a record any more")
            return
        if head.v not in SUPPORTED_VERSIONS:
            self._break(SCHEMA_CHANGE, head.seq, f"written in schema version {head.v}")
            return
        if hashlib.sha256(bytes.fromhex(prev) + text.encode("utf-8")).hexdigest() != digest:
            self._break(EDIT, head.seq, "its contents no longer match its hash")
            return
        if head.writer != s.writer:
            self._break(INSERT, head.seq, f"a record of writer {head.writer} placed in this stream")
            return
        if self.held is not None:
            held, _ = self.held
            if head.seq == self.expected:
                self._break(REORDER, self.expected, f"record {held.seq} comes before it")
            else:
                self._missing(held.seq)
            return
        if head.seq == self.expected:
            if prev != self.prev:
                self._break(
                    EDIT,
                    head.seq - 1,
                    f"record {head.seq} does not follow it: it was changed and rehashed",
                )
                return
            self._accept(head.seq, prev, digest)
        elif head.seq > self.expected:
            self.held = (head, row)  # a gap, or the first of two swapped records
        elif head.seq == self.expected - 1 and prev == self.last_prev and digest != self.last_hash:
            self._break(INSERT, head.seq, f"two different records claim number {head.seq}")
        else:
            self._break(
                REPLAY, head.seq, f"record {head.seq} appears again after {self.expected - 1}"
            )

    def _missing(self, found: int) -> None:
        missing = (
            f"record {self.expected} is missing"
            if found == self.expected + 1
            else f"records {self.expected}..{found - 1} are missing"
        )
        self._break(DELETE, self.expected, missing)

    def _accept(self, seq: int, prev: str, digest: str) -> None:
        head = self.cp.heads.get(seq)
        if head is not None and head != digest:
            self._break(EDIT, seq, "the chain up to here differs from its signed checkpoint")
            return
        self.last_prev = prev
        self.last_hash = digest
        self.prev = digest
        self.expected = seq + 1
        self.stream.last_seq = seq

    def finish(self) -> None:
        if self.held is not None and self.stream.breach is None:
            self._missing(self.held[0].seq)
