"""`switchyard` command line: parse arguments, load and compile config, run. No logic here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from switchyard import __version__
from switchyard.audit import commands as audit_commands
from switchyard.auth import keys_cli
from switchyard.config.load import ConfigError, demo_config_path, load, load_plan
from switchyard.observability import logging as observability_logging
from switchyard.pins import commands as pins_commands

log = logging.getLogger("switchyard")

DEMOS = ("clock", "notes")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchyard", description="An MCP gateway.")
    p.add_argument("--version", action="version", version=f"switchyard {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config", "-c", help="config file (YAML or JSON); default: the bundled demo"
        )
        sp.add_argument(
            "--log-level", default="info", choices=["debug", "info", "warning", "error"]
        )
        sp.add_argument("--log-file", help="write logs here instead of stderr")

    serve = sub.add_parser("serve", help="serve MCP over HTTP (/mcp, /sse)")
    common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)

    stdio = sub.add_parser("stdio", help="serve MCP on stdin/stdout")
    common(stdio)
    stdio.add_argument(
        "--server",
        help="serve this virtual server; with authentication on, the API key comes from "
        "$SWITCHYARD_API_KEY",
    )

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")

    keys_cli.add_parser(sub)

    def config_only(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", help="config file; default: the bundled demo")

    audit_commands.add_parser(sub, config_only)
    pins_commands.add_parser(sub, config_only)

    demo = sub.add_parser("demo", help="run a bundled demo backend on stdio")
    demo.add_argument("name", choices=DEMOS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        return _check(args.file)
    if args.command == "demo":
        return _demo(args.name)
    if args.command == "keys":
        return keys_cli.run(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "pins":
        return _pins(args)
    observability_logging.setup(args.log_level, args.log_file)
    path = Path(args.config) if args.config else demo_config_path()
    try:
        plan, config, warnings = load_plan(path)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    for warning in warnings:
        log.warning("%s", warning)
    log.info("config %s: %d backends", path, len(plan.backends))
    if args.command == "serve":
        return _serve(plan, config, args.host, args.port)
    return _stdio(plan, config, args.server)


def _check(file: str) -> int:
    try:
        config, warnings = load(file)
        from switchyard.config.load import compile_plan

        plan = compile_plan(config, Path(file).resolve().parent)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)  # noqa: T201
    names = ", ".join(b.name for b in plan.backends) or "none"
    print(f"{file}: OK ({len(plan.backends)} servers: {names})")  # noqa: T201
    return 0


def _audit(args: argparse.Namespace) -> int:
    from switchyard.config.load import audit, storage

    path = Path(args.config) if args.config else demo_config_path()
    try:
        config, _ = load(path)
        base = path.resolve().parent
        settings = audit(config, base, need_key=False)
        where = storage(config, base)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    assert settings is not None
    return audit_commands.run(args, where, settings)


def _pins(args: argparse.Namespace) -> int:
    from switchyard.config.load import audit, storage

    path = Path(args.config) if args.config else demo_config_path()
    try:
        config, _ = load(path)
        base = path.resolve().parent
        where = storage(config, base)
        audited = audit(config, base)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    # A decision is a pin event: it is logged like the gateway's own, and audited.
    observability_logging.setup("info", None)
    return pins_commands.run(args, where, audited)


def _serve(plan: object, config: object, host: str, port: int) -> int:
    from switchyard.config.load import auth_settings
    from switchyard.config.schema import SwitchyardConfig
    from switchyard.downstream.http import HttpApp, HttpSettings, run
    from switchyard.gateway import Gateway, Plan

    assert isinstance(plan, Plan) and isinstance(config, SwitchyardConfig)
    gw = config.gateway
    auth = auth_settings(config, host, port) if config.auth.enabled else None
    app = HttpApp(
        Gateway(plan),
        HttpSettings(
            host=host,
            port=port,
            allowed_origins=tuple(gw.allowed_origins),
            allowed_hosts=tuple(gw.allowed_hosts),
            max_body_bytes=gw.max_body_bytes,
            max_headers=gw.limits.max_headers,
            max_header_bytes=gw.limits.max_header_bytes,
            header_timeout_s=gw.limits.header_timeout,
            body_timeout_s=gw.limits.body_timeout,
            max_in_flight_per_client=gw.limits.max_in_flight_per_client,
            memory_budget_bytes=gw.limits.memory_budget,
            json=json_limits(gw.limits),
        ),
        auth,
    )
    run(app, host, port)
    return 0


def json_limits(limits: Any) -> Any:
    from switchyard.wire.strict import JsonLimits

    return JsonLimits(
        max_depth=limits.max_json_depth,
        max_string_bytes=limits.max_json_string_bytes,
        max_array_items=limits.max_json_array_items,
        max_object_keys=limits.max_json_object_keys,
    )


def _stdio(plan: object, config: object, server: str | None) -> int:
    import os

    import uvloop

    from switchyard.auth.authenticator import Authenticator, Refusal, open_authenticator
    from switchyard.config.load import auth_settings
    from switchyard.config.schema import SwitchyardConfig
    from switchyard.downstream.stdio import Reverify, StdioServer
    from switchyard.gateway import Gateway, Plan
    from switchyard.policies.base import Identity

    assert isinstance(plan, Plan) and isinstance(config, SwitchyardConfig)
    if server is not None and server not in config.virtual_servers:
        print(f"switchyard: no virtual server named {server!r}", file=sys.stderr)  # noqa: T201
        return 2

    async def identify() -> tuple[Identity | None, Authenticator | None, Reverify | None]:
        """With authentication on, the one caller of this process: $SWITCHYARD_API_KEY's, and
        a check that the key is still good (the authenticator stays open for it)."""
        if not config.auth.enabled:
            return None, None, None
        authenticator = await open_authenticator(auth_settings(config, "127.0.0.1", 0))
        key = os.environ.get("SWITCHYARD_API_KEY", "")
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        resource = authenticator.resource_for(server)

        async def reverify() -> str | None:
            """Why the key is no longer good; None while it is (or the store cannot say)."""
            outcome = await authenticator.authenticate(headers, b"", resource)
            if isinstance(outcome, Refusal) and outcome.status < 500:
                return outcome.message
            return None

        try:
            outcome = await authenticator.authenticate(headers, b"", resource)
            if isinstance(outcome, Refusal):
                raise SystemExit(f"switchyard: {outcome.message} ($SWITCHYARD_API_KEY)")
            roles = next((v.roles for v in plan.views if v.name == server), None)
            if roles is not None and roles.isdisjoint(outcome.roles):
                raise SystemExit(
                    f"switchyard: virtual server {server!r} needs one of roles {sorted(roles)}"
                )
        except BaseException:
            await authenticator.aclose()
            raise
        return outcome, authenticator, reverify

    async def run() -> None:
        identity, authenticator, reverify = await identify()
        gateway = Gateway(plan)
        try:
            await gateway.start()
            stdio = StdioServer(gateway, server, identity, reverify=reverify)
            try:
                await stdio.serve()
            finally:
                await gateway.stop()
        finally:
            if authenticator is not None:
                await authenticator.aclose()
        if stdio.refused is not None:
            raise SystemExit(f"switchyard: {stdio.refused} ($SWITCHYARD_API_KEY); exiting")

    uvloop.run(run())
    return 0


def _demo(name: str) -> int:
    if name == "clock":
        from switchyard.demo.clock import main as run
    else:
        from switchyard.demo.notes import main as run
    run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
