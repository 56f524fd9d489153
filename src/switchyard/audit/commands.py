"""`switchyard audit verify|export|keys`: read the trail back, and manage its signing keys.

Verify prints one line per stream and the first break of each broken one; it exits 0 when the
whole trail verifies, 1 at a break, 2 when the trail cannot be read. Export writes one JSON
object per line to stdout (the record, with its chain `prev` and `hash`), oldest first, for a
SIEM to ingest. No command prints a secret: records hold none, and keys print as ids.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from switchyard.audit import store
from switchyard.audit.keyring import KeyRing, KeyRingError
from switchyard.audit.record import timestamp
from switchyard.audit.settings import AuditSettings
from switchyard.audit.verify import VerifyError, verify
from switchyard.storage.database import StorageError, open_database
from switchyard.storage.settings import StorageSettings


def add_parser(subparsers: Any, common: Any) -> None:
    parser = subparsers.add_parser(
        "audit", help="verify and export the audit trail; rotate its signing key"
    )
    sub = parser.add_subparsers(dest="audit_command", required=True)
    check = sub.add_parser("verify", help="check every stream's chain, checkpoints and signatures")
    common(check)
    check.add_argument("--anchor", help="checkpoint anchor file (default: audit.anchor_file)")
    export = sub.add_parser("export", help="stream records as JSON lines (oldest first)")
    common(export)
    export.add_argument("--since", help="only records at or after this ISO 8601 time")
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    keys = sub.add_parser("keys", help="the checkpoint signing key ring")
    common(keys)
    keys.add_argument("action", choices=["list", "rotate"])


def run(args: argparse.Namespace, storage: StorageSettings, settings: AuditSettings) -> int:
    try:
        if args.audit_command == "keys":
            return _keys(args.action, settings)
        if args.audit_command == "verify":
            return asyncio.run(_verify(args, storage, settings))
        return asyncio.run(_export(args.since, storage, sys.stdout))
    except (StorageError, VerifyError, KeyRingError, ValueError) as exc:
        _err(f"switchyard audit: {exc}")
        return 2


def _err(line: str) -> None:
    print(line, file=sys.stderr)  # noqa: T201


def _out(line: str, stream: TextIO = sys.stdout) -> None:
    print(line, file=stream)


def _keys(action: str, settings: AuditSettings) -> int:
    ring = KeyRing(settings.keys_dir)
    if action == "rotate":
        kid = ring.generate()
        _out(kid)
        _err(f"signing checkpoints with {kid} from the next one; keep every .pub file")
        return 0
    current = ring.current_id()
    for kid in ring.public_keys():
        private = (settings.keys_dir / f"{kid}.key").exists()
        mark = " current" if kid == current else ""
        _out(f"{kid}{mark}{'' if private else ' (public only)'}")
    return 0


async def _verify(
    args: argparse.Namespace, storage: StorageSettings, settings: AuditSettings
) -> int:
    trusted = KeyRing(settings.keys_dir).public_keys()
    anchor = args.anchor or settings.anchor_file
    db = await open_database(storage)
    try:
        report = await verify(db, trusted, anchor=None if anchor is None else Path(anchor))
    finally:
        await db.close()
    for writer, s in sorted(report.streams.items()):
        state = "BROKEN" if s.breach is not None else "ok"
        closed = ", closed" if s.final else ""
        _out(
            f"{writer}: {state}: records {s.first_seq}..{s.last_seq}, {s.checkpoints} "
            f"checkpoints, {s.unanchored} after the last checkpoint{closed}"
        )
    first = report.first
    if first is None:
        _out(f"OK: {report.records} records in {len(report.streams)} streams verified")
        return 0
    _out(f"FIRST BREAK: {first.describe()}")
    for other in report.breaks[1:]:
        _out(f"also: {other.describe()}")
    return 1


def since_timestamp(value: str) -> str:
    """An ISO 8601 date or time (UTC when it names no zone) as the records' `ts` text."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {value!r}: not an ISO 8601 date or time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return timestamp(when.timestamp())


async def _export(since: str | None, storage: StorageSettings, out: TextIO) -> int:
    cutoff = since_timestamp(since) if since is not None else None
    db = await open_database(storage)
    try:
        if await db.schema_version(store.COMPONENT) is None:
            raise VerifyError("this database holds no audit trail")
        async for chunk in store.records_since(db, cutoff):
            lines = []
            for _writer, _seq, prev, digest, record in chunk:
                # The record's own canonical text, then its chain link.
                lines.append(f'{record[:-1]},"prev":"{prev}","hash":"{digest}"}}\n')
            out.write("".join(lines))
        out.flush()
    finally:
        await db.close()
    return 0
