"""`switchyard keys create|list|revoke`: manage API keys in the gateway's key store.

A new key goes to stdout alone, so that `KEY=$(switchyard keys create ...)` captures it; every
other word goes to stderr. Nothing here prints a stored digest, and nothing echoes what was
typed where a prefix was expected, in case it was a whole key.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from switchyard.auth import keys
from switchyard.auth.key_store import (
    DATA_DIR_ENV,
    DATABASE_URL_ENV,
    DEFAULT_PG_TABLE,
    SQLITE_FILENAME,
    KeyStore,
    PostgresKeyStore,
    SqliteKeyStore,
    default_data_dir,
)
from switchyard.auth.keys import KeyRecord

PROG = "switchyard keys"
# Failures worth one line rather than a traceback. None of them carries a key: the stores bind
# only prefixes, digests and record fields as parameters.
_STORE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def add_parser(subparsers: Any) -> None:
    """Add `keys` to a parent parser's subcommands (the object `add_subparsers()` returned)."""
    parser = subparsers.add_parser(
        "keys", help="manage API keys", description="Create, list and revoke API keys."
    )
    _configure(parser)


def _configure(parser: argparse.ArgumentParser) -> None:
    store = argparse.ArgumentParser(add_help=False)
    group = store.add_argument_group("key store")
    group.add_argument(
        "--config",
        "-c",
        help="the gateway's config file: its auth.database_url or auth.data_dir is the store "
        "(the flags below win)",
    )
    group.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        help="default: postgres when a DSN is configured, else sqlite",
    )
    group.add_argument(
        "--data-dir",
        help=f"SQLite lives at DATA_DIR/{SQLITE_FILENAME}; default ${DATA_DIR_ENV} or ./var",
    )
    group.add_argument(
        "--dsn",
        help=f"PostgreSQL DSN; default ${DATABASE_URL_ENV} (prefer it: argv is visible to ps)",
    )
    group.add_argument(
        "--table", default=DEFAULT_PG_TABLE, help="PostgreSQL table (default: %(default)s)"
    )

    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", parents=[store], help="create a key and print it once")
    create.add_argument("--principal", required=True, help="who the key authenticates")
    create.add_argument(
        "--role", action="append", default=[], dest="roles", help="a role (repeatable)"
    )
    create.add_argument(
        "--attr",
        action="append",
        default=[],
        dest="attrs",
        metavar="K=V",
        help="an attribute (repeatable)",
    )
    create.add_argument(
        "--expires", help="a duration (90m, 12h, 30d, 2w) or an ISO date; default: never"
    )

    listing = sub.add_parser("list", parents=[store], help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    revoke = sub.add_parser("revoke", parents=[store], help="revoke a key by its prefix")
    revoke.add_argument("prefix", metavar="PREFIX", help="the key's 8-character prefix")


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed `keys` command; the process exit status."""
    try:
        return asyncio.run(_run(args))
    except _Usage as exc:
        _err(str(exc))
        return 2


class _Usage(Exception):
    pass


def _err(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")


async def _open(args: argparse.Namespace) -> KeyStore:
    dsn = args.dsn or os.environ.get(DATABASE_URL_ENV) or None
    kind = args.store or ("postgres" if dsn else "sqlite")
    if kind == "postgres":
        if not dsn:
            raise _Usage(f"--store postgres needs --dsn or ${DATABASE_URL_ENV}")
        try:
            return await PostgresKeyStore.open(dsn, table=args.table)
        except ValueError as exc:
            # asyncpg's DSN complaints quote the host part at most, never the credentials.
            raise _Usage(f"invalid PostgreSQL settings: {exc}") from None
    data_dir = args.data_dir or default_data_dir()
    path = os.path.join(data_dir, SQLITE_FILENAME)
    shown = str(Path.cwd() / path)
    if not args.data_dir and not os.environ.get(DATA_DIR_ENV) and not args.config:
        # Nothing said where: say it, so a key is not silently made in a store nobody reads.
        _err(
            f"using the SQLite key store {shown} (no --config, --data-dir "
            f"or ${DATA_DIR_ENV}; a gateway finds it only when run from this directory)"
        )
    return await SqliteKeyStore.open(path)


async def _run(args: argparse.Namespace) -> int:
    # Arguments are checked before the store is opened: a typo must not create a database.
    command: Callable[[KeyStore], Awaitable[int]]
    if args.keys_command == "create":
        command = functools.partial(_create, request=_create_request(args))
    elif args.keys_command == "revoke":
        command = functools.partial(_revoke, prefix=_prefix(args.prefix))
    else:
        command = functools.partial(_list, as_json=args.json)
    try:
        store = await _open(args)
    except _STORE_ERRORS as exc:
        _err(f"cannot open the key store: {type(exc).__name__}: {exc}")
        return 1
    try:
        return await command(store)
    except _STORE_ERRORS as exc:
        _err(f"key store failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        await store.aclose()


_CreateRequest = tuple[str, tuple[str, ...], dict[str, str], datetime | None]


def _create_request(args: argparse.Namespace) -> _CreateRequest:
    try:
        principal = keys.check_name("principal", args.principal)
        roles = keys.normalize_roles(args.roles)
        attributes: dict[str, str] = {}
        for item in args.attrs:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError("--attr takes K=V")
            attributes[name] = value
        attributes = keys.normalize_attributes(attributes)
        expires = keys.parse_expires(args.expires) if args.expires else None
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    return principal, roles, attributes, expires


def _prefix(text: str) -> str:
    # A pasted whole key is accepted (revoking a leaked key is the common case), but its
    # secret is never repeated back.
    parsed = keys.parse(text)
    if parsed is not None:
        return parsed.prefix
    candidate = text.removeprefix(f"{keys.KEY_TAG}_")
    if keys.PREFIX_RE.fullmatch(candidate):
        return candidate
    raise _Usage("PREFIX must be a key's 8-character prefix (letters a-z and digits 2-7)")


async def _create(store: KeyStore, *, request: _CreateRequest) -> int:
    plaintext, record = await store.create(*request)
    sys.stdout.write(plaintext + "\n")
    sys.stdout.flush()
    until = record.expires_at.isoformat(timespec="seconds") if record.expires_at else "never"
    _err(
        f"created key {record.prefix} for {record.principal} "
        f"(roles: {', '.join(record.roles) or '-'}; expires: {until}).\n"
        "Store it now: it will not be shown again."
    )
    return 0


async def _revoke(store: KeyStore, *, prefix: str) -> int:
    if await store.revoke(prefix):
        _err(f"revoked key {prefix}")
        return 0
    record = await store.lookup(prefix)
    if record is None:
        _err(f"no key with prefix {prefix}")
        return 1
    _err(f"key {prefix} was already revoked")
    return 0


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _row(record: KeyRecord) -> dict[str, Any]:
    # Built field by field rather than from the dataclass, so that the digest cannot slip in.
    return {
        "prefix": record.prefix,
        "principal": record.principal,
        "roles": list(record.roles),
        "attributes": dict(record.attributes),
        "created": record.created_at.isoformat(timespec="seconds"),
        "expires": None if record.expires_at is None else _when(record.expires_at),
        "revoked": None if record.revoked_at is None else _when(record.revoked_at),
    }


async def _list(store: KeyStore, *, as_json: bool) -> int:
    records = await store.list()
    out = sys.stdout
    if as_json:
        for record in records:
            out.write(json.dumps(_row(record), sort_keys=True) + "\n")
        return 0
    header = ("PREFIX", "PRINCIPAL", "ROLES", "CREATED", "EXPIRES", "REVOKED")
    table = [header] + [
        (
            r.prefix,
            r.principal,
            ",".join(r.roles) or "-",
            _when(r.created_at),
            _when(r.expires_at),
            _when(r.revoked_at),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Create, list and revoke API keys.")
    _configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
