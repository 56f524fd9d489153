"""The audit writer of one gateway process: its own stream (writer id, sequence, hash chain),
batched writes off the request path, signed checkpoints, retention, and what happens when the
store cannot keep up.

Decisions arrive through the observability sink (`submit`, on the request's path: an append to
a bounded queue, nothing more). One task drains the queue in batches: builds and chains the
records off the event loop (on SQLite in the same trip to the database's thread as the
insert), commits a batch in one transaction, and only then advances the chain, so a failed
write is retried with the same sequence numbers. Appends are serialised in this process; no
database lock is held across processes, since every process has its own stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from itertools import islice
from typing import Any, Final

from switchyard.audit import store
from switchyard.audit.canonical import CanonicalError, canonical
from switchyard.audit.keyring import KeyRing, Signer, public_pem, verify
from switchyard.audit.record import (
    GENESIS,
    VERSION,
    AuditEvent,
    decision_body,
    decision_record,
    event_record,
    link,
    timestamp,
)
from switchyard.audit.settings import FAIL_CLOSED, AuditSettings
from switchyard.observability import decisions
from switchyard.observability.decisions import Decision
from switchyard.storage.database import Database, Session, StorageError, open_database
from switchyard.storage.settings import StorageSettings

log = logging.getLogger("switchyard.audit")

START_WAIT_S: Final = 5.0
STOP_WAIT_S: Final = 15.0
RETRY_MAX_S: Final = 2.0
STOP_ATTEMPTS: Final = 3
"""Writes tried once stopping before the queue is given up (a store that is down)."""
DROP_LOG_EVERY_S: Final = 10.0
COMMAND_TIMEOUT_S: Final = 5.0
UNAVAILABLE: Final = "the audit store is unavailable"
SLOW: Final = "the audit store is too slow"
FULL: Final = "the audit buffer is full"


def new_writer_id() -> str:
    """A stream of its own for every process start: host, process id, and a random part."""
    host = socket.gethostname().split(".", 1)[0][:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def checkpoint_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class AuditWriter:
    def __init__(self, settings: AuditSettings, storage: StorageSettings) -> None:
        self.settings = settings
        self.storage = storage
        self.writer_id = settings.writer_id or new_writer_id()
        self.keyring = KeyRing(settings.keys_dir)
        self.dropped = 0
        """Decisions lost because the buffer was full."""
        self.written = 0
        self._queue: deque[tuple[float, Decision | AuditEvent]] = deque()
        self._db: Database | None = None
        self._error: str | None = UNAVAILABLE
        self._seq = 0
        self._head = GENESIS
        self._cseq = 0
        self._cprev = GENESIS
        self._since_checkpoint = 0
        self._checkpoint_due = 0.0
        self._retention_due = 0.0
        self._resync = False
        self._signer: Signer | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._drops_logged = 0
        self._drop_logged_at = 0.0

    # --- the request path -------------------------------------------------------------------

    def submit(self, decision: Decision | AuditEvent) -> None:
        """The decision sink (and the way in for other events): queue one record, or count it
        dropped when the buffer is full."""
        if len(self._queue) >= self.settings.buffer_size:
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_EVERY_S:
                self._drop_logged_at = now
                log.warning(
                    "audit: buffer full (%d records); %d records dropped so far",
                    self.settings.buffer_size,
                    self.dropped,
                )
            return
        self._queue.append((time.monotonic(), decision))
        if len(self._queue) >= self.settings.batch_size:
            self._wake.set()

    def unavailable(self) -> str | None:
        """Why new calls should not run now (None: the trail records). Cheap: per request."""
        if self._error is not None:
            return self._error
        queue = self._queue
        if queue:
            if len(queue) >= self.settings.buffer_size:
                return FULL
            if time.monotonic() - queue[0][0] > self.settings.max_write_delay_s:
                return SLOW
        return None

    @property
    def fail_closed(self) -> bool:
        return self.settings.on_failure == FAIL_CLOSED

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the signing key (a broken key ring fails the start), take decisions from now
        on, and connect; a store that is down is retried in the background."""
        self._signer = await asyncio.to_thread(self.keyring.signer)
        decisions.add_sink(self.submit)
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), START_WAIT_S)
        if self._db is None:
            log.error("audit: %s at start; retrying (%s)", UNAVAILABLE, self.settings.on_failure)

    async def stop(self) -> None:
        """Write what is queued (bounded in time), close the stream with a final signed
        checkpoint, and disconnect."""
        decisions.remove_sink(self.submit)
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_WAIT_S)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                log.exception("audit: writer failed while stopping")
        if self._queue:
            log.error("audit: %d records could not be written before shutdown", len(self._queue))
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _run(self) -> None:
        backoff = 0.1
        stop_attempts = 0
        while True:
            if self._db is None:
                try:
                    await self._connect()
                except (StorageError, OSError) as exc:
                    self._failed("connect", exc)
                    if self._stopping:
                        return
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX_S)
                    continue
                backoff = 0.1
                self._ready.set()
            if not self._stopping:
                await self._sleep(self.settings.flush_interval_s)
            try:
                if self._resync:
                    await self._resynchronise()
                while self._queue:
                    await self._flush()
                    await self._maybe_checkpoint()
                    if not self._stopping and len(self._queue) < self.settings.batch_size:
                        break
                await self._maybe_checkpoint()
                await self._maybe_retain()
                self._error = None
                backoff = 0.1
            except (StorageError, OSError) as exc:
                self._failed("write", exc)
                self._resync = True
                if self._stopping:
                    stop_attempts += 1
                    if stop_attempts >= STOP_ATTEMPTS:
                        return  # stop() reports what stays unwritten
                await self._sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            if self._stopping and not self._queue:
                with contextlib.suppress(StorageError, OSError):
                    await self._write_checkpoint(final=True)
                return

    async def _sleep(self, seconds: float) -> None:
        """Until woken or `seconds` passed. A timer that sets the event, not `wait_for`: this
        runs every flush interval, and `wait_for` costs a task and a cancellation each time."""
        handle = asyncio.get_running_loop().call_later(seconds, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()
        self._wake.clear()

    def _failed(self, what: str, exc: BaseException) -> None:
        if self._error is None or self._error == UNAVAILABLE:
            # The driver's message names the problem, never a DSN or a record.
            log.error("audit: %s failed: %s", what, exc)
        self._error = UNAVAILABLE

    async def _connect(self) -> None:
        db = await open_database(self.storage, command_timeout=COMMAND_TIMEOUT_S)
        try:
            await store.migrate(db)
            signer = self._signer
            assert signer is not None
            await store.publish_key(db, signer.key_id, public_pem(signer.public), _now())
            host = socket.gethostname()[:255]
            async with db.transaction() as tx:
                await store.register_writer(tx, self.writer_id, _now(), host, os.getpid())
                state = await self._checkpoint(tx, final=False)
        except BaseException:
            await db.close()
            raise
        self._db = db
        self._checkpoint_committed(*state)
        self._retention_due = time.monotonic() + min(60.0, self.settings.retention_check_s)
        log.info("audit: writing stream %s (%s)", self.writer_id, db.dialect)

    # --- records ----------------------------------------------------------------------------

    async def _flush(self) -> None:
        db = self._db
        assert db is not None
        batch = [d for _, d in islice(self._queue, 0, self.settings.batch_size)]
        if not batch:
            return
        seq, prev, heads = self._seq, self._head, []

        def build() -> list[tuple[Any, ...]]:
            rows, head = self._build(batch, seq, prev)
            heads.append(head)
            return rows

        await db.insert_built(store.INSERT_RECORD, build)
        head = heads[-1]
        for _ in batch:
            self._queue.popleft()
        self._seq += len(batch)
        self._head = head
        self._since_checkpoint += len(batch)
        self.written += len(batch)

    def _build(
        self, batch: list[Decision | AuditEvent], seq: int, head: str
    ) -> tuple[list[tuple[Any, ...]], str]:
        rows: list[tuple[Any, ...]] = []
        writer = self.writer_id
        for item in batch:
            seq += 1
            fast = (
                None
                if isinstance(item, AuditEvent)
                else decision_body(item, self.settings, writer, seq)
            )
            if fast is not None:
                ts, body = fast
            else:
                if isinstance(item, AuditEvent):
                    record = event_record(item, writer, seq)
                else:
                    record = decision_record(item, self.settings, writer, seq)
                try:
                    body = canonical(record)
                except CanonicalError:
                    # Raw arguments holding a value JSON cannot carry (a number out of range),
                    # or a string that is not Unicode text: the record is still written.
                    if "args" in record:
                        record["args"] = "[not representable in canonical JSON]"
                    record = {
                        k: v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v
                        for k, v in record.items()
                    }
                    body = canonical(record)
                ts = record["ts"]
            digest = link(head, body)
            rows.append((writer, seq, ts, head, digest, body.decode("utf-8")))
            head = digest
        return rows, head

    async def _resynchronise(self) -> None:
        """After a failed write whose commit may still have happened (a timeout), adopt what
        the database holds, so no record is written twice or skipped."""
        db = self._db
        assert db is not None
        found = await store.stream_head(db, self.writer_id)
        if found is not None and found[0] > self._seq:
            committed = found[0] - self._seq
            for _ in range(min(committed, len(self._queue))):
                self._queue.popleft()
            self._since_checkpoint += committed
            self.written += committed
            self._seq, self._head = found
        self._resync = False

    # --- checkpoints ------------------------------------------------------------------------

    async def _maybe_checkpoint(self) -> None:
        if self._since_checkpoint == 0:
            return
        if (
            self._since_checkpoint >= self.settings.checkpoint_every
            or time.monotonic() >= self._checkpoint_due
        ):
            await self._write_checkpoint(final=False)

    async def _write_checkpoint(self, *, final: bool) -> None:
        db = self._db
        if db is None:
            return
        await self._rotate_if_needed(db)
        async with db.transaction() as tx:
            state = await self._checkpoint(tx, final=final)
        self._checkpoint_committed(*state)

    async def _checkpoint(self, tx: Session, *, final: bool) -> tuple[int, str, str]:
        signer = self._signer
        assert signer is not None
        cseq = self._cseq + 1
        ts = _now()
        body = canonical(
            {
                "v": VERSION,
                "event": "checkpoint",
                "writer": self.writer_id,
                "cseq": cseq,
                "seq": self._seq,
                "head": self._head,
                "prev": self._cprev,
                "ts": ts,
                "key_id": signer.key_id,
                "writers": await store.writers(tx),
                "final": final,
            }
        )
        sig = signer.sign(body)
        text = body.decode("utf-8")
        await tx.execute(
            store.INSERT_CHECKPOINT, self.writer_id, cseq, self._seq, ts, signer.key_id, text, sig
        )
        return cseq, checkpoint_hash(body), json.dumps({"body": text, "sig": sig})

    def _checkpoint_committed(self, cseq: int, digest: str, anchor_line: str) -> None:
        self._cseq = cseq
        self._cprev = digest
        self._since_checkpoint = 0
        self._checkpoint_due = time.monotonic() + self.settings.checkpoint_interval_s
        anchor = self.settings.anchor_file
        if anchor is not None:
            try:
                anchor.parent.mkdir(parents=True, exist_ok=True)
                with anchor.open("a", encoding="utf-8") as f:
                    f.write(anchor_line + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                log.error("audit: cannot append to the anchor file: %s", exc.strerror)

    async def _rotate_if_needed(self, db: Database) -> None:
        """A key rotated with `switchyard audit keys rotate` signs from the next checkpoint."""
        current = await asyncio.to_thread(self.keyring.current_id)
        if self._signer is None or current is None or current == self._signer.key_id:
            return
        signer = await asyncio.to_thread(self.keyring.signer)
        await store.publish_key(db, signer.key_id, public_pem(signer.public), _now())
        log.info("audit: signing checkpoints with %s from now on", signer.key_id)
        self._signer = signer

    # --- retention --------------------------------------------------------------------------

    async def _maybe_retain(self) -> None:
        if self.settings.retention_days is None or time.monotonic() < self._retention_due:
            return
        self._retention_due = time.monotonic() + self.settings.retention_check_s
        cutoff = timestamp(time.time() - self.settings.retention_days * 86400.0)
        removed = await self.retain(cutoff)
        if removed:
            log.info("audit: retention removed %d records older than %s", removed, cutoff)

    async def retain(self, cutoff: str) -> int:
        """Delete, stream by stream, the records up to the newest checkpoint older than
        `cutoff`, and leave a signed marker where each stream now starts. Returns how many
        records went. Whole prefixes only: a stream never loses a record in its middle."""
        db = self._db
        signer = self._signer
        if db is None or signer is None:
            raise StorageError(UNAVAILABLE)
        trusted = await asyncio.to_thread(self.keyring.public_keys)
        removed = 0
        async with db.transaction() as tx:
            await store.open_retention_gate(tx)
            latest_marker: dict[str, int] = {}
            for marker in await store.markers(tx):
                latest_marker[marker.writer] = max(
                    latest_marker.get(marker.writer, 0), marker.from_seq
                )
            by_writer: dict[str, list[store.CheckpointRow]] = {}
            for row in await store.checkpoints(tx):
                by_writer.setdefault(row.writer, []).append(row)
            for writer, rows in by_writer.items():
                cut = None
                for row in rows:
                    if row.ts < cutoff and _signed(row.body, row.sig, row.key_id, trusted):
                        cut = row
                if cut is None or cut.seq < latest_marker.get(writer, 1) - 1:
                    continue
                body = json.loads(cut.body)
                removed += await tx.execute(
                    "DELETE FROM audit_records WHERE writer = ? AND seq <= ?", writer, cut.seq
                )
                await tx.execute(
                    "DELETE FROM audit_checkpoints WHERE writer = ? AND cseq <= ?",
                    writer,
                    cut.cseq,
                )
                await tx.execute("DELETE FROM audit_markers WHERE writer = ?", writer)
                ts = _now()
                marker_body = canonical(
                    {
                        "v": VERSION,
                        "event": "retention",
                        "writer": writer,
                        "from_seq": cut.seq + 1,
                        "prev": body["head"],
                        "from_cseq": cut.cseq + 1,
                        "checkpoint_prev": checkpoint_hash(cut.body.encode("utf-8")),
                        "final": bool(body.get("final")),
                        "cutoff": cutoff,
                        "ts": ts,
                        "key_id": signer.key_id,
                        "by": self.writer_id,
                    }
                )
                await tx.execute(
                    store.INSERT_MARKER,
                    writer,
                    cut.seq + 1,
                    ts,
                    signer.key_id,
                    marker_body.decode("utf-8"),
                    signer.sign(marker_body),
                )
            await store.close_retention_gate(tx)
        return removed


def _signed(body: str, sig: str, key_id: str, trusted: dict[str, Any]) -> bool:
    public = trusted.get(key_id)
    return public is not None and verify(public, sig, body.encode("utf-8"))


def _now() -> str:
    return timestamp(time.time())
