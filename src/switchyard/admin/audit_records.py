"""Audit records: query with filters and paging, and the trail's verification status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from switchyard.admin.context import Problem, Request
from switchyard.admin.routes import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    STRING,
    Answer,
    Operation,
    Query,
    array_of,
    obj,
)
from switchyard.audit import store as audit_store
from switchyard.audit.keyring import KeyRing
from switchyard.audit.verify import VerifyError, verify
from switchyard.storage.database import StorageError

FILTERS: Final = ("event", "principal", "backend", "name", "decision", "method", "writer")
SCAN_ROWS: Final = 5000
"""Rows one page looks at, at most: a narrow filter answers with a cursor, not a long scan."""


async def query(request: Request) -> Answer:
    db = await request.ctx.db()
    try:
        if await db.schema_version(audit_store.COMPONENT) is None:
            return Answer(200, {"records": [], "next": None})
        limit = int(request.query.get("limit", 100))
        # Newest first (a feed) pages back in time with `before`; oldest first with `after`.
        newest = request.query.get("order") == "newest"
        after = int(request.query.get("before" if newest else "after", 2**62 if newest else 0))
        wanted = {k: str(request.query[k]) for k in FILTERS if k in request.query}
        since = request.query.get("since")
        until = request.query.get("until")
        sql = f"SELECT id, record FROM audit_records WHERE id {'<' if newest else '>'} ?"
        args: list[Any] = [after]
        if since is not None:
            sql += " AND ts >= ?"
            args.append(str(since))
        if until is not None:
            sql += " AND ts < ?"
            args.append(str(until))
        order = " ORDER BY id DESC LIMIT ?" if newest else " ORDER BY id LIMIT ?"
        rows = await db.fetch(sql + order, *args, SCAN_ROWS)
    except StorageError:
        raise Problem(503, "the audit store is unavailable; retry shortly") from None
    found: list[dict[str, Any]] = []
    last = after
    for row_id, text in rows:
        last = int(row_id)
        record = json.loads(text)
        if all(str(record.get(k)) == v for k, v in wanted.items()):
            found.append({"id": last, **record})
            if len(found) == limit:
                break
    more = len(found) == limit or len(rows) == SCAN_ROWS
    return Answer(200, {"records": found, "next": last if more else None})


async def verification(request: Request) -> Answer:
    settings = request.ctx.audit
    if settings is None:
        raise Problem(409, "the audit trail is off (audit.enabled)")
    db = await request.ctx.db()
    try:
        report = await verify(
            db,
            KeyRing(settings.keys_dir).public_keys(),
            anchor=Path(settings.anchor_file) if settings.anchor_file else None,
        )
    except VerifyError as exc:
        raise Problem(409, str(exc)) from None
    except StorageError:
        raise Problem(503, "the audit store is unavailable; retry shortly") from None
    streams = [
        {
            "writer": writer,
            "ok": s.breach is None,
            "first_seq": s.first_seq,
            "last_seq": s.last_seq,
            "checkpoints": s.checkpoints,
            "unanchored": s.unanchored,
            "closed": s.final,
        }
        for writer, s in sorted(report.streams.items())
    ]
    body = {
        "ok": report.ok,
        "records": report.records,
        "streams": streams,
        "breaks": [b.describe() for b in report.breaks],
    }
    return Answer(200, body)


OPERATIONS: Final = (
    Operation(
        "GET",
        "/admin/v1/audit/records",
        "queryAuditRecords",
        "Audit records, filtered: oldest first, paging on with `after` = the answer's `next`; "
        "or newest first (`order=newest`), paging back with `before` = `next`",
        "read",
        "audit",
        obj(
            {"records": array_of(ANY_OBJECT), "next": {"type": ["integer", "null"]}},
            ["records", "next"],
        ),
        query,
        query=(
            *(Query(k, {"type": "string"}, f"only records whose `{k}` is this") for k in FILTERS),
            Query("since", {"type": "string"}, "records at or after this timestamp (ISO 8601)"),
            Query("until", {"type": "string"}, "records before this timestamp (ISO 8601)"),
            Query("after", {"type": "integer", "minimum": 0, "maximum": 2**62}, "cursor"),
            Query(
                "order",
                {"type": "string", "enum": ["oldest", "newest"]},
                "oldest first (the default) or newest first",
            ),
            Query("before", {"type": "integer", "minimum": 0, "maximum": 2**62}, "cursor (newest)"),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
        ),
    ),
    Operation(
        "GET",
        "/admin/v1/audit/verify",
        "verifyAudit",
        "Verify the hash chains and signed checkpoints of every stream",
        "read",
        "audit",
        obj(
            {
                "ok": BOOLEAN,
                "records": INTEGER,
                "streams": array_of(ANY_OBJECT),
                "breaks": array_of(STRING),
            },
            ["ok", "records", "streams", "breaks"],
        ),
        verification,
        statuses=(409,),
    ),
)
