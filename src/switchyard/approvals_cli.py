"""`switchyard approvals list|show|approve|deny`: decide approval tickets from the command line.

Reads the same configuration and database as the gateway, so a decision made here is seen by
every gateway process at the caller's next retry. The operator at the console decides as
themselves (`--by`, default the login name); it is audited like a decision over HTTP. Exit
status: 0 done, 1 no such ticket or nothing to decide, 2 the configuration or the store failed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from typing import Any

from switchyard.audit.record import AuditEvent
from switchyard.audit.settings import AuditSettings
from switchyard.audit.writer import AuditWriter
from switchyard.policies.approvals import ApprovalRefused, Approvals
from switchyard.storage.database import StorageError
from switchyard.storage.tickets import STATES, Ticket


def add_parser(subparsers: Any, common: Any) -> None:
    parser = subparsers.add_parser("approvals", help="list and decide approval tickets")
    sub = parser.add_subparsers(dest="approvals_command", required=True)
    show = sub.add_parser("list", help="tickets, newest first")
    common(show)
    show.add_argument("--status", choices=STATES)
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    one = sub.add_parser("show", help="one ticket")
    common(one)
    one.add_argument("id")
    for verb, text in (("approve", "approve one execution"), ("deny", "deny the call")):
        decide = sub.add_parser(verb, help=text)
        common(decide)
        decide.add_argument("id")
        decide.add_argument("--reason", required=verb == "deny")
        decide.add_argument("--by", help="who decides (default: the login name)")


def _out(line: str) -> None:
    print(line)  # noqa: T201


def _err(line: str) -> None:
    print(line, file=sys.stderr)  # noqa: T201


def _line(t: Ticket) -> str:
    j = t.as_json()
    return (
        f"{t.id}  {j['status']:<10} {t.binding.principal}  {t.binding.public_name}  "
        f"approver={t.approver}  expires={j['expiresAt']}"
    )


def run(args: argparse.Namespace, approvals: Approvals | None, audit: AuditSettings | None) -> int:
    if approvals is None:
        _err("switchyard approvals: approvals are not enabled in this configuration")
        return 2
    try:
        return asyncio.run(_audited(args, approvals, audit))
    except StorageError as exc:
        _err(f"switchyard approvals: {exc}")
        return 2
    except ApprovalRefused as exc:
        _err(f"switchyard approvals: {exc}")
        return 1


async def _audited(
    args: argparse.Namespace, approvals: Approvals, audit: AuditSettings | None
) -> int:
    writer: AuditWriter | None = None
    if audit is not None and args.approvals_command in ("approve", "deny"):
        writer = AuditWriter(audit, approvals.settings.storage)
        await writer.start()
        submit = writer.submit
        approvals.sinks.append(lambda f: submit(AuditEvent("approval", time.time(), f)))
    try:
        return await _run(args, approvals)
    finally:
        await approvals.close()
        if writer is not None:
            await writer.stop()


async def _run(args: argparse.Namespace, approvals: Approvals) -> int:
    store = await approvals.ready()
    command = args.approvals_command
    if command == "list":
        for t in await store.listed(args.status, limit=1000):
            _out(json.dumps(t.as_json()) if args.json else _line(t))
        return 0
    if command == "show":
        ticket = await store.get(args.id)
        if ticket is None:
            _err(f"switchyard approvals: no approval ticket {args.id}")
            return 1
        _out(json.dumps(ticket.as_json(), indent=2))
        return 0
    actor = args.by or _login()
    ticket = await approvals.decide(args.id, command == "approve", None, actor, args.reason)
    _out(_line(ticket))
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"
