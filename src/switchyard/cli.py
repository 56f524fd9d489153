"""`switchyard` command line: parse arguments, load and compile config, run. No logic here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from switchyard import __version__, approvals_cli, collector
from switchyard.audit import commands as audit_commands
from switchyard.auth import keys_cli
from switchyard.auth.key_store import default_data_dir
from switchyard.config.lints import lint
from switchyard.config.load import ConfigError, demo_config_path, load, load_plan
from switchyard.config.reload import Reloader
from switchyard.downstream import standard_streams
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
            "--log-level",
            choices=["debug", "info", "warning", "error"],
            help="the gateway's own log lines' level (default: logging.level, info)",
        )
        sp.add_argument("--log-file", help="write logs here instead of stderr")
        sp.add_argument(
            "--log-format",
            choices=["text", "json"],
            help="the gateway's own log lines: text or json (default: logging.format, text)",
        )

    serve = sub.add_parser("serve", help="serve MCP over HTTP (/mcp, /sse)")
    common(serve)
    serve.add_argument("--host", type=_host, default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--port", type=_port, default=8080, help="port to listen on (0: any free port)"
    )

    stdio = sub.add_parser("stdio", help="serve MCP on stdin/stdout")
    common(stdio)
    stdio.add_argument(
        "--server",
        help="serve this virtual server; with authentication on, the API key comes from "
        "$SWITCHYARD_API_KEY",
    )

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser(
        "check", help="validate a config file and show what looks like a mistake"
    )
    check.add_argument("file", nargs="?", help="the config file (or --config)")
    check.add_argument("--config", "-c", dest="config_file", help="the config file")

    backends = sub.add_parser(
        "backends",
        help="start the configured backends and show each one's state",
        description="Starts the backends of the config in this process (as `serve` would) "
        "and shows name, transport, era, state, tool count and last error.",
    )
    tools = sub.add_parser(
        "tools",
        help="start the configured backends and show the tools a caller would see",
        description="Applies the virtual server's view and the access rules exactly as the "
        "gateway does.",
    )
    for sp in (backends, tools):
        sp.add_argument(
            "--config", "-c", help="config file (YAML or JSON); default: the bundled demo"
        )
        sp.add_argument("--json", action="store_true", help="JSON instead of a table")
        sp.add_argument(
            "--log-level", default="error", choices=["debug", "info", "warning", "error"]
        )
        sp.add_argument("--log-file", help="write logs here instead of stderr")
    tools.add_argument("--as", dest="principal", metavar="PRINCIPAL", help="the caller")
    tools.add_argument(
        "--role", action="append", default=[], dest="roles", help="the caller's role (repeatable)"
    )
    tools.add_argument("--issuer", help="who vouches for the caller (default: auth.default_issuer)")
    tools.add_argument("--server", metavar="VIEW", help="a virtual server instead of /mcp")

    keys_cli.add_parser(sub)

    def config_only(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", help="config file; default: the bundled demo")

    audit_commands.add_parser(sub, config_only)
    pins_commands.add_parser(sub, config_only)
    approvals_cli.add_parser(sub, config_only)
    # Its subcommands come from the admin route table, imported only when it is used.
    admin = sub.add_parser(
        "admin",
        help="the admin API of a running gateway (every operation, one subcommand each)",
        add_help=False,
    )
    admin.add_argument("admin_args", nargs=argparse.REMAINDER)

    demo = sub.add_parser("demo", help="run a bundled demo backend on stdio")
    demo.add_argument("name", choices=DEMOS)
    return p


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a number from 0 to 65535 (0: any free port), got {text!r}"
        )
    return port


def _host(text: str) -> str:
    if not text or any(c.isspace() for c in text) or "/" in text:
        raise argparse.ArgumentTypeError(f"not a host name or address: {text!r}")
    if text.count(":") == 1:
        # `localhost:8080` is a common slip: say so rather than failing to resolve it.
        raise argparse.ArgumentTypeError(f"{text!r}: give the host alone, and the port with --port")
    return text.removeprefix("[").removesuffix("]")


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["admin"]:
        # Parsed by its own parser, made from the admin route table (imported only here).
        from switchyard.admin import commands as admin_commands

        return admin_commands.main(given[1:])
    args = _parser().parse_args(argv)
    standard_streams.reserve()
    if args.command == "config":
        if args.file and args.config_file and args.file != args.config_file:
            print(  # noqa: T201
                "switchyard config check: give the file once (a path or --config), not two",
                file=sys.stderr,
            )
            return 2
        return _check(args.file or args.config_file or str(demo_config_path()))
    if args.command == "demo":
        return _demo(args.name)
    if args.command == "keys":
        if args.config:
            try:
                _key_store_from_config(args)
            except ConfigError as exc:
                print(f"switchyard keys: {exc}", file=sys.stderr)  # noqa: T201
                return 2
        return keys_cli.run(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "pins":
        return _pins(args)
    if args.command == "approvals":
        return _approvals(args)
    if args.command == "stdio" and (
        standard_streams.was_closed(0) or standard_streams.was_closed(1)
    ):
        which = "stdin" if standard_streams.was_closed(0) else "stdout"
        print(  # noqa: T201
            f"switchyard stdio: {which} is closed; this command speaks MCP on stdin/stdout "
            "and must be started by an MCP client (or use `switchyard serve` for HTTP)",
            file=sys.stderr,
        )
        return 2
    try:
        observability_logging.setup(args.log_level or "info", args.log_file)
    except OSError as exc:
        print(f"switchyard: --log-file {args.log_file}: {exc.strerror}", file=sys.stderr)  # noqa: T201
        return 2
    if args.command == "stdio" and standard_streams.is_terminal(0):
        print(  # noqa: T201
            "switchyard stdio: stdin is a terminal. This command speaks MCP (one JSON-RPC "
            "message per line) on stdin/stdout, for a client that starts it; type messages, "
            "or press Ctrl-D to end. For HTTP, run `switchyard serve`.",
            file=sys.stderr,
        )
    path = Path(args.config) if args.config else demo_config_path()
    try:
        plan, config, warnings = load_plan(path)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    # What the command line says wins over `logging:`, now and on every reload.
    observability_logging.pin(args.log_level, getattr(args, "log_format", None))
    observability_logging.configure(config.logging.level, config.logging.format)
    for warning in [*warnings, *lint(config)]:
        log.warning("%s", warning)
    log.info("config %s: %d backends", path, len(plan.backends))
    if args.command in ("backends", "tools"):
        return _inventory(plan, config, args)
    collector.tune()  # a serving process from here on
    if args.command == "serve":
        return _serve(plan, config, args.host, args.port, args.log_file, path)
    return _stdio(plan, config, args.server, path)


def _inventory(plan: object, config: object, args: argparse.Namespace) -> int:
    import json

    import uvloop

    from switchyard.call import Identity
    from switchyard.config.load import default_issuer
    from switchyard.config.schema import SwitchyardConfig
    from switchyard.gateway import Gateway, Plan
    from switchyard.inventory import Refused, backend_rows, table, tool_rows

    assert isinstance(plan, Plan) and isinstance(config, SwitchyardConfig)
    identity = None
    if args.command == "tools":
        if (args.roles or args.issuer) and not args.principal:
            print("switchyard tools: --role and --issuer describe --as; give --as", file=sys.stderr)  # noqa: T201
            return 2
        if args.principal and not config.auth.enabled:
            print(  # noqa: T201
                "switchyard tools: --as needs authentication on (auth.enabled): without it "
                "every caller sees the same tools",
                file=sys.stderr,
            )
            return 2
        if args.principal:
            identity = Identity(
                name=args.principal,
                roles=tuple(args.roles),
                issuer=args.issuer or default_issuer(config),
            )

    async def collect() -> list[dict[str, Any]]:
        gateway = Gateway(plan)
        try:
            await gateway.start()
            if args.command == "backends":
                return backend_rows(gateway)
            return tool_rows(gateway, identity, args.server)
        finally:
            await gateway.stop()

    try:
        rows = uvloop.run(collect())
    except Refused as exc:
        print(f"switchyard tools: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))  # noqa: T201
    elif args.command == "backends":
        print(table(rows, ["name", "transport", "era", "state", "tools", "error"]))  # noqa: T201
    else:
        print(table(rows, ["name", "backend", "description"]))  # noqa: T201
    return 0


def _key_store_from_config(args: argparse.Namespace) -> None:
    """Where the gateway run with `--config` keeps its keys, unless a flag says otherwise:
    the same settings the gateway's authenticator reads (`auth_settings`)."""
    from switchyard.config.load import auth_settings

    config, _ = load(args.config)
    if args.dsn or args.data_dir or args.store == "sqlite":
        return
    settings = auth_settings(config, "127.0.0.1", 0)
    if settings.database_url:
        args.dsn = settings.database_url
    elif args.store != "postgres":
        args.data_dir = settings.data_dir or str(default_data_dir())


def _check(file: str) -> int:
    try:
        config, warnings = load(file)
        from switchyard.config.load import compile_plan

        plan = compile_plan(config, Path(file).resolve().parent)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    for warning in [*warnings, *lint(config)]:
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


def _approvals(args: argparse.Namespace) -> int:
    from switchyard.config.load import approvals, audit, storage

    path = Path(args.config) if args.config else demo_config_path()
    try:
        config, _ = load(path)
        base = path.resolve().parent
        gate = approvals(config, storage(config, base))
        audited = audit(config, base)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    observability_logging.setup("info", None)
    return approvals_cli.run(args, gate, audited)


def _serve(
    plan: object, config: object, host: str, port: int, log_file: str | None, path: Path
) -> int:
    from switchyard.config.load import auth_settings
    from switchyard.config.schema import SwitchyardConfig
    from switchyard.downstream.http import (
        BindError,
        HttpApp,
        HttpSettings,
        announce,
        bind,
        bound_base,
        run,
    )
    from switchyard.gateway import Gateway, Plan

    assert isinstance(plan, Plan) and isinstance(config, SwitchyardConfig)
    if config.admin.dynamic_registration:
        plan, config = _database_source(plan, config, path)
        assert isinstance(plan, Plan) and isinstance(config, SwitchyardConfig)
    # The port first: one in use is reported before any backend is spawned.
    try:
        sock = bind(host, port)
    except BindError as exc:
        if log_file:
            log.error("%s", exc)
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    port = sock.getsockname()[1]
    announce(bound_base(host, sock), [v.name for v in plan.views])
    gw = config.gateway
    auth = auth_settings(config, host, port) if config.auth.enabled else None
    gateway = Gateway(plan)
    gateway.public_base = bound_base(host, sock)
    app = HttpApp(
        gateway,
        HttpSettings(
            host=host,
            port=port,
            allowed_origins=tuple(gw.allowed_origins),
            allowed_hosts=tuple(gw.allowed_hosts),
            trusted_proxies=tuple(gw.trusted_proxies),
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
    from switchyard.admin.install import install

    try:
        # SIGHUP reloads through the versioned configuration.
        admin_sock = install(app, config, Reloader(path, config, plan, gateway))
    except BindError as exc:
        sock.close()
        print(f"switchyard: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    run(app, sock, *([admin_sock] if admin_sock is not None else []))
    return 0


def _database_source(plan: Any, config: Any, path: Path) -> tuple[Any, Any]:
    """With dynamic registration the database holds the configuration: the file seeds it."""
    import asyncio

    from switchyard.config.load import compile_plan
    from switchyard.config.versions import database_source

    stored = asyncio.run(database_source(config, plan.storage))
    if stored is config:
        return plan, config
    return compile_plan(stored, path.resolve().parent), stored


def json_limits(limits: Any) -> Any:
    from switchyard.wire.strict import JsonLimits

    return JsonLimits(
        max_depth=limits.max_json_depth,
        max_string_bytes=limits.max_json_string_bytes,
        max_array_items=limits.max_json_array_items,
        max_object_keys=limits.max_json_object_keys,
    )


def _stdio(plan: object, config: object, server: str | None, path: Path) -> int:
    import asyncio
    import os
    import signal

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
        reloader = Reloader(path, config, plan, gateway)
        reloads: set[asyncio.Task[bool]] = set()

        def hangup() -> None:
            task = asyncio.create_task(reloader.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup)
        try:
            await gateway.start()
            metrics = await _metrics_listener(gateway, plan)
            stdio = StdioServer(gateway, server, identity, reverify=reverify)
            try:
                await stdio.serve()
            finally:
                if metrics is not None:
                    await metrics.aclose()
                await gateway.stop()
        finally:
            if authenticator is not None:
                await authenticator.aclose()
        if stdio.refused is not None:
            raise SystemExit(f"switchyard: {stdio.refused} ($SWITCHYARD_API_KEY); exiting")

    uvloop.run(run())
    return 0


async def _metrics_listener(gateway: Any, plan: Any) -> Any:
    """`metrics.listen` for `switchyard stdio` (which has no HTTP port of its own)."""
    from switchyard.downstream.scrape import MetricsListener

    listen = plan.observability.metrics_listen
    if listen is None or not plan.observability.metrics:
        return None
    listener = MetricsListener(gateway, *listen)
    await listener.start()
    return listener


def _demo(name: str) -> int:
    if name == "clock":
        from switchyard.demo.clock import main as run
    else:
        from switchyard.demo.notes import main as run
    run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
