"""`switchyard pins list|diff|approve|reject`: review what the gateway hid, and decide.

A running gateway notices a decision within `pinning.poll_interval` and shows (or keeps
hiding) the item; its clients get `list_changed`. Exit status: 0 done, 1 no such pin or
nothing to decide, 2 the configuration or the store failed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Any

from switchyard.audit.settings import AuditSettings
from switchyard.audit.writer import AuditWriter
from switchyard.pins import diff, events
from switchyard.pins.events import record_pin_event
from switchyard.pins.fingerprint import PinKey, from_canonical
from switchyard.pins.store import STATES, NotApprovable, Pin, PinNotFound, PinStore, pin_json
from switchyard.storage.database import StorageError, open_database
from switchyard.storage.settings import StorageSettings


def add_parser(subparsers: Any, common: Any) -> None:
    parser = subparsers.add_parser(
        "pins", help="review pinned tool, prompt and template definitions; approve or reject"
    )
    sub = parser.add_subparsers(dest="pins_command", required=True)
    show = sub.add_parser("list", help="every pin, or those in one state")
    common(show)
    show.add_argument("--state", choices=STATES)
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    changes = sub.add_parser("diff", help="what changed between the pin and its candidate")
    common(changes)
    changes.add_argument("key", help="backend/kind/name, e.g. github/tool/create_issue")
    changes.add_argument("--json", action="store_true")
    for verb, text in (
        ("approve", "pin the candidate definition: shown again at the next poll"),
        ("reject", "refuse the candidate: it stays hidden"),
    ):
        decide = sub.add_parser(verb, help=text)
        common(decide)
        decide.add_argument("key", help="backend/kind/name")
        decide.add_argument(
            "--fingerprint",
            help="only if the candidate is still this one (a prefix of 8+ hex digits will do)",
        )
        decide.add_argument("--by", help="who decides (default: the login name)")


def run(
    args: argparse.Namespace, storage: StorageSettings, audit: AuditSettings | None = None
) -> int:
    try:
        return asyncio.run(_audited(args, storage, audit))
    except StorageError as exc:
        _err(f"switchyard pins: {exc}")
        return 2
    except (PinNotFound, NotApprovable, ValueError) as exc:
        text = f"no pin {exc}" if isinstance(exc, PinNotFound) else str(exc)
        _err(f"switchyard pins: {text}")
        return 1


def _err(line: str) -> None:
    print(line, file=sys.stderr)  # noqa: T201


def _out(line: str) -> None:
    print(line)  # noqa: T201


async def _audited(
    args: argparse.Namespace, storage: StorageSettings, audit: AuditSettings | None
) -> int:
    """The command, with its pin events recorded in the audit trail when it is on: this
    process writes a stream of its own, verified like every gateway's."""
    if audit is None or args.pins_command in ("list", "diff"):
        return await _run(args, storage)
    writer = AuditWriter(audit, storage)
    await writer.start()
    sink = events.audit_sink(writer.submit)
    events.sinks.append(sink)
    try:
        return await _run(args, storage)
    finally:
        events.sinks.remove(sink)
        await writer.stop()


async def _run(args: argparse.Namespace, storage: StorageSettings) -> int:
    db = await open_database(storage)
    try:
        store = PinStore(db)
        await store.migrate()
        command = args.pins_command
        if command == "list":
            return await _list(store, args.state, args.json)
        key = PinKey.parse(args.key)
        if command == "diff":
            return await _diff(store, key, args.json)
        actor = args.by or _login()
        if command == "approve":
            pin, event = await store.approve(key, actor, args.fingerprint)
            record_pin_event(event)
            _out(f"{key}: approved {pin.pinned_fp} (by {actor})")
        else:
            pin, event = await store.reject(key, actor, args.fingerprint)
            record_pin_event(event)
            _out(f"{key}: rejected {pin.candidate_fp} (by {actor}); it stays hidden")
        return 0
    finally:
        await db.close()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(fp: str | None) -> str:
    return fp.removeprefix("sha256:")[:12] if fp else "-"


async def _list(store: PinStore, state: str | None, as_json: bool) -> int:
    pins = await store.pins(state)
    if as_json:
        for pin in pins:
            _out(json.dumps(pin_json(pin), ensure_ascii=True))
        return 0
    if not pins:
        _err("no pins" + (f" in state {state}" if state else ""))
        return 0
    _out(f"{'STATE':9} {'REASON':9} {'PINNED':12} {'CANDIDATE':12} {'APPROVED BY':14} KEY")
    for pin in pins:
        who = pin.approved_by or ("first use" if pin.pinned_fp else "-")
        _out(
            f"{pin.state:9} {pin.reason or '-':9} {_short(pin.pinned_fp):12} "
            f"{_short(pin.candidate_fp):12} {who[:14]:14} {pin.key}"
        )
    return 0


async def _diff(store: PinStore, key: PinKey, as_json: bool) -> int:
    pin = await store.get(key)
    if pin is None:
        raise PinNotFound(str(key))
    changes = _changes(pin)
    if as_json:
        body = {**pin_json(pin), "changes": [c.as_json() for c in changes]}
        _out(json.dumps(body, ensure_ascii=True))
        return 0
    pinned = (
        f"{pin.pinned_fp} ({'approved by ' + pin.approved_by if pin.approved_by else 'first use'}"
        f", {_when(pin.pinned_at)})"
        if pin.pinned_fp
        else "nothing"
    )
    _out(f"{key}  [{pin.state}{', ' + pin.reason if pin.reason else ''}]")
    _out(f"  pinned:    {pinned}")
    _out(f"  candidate: {pin.candidate_fp or 'none'} (seen {_when(pin.candidate_at)})")
    for finding in pin.findings:
        _out(
            f"  finding:   {finding.get('rule')} ({finding.get('action')}) in "
            f"{finding.get('where')}: {finding.get('excerpt')}"
        )
    if pin.candidate_def is None:
        _out("  no candidate: nothing to review")
        return 0
    if pin.candidate_fp == pin.pinned_fp:
        _out("  the candidate is the pinned definition; it waits because of the findings above")
        return 0
    for line in diff.render(changes):
        _out(line)
    return 0


def _changes(pin: Pin) -> list[diff.Change]:
    if pin.candidate_def is None:
        return []
    new = from_canonical(pin.key, pin.candidate_def).value
    old = from_canonical(pin.key, pin.pinned_def).value if pin.pinned_def is not None else None
    return diff.classify(old, new)


def pin_changes(pin: Pin) -> list[diff.Change]:
    """What changed between a pin and its candidate (empty: no candidate)."""
    return _changes(pin)
