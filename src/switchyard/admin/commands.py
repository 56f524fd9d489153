"""`switchyard admin ...`: every admin operation as a subcommand, talking to a running gateway's
admin API with an API key. The subcommands are made from the same route table the server
dispatches on, so the CLI offers exactly what the API does.

The key comes from `$SWITCHYARD_API_KEY` (or `--key-file`), never from a flag other processes
could read; the gateway from `--url` (default `$SWITCHYARD_ADMIN_URL`, else
http://127.0.0.1:8080). A write reads the current ETag first (`etag_from`) unless `--if-match`
gives it, so a change made meanwhile by someone else is refused (412), not overwritten.
Exit status: 0 success, 1 the API refused (its status and message on stderr), 2 bad usage or
no connection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from switchyard.admin.routes import Operation
from switchyard.admin.table import ROUTES

DEFAULT_URL: Final = "http://127.0.0.1:8080"
TIMEOUT_S: Final = 60.0


def command_name(op: Operation) -> str:
    """`listBackends` -> `list-backends`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", op.name).lower()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="switchyard admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("SWITCHYARD_ADMIN_URL", DEFAULT_URL))
    parser.add_argument("--key-file", help="a file holding the API key ($SWITCHYARD_API_KEY)")
    sub = parser.add_subparsers(dest="admin_command", required=True)
    for op in ROUTES.operations:
        if op.media != "application/json":
            continue
        one = sub.add_parser(command_name(op), help=op.summary)
        one.set_defaults(admin_operation=op)
        for name in op.parameters:
            one.add_argument(name)
        for q in op.query:
            one.add_argument(f"--{q.name}", dest=f"q_{q.name}", help=q.description)
        if op.body is not None:
            one.add_argument(
                "--body", help="the JSON body, or @FILE to read it from a file", default=None
            )
        if op.if_match:
            one.add_argument("--if-match", help="the ETag read before (default: read it now)")


def _key(args: argparse.Namespace) -> str | None:
    if args.key_file:
        return Path(args.key_file).read_text(encoding="utf-8").strip()
    return os.environ.get("SWITCHYARD_API_KEY") or None


def _path(template: str, args: argparse.Namespace, op: Operation) -> str:
    path = template
    for name in op.parameters:
        path = path.replace("{" + name + "}", quote(str(getattr(args, name)), safe=""))
    return path


def _request(
    url: str, method: str, key: str | None, body: Any = None, if_match: str | None = None
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if if_match:
        request.add_header("If-Match", if_match)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    text = raw.decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return status, {k.lower(): v for k, v in headers.items()}, parsed


def run(args: argparse.Namespace) -> int:
    op: Operation = args.admin_operation
    base = args.url.rstrip("/")
    try:
        key = _key(args)
    except OSError as exc:
        print(f"switchyard admin: --key-file: {exc.strerror}", file=sys.stderr)  # noqa: T201
        return 2
    query = {q.name: getattr(args, f"q_{q.name}") for q in op.query}
    query = {k: v for k, v in query.items() if v is not None}
    url = base + _path(op.path, args, op) + (f"?{urlencode(query)}" if query else "")
    body: Any = None
    if op.body is not None:
        text = args.body or "{}"
        try:
            if text.startswith("@"):
                text = Path(text[1:]).read_text(encoding="utf-8")
            body = json.loads(text)
        except (OSError, ValueError) as exc:
            print(f"switchyard admin: --body: {exc}", file=sys.stderr)  # noqa: T201
            return 2
    try:
        if_match = getattr(args, "if_match", None)
        if op.if_match and if_match is None and op.etag_from is not None:
            status, headers, answer = _request(base + _path(op.etag_from, args, op), "GET", key)
            if status != 200:
                return _refused(status, answer)
            if_match = headers.get("etag")
        status, _, answer = _request(url, op.method, key, body, if_match)
    except OSError as exc:
        print(f"switchyard admin: cannot reach {base}: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if status >= 300:
        return _refused(status, answer)
    print(json.dumps(answer, indent=2, ensure_ascii=False))  # noqa: T201
    return 0


def _refused(status: int, answer: Any) -> int:
    message = answer.get("error") if isinstance(answer, dict) else answer
    print(f"switchyard admin: {status}: {message}", file=sys.stderr)  # noqa: T201
    return 1
