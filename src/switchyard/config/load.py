"""Load a YAML or JSON config, resolve `${VAR}` secrets, validate, compile to a `Plan`.

Errors name the offending key (`servers.github.timeout: …`) and never echo secret values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import replace
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from switchyard.audit.settings import AuditSettings, RawArgumentsRule
from switchyard.auth.authenticator import AuthSettings
from switchyard.auth.jwt_verifier import IssuerConfig
from switchyard.call import API_KEYS
from switchyard.config.allowed_urls import PatternError, UrlPattern, redacted
from switchyard.config.approvals import ApprovalConfigError, compile_approvals
from switchyard.config.rate_limits import RateLimitError, compile_limits
from switchyard.config.redaction import compile_redaction
from switchyard.config.schema import (
    DESKTOP_IGNORED_KEYS,
    NAME_PATTERN,
    ServerConfig,
    SwitchyardConfig,
)
from switchyard.gateway import GatewaySettings, Plan
from switchyard.observability.settings import ObservabilitySettings
from switchyard.observability.tracing import TracingSettings
from switchyard.pins.settings import PinningSettings
from switchyard.policies.access import AccessControl, AccessRules, Rule
from switchyard.policies.approvals import Approval, Approvals
from switchyard.policies.base import PolicySpec
from switchyard.policies.rate_limits import Limiter, RateLimits
from switchyard.policies.redaction import Redaction
from switchyard.policies.request_log import RequestLog
from switchyard.policies.result_cache import CacheRule, ResultCache, ResultCaching
from switchyard.routing.names import LLM_SAFE
from switchyard.routing.views import Selector, ViewSpec
from switchyard.sessions import SessionLimits
from switchyard.storage.settings import StorageSettings
from switchyard.upstream.backend import BackendSettings
from switchyard.upstream.breaker import BreakerSettings
from switchyard.upstream.credentials import CredentialSpec, check_token_url
from switchyard.upstream.health import HealthSettings
from switchyard.upstream.http import HttpSettings as UpstreamHttpSettings
from switchyard.upstream.retries import RetrySettings
from switchyard.upstream.stdio import StdioSettings

log = logging.getLogger("switchyard.config")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration is invalid; the message names every offending key."""


def demo_config_path() -> Path:
    return Path(str(resources.files("switchyard.demo").joinpath("demo.yaml")))


def load(path: str | Path) -> tuple[SwitchyardConfig, list[str]]:
    """Parse and validate; returns the config and the warnings to show the user."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        # Only the problem and its position: the offending line may hold a secret.
        problem = getattr(exc, "problem", None) or "syntax error"
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML/JSON: {problem}{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    warnings: list[str] = []
    desktop = data.get("mcpServers")
    if isinstance(desktop, dict):
        # A desktop client's config file (Claude Desktop, Cursor) carries the client's own
        # settings next to `mcpServers`: accepted, each named, so nothing is silently dropped.
        for key in sorted(set(data) - set(SwitchyardConfig.model_fields)):
            warnings.append(f"{key}: not a Switchyard setting (a desktop client's key); ignored")
            del data[key]
        for name, entry in desktop.items():
            if isinstance(entry, dict):
                for key in sorted(set(entry) & DESKTOP_IGNORED_KEYS):
                    warnings.append(
                        f"mcpServers.{name}.{key}: not supported by Switchyard; ignored"
                    )
                    del entry[key]
    try:
        config = SwitchyardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(p, exc)) from None
    _check(config)
    return config, warnings


def validate_document(data: object, where: str) -> SwitchyardConfig:
    """A configuration given as data (the admin API, the database), validated like a file."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    try:
        config = SwitchyardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(Path(where), exc)) from None
    _check(config)
    return config


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {loc}: {message}")
    return "\n".join(lines)


def _check(config: SwitchyardConfig) -> None:
    problems: list[str] = []
    for name in config.servers.keys() & config.mcpServers.keys():
        problems.append(f"mcpServers.{name}: server {name!r} is also defined under servers")
    prefixes: dict[str, str] = {}
    for section, servers in (("servers", config.servers), ("mcpServers", config.mcpServers)):
        for name, server in servers.items():
            where = f"{section}.{name}"
            if re.fullmatch(NAME_PATTERN, name) is None:
                problems.append(f"{where}: server names must match {NAME_PATTERN}")
            if server.url is not None and server.urls is not None:
                problems.append(f"{where}: set `url` or `urls`, not both")
            elif server.urls is not None and server.command is not None:
                problems.append(f"{where}.urls: a stdio server takes `replicas`, not `urls`")
            elif server.replicas > 1 and server.command is None:
                problems.append(f"{where}.replicas: only for a stdio `command` (HTTP: `urls`)")
            if server.url is None and server.urls is not None:
                for i, url in enumerate(server.urls):
                    if not url.startswith("${") and not re.match(r"^https?://", url):
                        problems.append(f"{where}.urls[{i}]: must be an http:// or https:// URL")
                    if server.type == "stdio":
                        problems.append(f"{where}.type: 'stdio' needs `command`, not `urls`")
            elif (server.command is None) == (server.url is None):
                problems.append(f"{where}: set exactly one of `command` (stdio) or `url` (HTTP)")
            elif server.command is not None and server.type not in (None, "stdio"):
                problems.append(f"{where}.type: {server.type!r} needs `url`, not `command`")
            elif server.url is not None:
                if server.type == "stdio":
                    problems.append(f"{where}.type: 'stdio' needs `command`, not `url`")
                if not server.url.startswith("${") and not re.match(r"^https?://", server.url):
                    problems.append(f"{where}.url: must be an http:// or https:// URL")
            if server.disabled:
                continue
            prefix = name if server.prefix is None else server.prefix
            if prefix and prefix in prefixes:
                problems.append(
                    f"{where}.prefix: {prefix!r} is already the prefix of {prefixes[prefix]!r}"
                )
            prefixes.setdefault(prefix, where)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def _resolve(value: str, where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        found = os.environ.get(var)
        if found is not None:
            return found
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {var} is not set")

    return _VAR.sub(sub, value)


def _env_file(path: str, where: str) -> dict[str, str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


def resolve_command(command: str) -> str:
    """PATH first, then the directory of the running interpreter (the gateway's own venv)."""
    found = shutil.which(command)
    if found is None:
        found = shutil.which(command, path=str(Path(sys.executable).parent))
    return found or command


def _check_allowed(
    where: str,
    settings: StdioSettings | UpstreamHttpSettings,
    config: SwitchyardConfig,
    written: str | None,
) -> None:
    """A backend outside `gateway.allowed_backends` is refused before anything is started."""
    allowed = config.gateway.allowed_backends
    if allowed is None:
        return
    if isinstance(settings, StdioSettings):
        forms = {settings.command, written or settings.command}
        if not any(fnmatchcase(form, g) for form in forms for g in allowed.commands):
            raise ConfigError(
                f"{where}.command: {settings.command!r} is not in gateway.allowed_backends.commands"
            )
    else:
        patterns = []
        for i, glob in enumerate(allowed.urls):
            try:
                patterns.append(UrlPattern.parse(glob))
            except (PatternError, ValueError) as exc:
                raise ConfigError(f"gateway.allowed_backends.urls[{i}]: {exc}") from None
        if not any(p.matches(settings.url) for p in patterns):
            # As written, and redacted: the resolved URL may carry ${VAR} secrets.
            shown = redacted(written or settings.url)
            raise ConfigError(f"{where}.url: {shown!r} is not in gateway.allowed_backends.urls")


def _credentials(
    where: str, server: ServerConfig, transport: StdioSettings | UpstreamHttpSettings
) -> CredentialSpec | None:
    auth = server.auth
    if auth is None:
        return None
    if not isinstance(transport, UpstreamHttpSettings) or transport.transport == "sse":
        raise ConfigError(f"{where}.auth: credentials need a Streamable HTTP `url`")
    if any(name.lower() == "authorization" for name in transport.headers):
        raise ConfigError(f"{where}.auth: a static Authorization header would override it")
    try:
        token_url = check_token_url(_resolve(auth.token_url, f"{where}.auth.token_url"))
    except ValueError as exc:
        raise ConfigError(f"{where}.auth.token_url: {exc}") from None
    return CredentialSpec(
        kind=auth.type,
        token_url=token_url,
        client_id=_resolve(auth.client_id, f"{where}.auth.client_id"),
        client_secret=_resolve(auth.client_secret, f"{where}.auth.client_secret"),
        resource=auth.resource or transport.url,
        audience=auth.audience,
        scope=auth.scope,
        lists_max_principals=auth.lists_max_principals,
        lists_idle_s=auth.lists_idle,
    )


def _backend(
    name: str,
    where: str,
    server: ServerConfig,
    gw_timeout: float,
    max_request: float,
    max_msg: int,
    base: Path,
    max_in_flight: int = 256,
    config: SwitchyardConfig | None = None,
    shared_env: dict[str, str] | None = None,
) -> BackendSettings:
    transport: StdioSettings | UpstreamHttpSettings
    if server.command is not None:
        env = dict(shared_env or {})
        if server.envFile:
            env.update(_env_file(str(base / server.envFile), f"{where}.envFile"))
        env.update({k: _resolve(v, f"{where}.env.{k}") for k, v in server.env.items()})
        transport = StdioSettings(
            command=resolve_command(_resolve(server.command, f"{where}.command")),
            args=tuple(_resolve(a, f"{where}.args[{i}]") for i, a in enumerate(server.args)),
            env=env,
            cwd=server.cwd,
            era=server.era,
            max_message_bytes=max_msg,
            stderr_level=_stderr_level(config),
        )
    else:
        first = server.url if server.url is not None else (server.urls or [""])[0]
        kind = {
            None: "auto",
            "sse": "sse",
            "streamable-http": "streamable-http",
            "http": "streamable-http",
        }[server.type]
        url = _resolve(first, f"{where}.url" if server.url is not None else f"{where}.urls[0]")
        if not re.match(r"^https?://", url):
            raise ConfigError(f"{where}.url: must resolve to an http:// or https:// URL")
        transport = UpstreamHttpSettings(
            url=url,
            headers={k: _resolve(v, f"{where}.headers.{k}") for k, v in server.headers.items()},
            transport=kind,
            era=server.era,
            max_message_bytes=max_msg,
        )
    if config is not None:
        _check_allowed(where, transport, config, server.command or first)
    replicas: tuple[StdioSettings | UpstreamHttpSettings, ...] = ()
    if isinstance(transport, StdioSettings) and server.replicas > 1:
        replicas = (transport,) * server.replicas
    elif isinstance(transport, UpstreamHttpSettings) and server.urls and len(server.urls) > 1:
        others: list[StdioSettings | UpstreamHttpSettings] = [transport]
        for i, written in enumerate(server.urls[1:], start=1):
            other = _resolve(written, f"{where}.urls[{i}]")
            if not re.match(r"^https?://", other):
                raise ConfigError(f"{where}.urls[{i}]: must resolve to an http:// or https:// URL")
            replica = replace(transport, url=other)
            if config is not None:
                _check_allowed(f"{where}.urls[{i}]", replica, config, written)
            others.append(replica)
        replicas = tuple(others)
    credentials = _credentials(where, server, transport)
    return BackendSettings(
        name=name,
        prefix=name if server.prefix is None else server.prefix,
        transport=transport,
        timeout_s=server.timeout or gw_timeout,
        max_request_s=server.max_request_time or max_request,
        isolation=server.isolation,
        max_isolated=server.max_isolated,
        max_isolated_per_principal=server.max_isolated_per_principal,
        spawn_burst=server.spawn_burst,
        spawns_per_s=server.spawns_per_second,
        max_in_flight=max_in_flight,
        credentials=credentials,
        replicas=replicas,
        health=HealthSettings(
            interval_s=server.health.interval,
            timeout_s=server.health.timeout,
            unhealthy_after=server.health.unhealthy_after,
            enabled=server.health.enabled,
        ),
        breaker=BreakerSettings(
            failures=server.breaker.failures,
            open_s=server.breaker.open,
            max_open_s=max(server.breaker.max_open, server.breaker.open),
            jitter=server.breaker.jitter,
            enabled=server.breaker.enabled,
        ),
        retries=RetrySettings(attempts=server.retries.attempts, backoff_s=server.retries.backoff),
        unavailable_grace_s=server.unavailable_grace,
    )


def compile_plan(config: SwitchyardConfig, base_dir: Path | None = None) -> Plan:
    """Relative paths in the config (`envFile`) resolve against `base_dir`, the file's folder."""
    base = base_dir or Path.cwd()
    gw = config.gateway
    backends: list[BackendSettings] = []
    shared_env = shared_backend_env(config)
    for section, servers in (("servers", config.servers), ("mcpServers", config.mcpServers)):
        for name, server in servers.items():
            if server.disabled:
                log.info("server %r is disabled", name)
                continue
            backends.append(
                _backend(
                    name,
                    f"{section}.{name}",
                    server,
                    gw.request_timeout,
                    gw.max_request_time,
                    gw.max_message_bytes,
                    base,
                    gw.limits.max_in_flight_per_backend,
                    config,
                    shared_env,
                )
            )
    observed = observability(config)
    policies: tuple[PolicySpec, ...] = (PolicySpec(RequestLog),) if gw.log_requests else ()
    if not gw.log_requests and (observed.metrics or observed.tracing.enabled):
        # Metrics and spans are taken where the access record is; no record is written.
        policies = (PolicySpec(RequestLog, False),)
    access = access_rules(config) if config.auth.enabled else None
    if access is not None:
        policies = (*policies, PolicySpec(AccessControl, access))
    stored = storage(config, base)
    limiter = rate_limits(config, stored)
    if limiter is not None:
        # After access control: a call the caller may not make is never counted.
        policies = (*policies, PolicySpec(RateLimits, limiter))
    gate = approvals(config, stored)
    if gate is not None:
        # After rate limits: only an allowed, admitted call can make a ticket.
        policies = (*policies, PolicySpec(Approval, gate))
    results = result_cache(config)
    if results is not None:
        # After every check (a hit is refused, counted and recorded like any call) and
        # outside redaction: what is kept is the result as its caller received it.
        policies = (*policies, PolicySpec(ResultCaching, results))
    redactor = compile_redaction(config.redaction, default_issuer(config), _resolve, ConfigError)
    if redactor is not None:
        # Innermost: next to the backend, so every policy outside sees redacted results.
        policies = (*policies, PolicySpec(Redaction, redactor))
    settings = GatewaySettings(
        separator=gw.separator,
        page_size=gw.page_size,
        startup_wait_s=gw.startup_wait,
        instructions=gw.instructions,
        session_idle_timeout_s=gw.session_idle_timeout,
        max_sessions=gw.limits.max_sessions,
        sessions=SessionLimits(
            max_sessions=gw.limits.max_sessions,
            max_per_principal=gw.limits.max_sessions_per_principal,
            idle_timeout_s=gw.session_idle_timeout,
            max_lifetime_s=gw.session_max_lifetime,
            outbox_bytes=gw.limits.session_outbox_bytes,
            outbox_budget_bytes=gw.limits.outbox_budget,
        ),
        policies=policies,
        access=access,
        redaction=redactor,
        limits=limiter,
        approvals=gate,
    )
    return Plan(
        gateway=settings,
        backends=tuple(backends),
        views=views(config),
        storage=stored,
        pinning=pinning(config),
        audit=audit(config, base),
        observability=observed,
    )


def _stderr_level(config: SwitchyardConfig | None) -> int:
    level = config.logging.backend_stderr_level if config is not None else "info"
    return {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}.get(
        level, logging.ERROR
    )


def observability(config: SwitchyardConfig) -> ObservabilitySettings:
    """`metrics:`, `tracing:` and `logging:`, compiled."""
    listen: tuple[str, int] | None = None
    if config.metrics.listen is not None:
        host, _, port = config.metrics.listen.rpartition(":")
        if not 0 < int(port) <= 65535:
            raise ConfigError(f"metrics.listen: port must be 1 to 65535, got {port}")
        listen = (host.removeprefix("[").removesuffix("]"), int(port))
    tr = config.tracing
    endpoint = _resolve(tr.otlp_endpoint, "tracing.otlp_endpoint") if tr.otlp_endpoint else None
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError("tracing.otlp_endpoint: must be an http:// or https:// URL")
    return ObservabilitySettings(
        metrics=config.metrics.enabled,
        metrics_listen=listen,
        tracing=TracingSettings(
            enabled=tr.enabled,
            endpoint=endpoint,
            headers=tuple(
                (k, _resolve(v, f"tracing.otlp_headers.{k}")) for k, v in tr.otlp_headers.items()
            ),
            sample_ratio=tr.sample_ratio,
            service_name=tr.service_name,
        ),
        log_format=config.logging.format,
    )


def result_cache(config: SwitchyardConfig) -> ResultCache | None:
    """The result cache of this configuration, None without rules. Its policy version is a
    digest of every section that decides what a caller may see or receives: entries never
    outlive the configuration they were made under."""
    section = config.cache
    if not section.rules:
        return None
    decisive = config.model_dump(
        mode="json",
        include={"auth", "redaction", "rate_limits", "virtual_servers", "cache", "pinning"},
    )
    version = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]
    return ResultCache(
        [CacheRule(r.backend, r.tool, r.ttl, r.assume_read_only) for r in section.rules],
        max_entries=section.max_entries,
        max_bytes=section.max_bytes,
        policy_version=version,
    )


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def shared_backend_env(config: SwitchyardConfig) -> dict[str, str]:
    """What every stdio backend gets on top of the few inherited variables: the proxy
    variables (when `gateway.proxy_env`), then `gateway.env`; a server's own `envFile` and
    `env` come after and win."""
    env: dict[str, str] = {}
    if config.gateway.proxy_env:
        for name in PROXY_VARIABLES:
            for form in (name, name.lower()):
                if (value := os.environ.get(form)) is not None:
                    env[form] = value
    env.update({k: _resolve(v, f"gateway.env.{k}") for k, v in config.gateway.env.items()})
    return env


def rate_limits(config: SwitchyardConfig, stored: StorageSettings) -> Limiter | None:
    try:
        return compile_limits(config.rate_limits, stored, default_issuer(config))
    except RateLimitError as exc:
        raise ConfigError(f"invalid configuration:\n  {exc}") from None


def approvals(config: SwitchyardConfig, stored: StorageSettings) -> Approvals | None:
    try:
        settings = compile_approvals(
            config.approvals, stored, default_issuer(config), _resolve, config.auth.enabled
        )
    except ApprovalConfigError as exc:
        raise ConfigError(f"invalid configuration:\n  {exc}") from None
    return Approvals(settings) if settings is not None else None


def pinning(config: SwitchyardConfig) -> PinningSettings:
    section = config.pinning
    known = config.servers.keys() | config.mcpServers.keys()
    for name in section.backends:
        if name not in known:
            raise ConfigError(f"pinning.backends.{name}: no server named {name!r}")
    return PinningSettings(
        mode=section.mode,
        backends={name: b.mode for name, b in section.backends.items()},
        poisoning=section.poisoning.model_dump(),
        poll_s=section.poll_interval,
    )


def storage(config: SwitchyardConfig, base: Path) -> StorageSettings:
    section = config.storage
    url = section.database_url
    redis_url = section.redis_url
    return StorageSettings(
        sqlite_path=(base / section.data_dir / "switchyard.db").resolve(),
        database_url=_resolve(url, "storage.database_url") if url else None,
        redis_url=_resolve(redis_url, "storage.redis_url") if redis_url else None,
    )


MIN_AUDIT_KEY_CHARS = 16


def audit(config: SwitchyardConfig, base: Path, *, need_key: bool = True) -> AuditSettings | None:
    """The `audit:` section; None when off. `need_key=False` (reading the trail back: verify,
    export, key rotation) gives the settings even when off, with the arguments' HMAC key left
    unresolved."""
    section = config.audit
    if need_key and not section.enabled:
        return None
    key = b""
    if need_key:
        if not section.hmac_key:
            raise ConfigError("audit.hmac_key: required when audit is enabled")
        resolved = _resolve(section.hmac_key, "audit.hmac_key")
        if len(resolved) < MIN_AUDIT_KEY_CHARS:
            raise ConfigError(f"audit.hmac_key: at least {MIN_AUDIT_KEY_CHARS} characters")
        key = resolved.encode("utf-8")
    anchor = section.anchor_file
    return AuditSettings(
        hmac_key=key,
        keys_dir=(base / section.keys_dir).resolve(),
        anchor_file=(base / anchor).resolve() if anchor else None,
        checkpoint_every=section.checkpoint_every,
        checkpoint_interval_s=section.checkpoint_interval,
        retention_days=section.retention_days,
        on_failure=section.on_failure,
        buffer_size=section.buffer_size,
        max_write_delay_s=section.max_write_delay,
        raw_arguments=tuple(
            RawArgumentsRule(
                tuple(r.principals) if r.principals is not None else None,
                tuple(r.backends) if r.backends is not None else None,
                tuple(r.names) if r.names is not None else None,
            )
            for r in section.raw_arguments
        ),
        max_raw_arguments_bytes=section.max_raw_arguments_bytes,
    )


def views(config: SwitchyardConfig) -> tuple[ViewSpec, ...]:
    out: list[ViewSpec] = []
    for name, virtual in config.virtual_servers.items():
        where = f"virtual_servers.{name}"
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name) is None:
            raise ConfigError(f"{where}: names match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}")
        for public, renamed in virtual.rename.items():
            if LLM_SAFE.fullmatch(renamed) is None:
                raise ConfigError(f"{where}.rename.{public}: {renamed!r} is not a valid name")
        selectors = tuple(
            Selector.build(kind, s.backends, s.names)
            for kind, picks in (
                ("tools", virtual.tools),
                ("prompts", virtual.prompts),
                ("resources", virtual.resources),
                ("resourceTemplates", virtual.resource_templates),
            )
            for s in picks
        )
        out.append(
            ViewSpec(
                name,
                selectors,
                dict(virtual.rename),
                dict(virtual.describe),
                frozenset(virtual.roles) if virtual.roles is not None else None,
            )
        )
    return tuple(out)


def auth_settings(config: SwitchyardConfig, host: str, port: int) -> AuthSettings:
    """The `auth:` section for the HTTP listener bound at host:port."""
    auth = config.auth
    base = (auth.public_url or f"http://{host}:{port}").rstrip("/")
    issuers = tuple(
        IssuerConfig(
            issuer=i.issuer,
            jwks_uri=i.jwks_uri,
            static_keys=tuple(i.static_keys),
            algorithms=tuple(i.algorithms),
            roles_claim=i.roles_claim,
        )
        for i in auth.issuers
    )
    return AuthSettings(
        resource=base + "/mcp",
        authorization_servers=tuple(auth.authorization_servers),
        api_keys=auth.api_keys,
        data_dir=auth.data_dir,
        database_url=_resolve(auth.database_url, "auth.database_url")
        if auth.database_url
        else None,
        issuers=issuers,
        scopes={kind: tuple(needed) for kind, needed in auth.scopes.items()},
    )


def default_issuer(config: SwitchyardConfig) -> str:
    """Whose subjects a rule's bare `principals` name (access, rate-limit and redaction rules
    alike)."""
    auth = config.auth
    default = auth.default_issuer or (
        API_KEYS if auth.api_keys or not auth.issuers else auth.issuers[0].issuer
    )
    known = {API_KEYS, *(i.issuer for i in auth.issuers)}
    if default not in known:
        raise ConfigError(f"auth.default_issuer: {default!r} is neither 'api_key' nor an issuer")
    return default


def access_rules(config: SwitchyardConfig) -> AccessRules:
    auth = config.auth
    default = default_issuer(config)
    rules = []
    for r in auth.rules:
        # Bare principal names belong to one issuer: another issuer's `alice` is not ours.
        issuers = r.issuers if r.issuers is not None else ([default] if r.principals else None)
        rules.append(
            Rule.build(
                r.effect == "allow",
                r.principals,
                r.roles,
                r.backends,
                r.names,
                list(r.kinds),
                issuers,
            )
        )
    return AccessRules(tuple(rules))


def load_plan(path: str | Path) -> tuple[Plan, SwitchyardConfig, list[str]]:
    config, warnings = load(path)
    return compile_plan(config, Path(path).resolve().parent), config, warnings
