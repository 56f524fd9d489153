"""The configuration file's schema. Field descriptions double as the reference documentation."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class LimitsConfig(BaseModel):
    """Request limits (the `gateway.limits:` section). Each has a test that crosses it."""

    model_config = ConfigDict(extra="forbid")

    max_headers: int = Field(100, ge=1, description="Request header lines (431 beyond).")
    max_header_bytes: int = Field(32768, ge=1024, description="Request header bytes (431 beyond).")
    header_timeout: float = Field(10.0, gt=0, description="Seconds to receive a request's head.")
    body_timeout: float = Field(
        30.0, gt=0, description="Seconds to receive a request's body (408)."
    )
    max_in_flight_per_client: int = Field(
        32, ge=1, description="Open requests per session or client (429 with Retry-After beyond)."
    )
    max_in_flight_per_backend: int = Field(
        256, ge=1, description="Open requests per backend (-31005 beyond)."
    )
    memory_budget: int | None = Field(
        None,
        ge=16 * 1024 * 1024,
        description="Bytes of memory the gateway may use: past 90%, new requests get 503.",
    )
    max_sessions: int = Field(
        10000, ge=1, description="Legacy sessions open at once, gateway-wide (503 beyond)."
    )
    max_sessions_per_principal: int = Field(
        100,
        ge=1,
        description="Legacy sessions one caller may hold (per peer address without "
        "authentication; 429 beyond).",
    )
    session_outbox_bytes: int = Field(
        4 * 1024 * 1024,
        ge=65536,
        description="Bytes queued for one legacy session's stream; past it the oldest go.",
    )
    outbox_budget: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes queued for all sessions' streams together; past it pushes are dropped.",
    )
    max_json_depth: int = Field(64, ge=2, description="Nesting depth of a message (-32600).")
    max_json_string_bytes: int = Field(1048576, ge=1024, description="Bytes of one string.")
    max_json_array_items: int = Field(10000, ge=1, description="Items of one array.")
    max_json_object_keys: int = Field(10000, ge=1, description="Keys of one object.")


class AllowedBackendsConfig(BaseModel):
    """Which backends may be configured at all (`gateway.allowed_backends:`); absent: any."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(
        default_factory=list, description="URL globs, e.g. https://*.example.com/mcp"
    )
    commands: list[str] = Field(
        default_factory=list, description="stdio command globs, as written or as resolved"
    )


class GatewayConfig(BaseModel):
    """Gateway-wide settings (the `gateway:` section)."""

    model_config = ConfigDict(extra="forbid")

    separator: str = Field(
        "_",
        pattern=r"^[A-Za-z0-9_-]{0,4}$",
        description="Joins a server's prefix and a tool or prompt name.",
    )
    page_size: int = Field(
        100,
        ge=1,
        le=10000,
        description="Items per page of tools/list, prompts/list, resources/list.",
    )
    request_timeout: float = Field(
        60.0, gt=0, description="Default seconds a backend has to answer one request."
    )
    max_request_time: float = Field(
        1800.0,
        gt=0,
        description="Seconds a request may run while its backend keeps reporting progress.",
    )
    startup_wait: float = Field(
        15.0, ge=0, description="Seconds to wait for backends' first start before serving."
    )
    instructions: str | None = Field(
        None, description="Instructions returned to clients by initialize/server/discover."
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the gateway, exact match (e.g. http://localhost:6274).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host header values accepted when bound to loopback, host:port.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; none by default: a caller is its TCP peer.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{proxy!r} is not an IP address or network (such as 10.0.0.0/8)"
                ) from None
        return proxies

    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    max_message_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest single message accepted from a backend."
    )
    session_idle_timeout: float = Field(
        3600.0, gt=0, description="Seconds before an idle legacy session is forgotten."
    )
    session_max_lifetime: float = Field(
        86400.0,
        gt=0,
        description="Seconds after which a legacy session is closed, even with a stream open.",
    )
    log_requests: bool = Field(True, description="Log one line per request with its timing.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment for every stdio server (a server's own `env` wins); values "
        "may use ${VAR}.",
    )
    proxy_env: bool = Field(
        False,
        description="Pass HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY (either case) from "
        "the gateway's environment to stdio servers.",
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    allowed_backends: AllowedBackendsConfig | None = Field(
        None, description="Refuse, at load, any backend outside these URLs and commands."
    )


class UpstreamAuthConfig(BaseModel):
    """Credentials Switchyard presents to an HTTP backend: its own (client credentials), or
    each caller's identity exchanged for a backend-audience token (RFC 8693)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["client_credentials", "token_exchange"]
    token_url: str = Field(description="The authorization server's token endpoint.")
    client_id: str
    client_secret: str = Field(description="Use ${VAR}: never written into the file.")
    scope: str | None = None
    resource: str | None = Field(None, description="Token audience (RFC 8707); default: the url.")
    audience: str | None = Field(None, description="token_exchange: the audience parameter.")
    lists_max_principals: int = Field(
        1000,
        ge=1,
        description="token_exchange: principals whose own lists (per-caller listings) are "
        "kept for this backend; the least recently used is forgotten first.",
    )
    lists_idle: float = Field(
        900.0,
        gt=0,
        description="token_exchange: seconds after which a principal's unused own lists are "
        "forgotten.",
    )


class HealthConfig(BaseModel):
    """Active health probes of each endpoint: `ping` (legacy) or `server/discover` (2026-07-28);
    any JSON-RPC answer, an error such as -32601 included, means alive."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Probe this backend's endpoints.")
    interval: float = Field(15.0, gt=0, description="Seconds between probes of one endpoint.")
    timeout: float = Field(5.0, gt=0, description="Seconds a probe waits for any answer.")
    unhealthy_after: int = Field(
        2, ge=1, description="Failed probes in a row that mark an endpoint unhealthy."
    )


class BreakerConfig(BaseModel):
    """Each endpoint's circuit breaker: open after consecutive transport failures (no answer,
    connection lost; never a tool's isError or a backend's own error), then one trial call
    after a jittered, doubling delay."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Use a circuit breaker on this backend.")
    failures: int = Field(5, ge=1, description="Consecutive transport failures that open it.")
    open: float = Field(5.0, gt=0, description="Seconds of the first opening (then doubled).")
    max_open: float = Field(300.0, gt=0, description="Longest opening, in seconds.")
    jitter: float = Field(0.5, ge=0, le=1, description="Random spread of each opening (±).")


class RetriesConfig(BaseModel):
    """Re-sends of a failed request, only when that cannot execute anything twice: it never
    reached the backend, or it is a read or a tool annotated readOnlyHint and idempotentHint."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(3, ge=1, le=10, description="Sends of one request, the first included.")
    backoff: float = Field(
        0.1, ge=0, description="Seconds before the first re-send; doubled each time, ±50 %."
    )


class ServerConfig(BaseModel):
    """One backend MCP server: `command` for stdio, or `url` for HTTP."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(None, description="Executable of a stdio server.")
    args: list[str] = Field(default_factory=list, description="Arguments of the stdio command.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment for the stdio server; values may use ${VAR}."
    )
    envFile: str | None = Field(None, description="A KEY=VALUE file merged under `env`.")
    cwd: str | None = Field(None, description="Working directory of the stdio server.")
    url: str | None = Field(
        None, description="URL of an HTTP server (Streamable HTTP endpoint or legacy SSE endpoint)."
    )
    type: Literal["stdio", "sse", "streamable-http", "http"] | None = Field(
        None,
        description="Transport, inferred from command/url when absent; `http` = Streamable HTTP.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Static HTTP headers sent to the backend; values may use ${VAR}.",
    )
    prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{0,64}$",
        description='Public name prefix; defaults to the server name, "" for none.',
    )
    timeout: float | None = Field(
        None, gt=0, description="Seconds this backend has to answer one request."
    )
    max_request_time: float | None = Field(
        None, gt=0, description="This backend's `gateway.max_request_time`."
    )
    isolation: Literal["shared", "per_session", "per_principal"] = Field(
        "per_principal",
        description="Who shares an upstream session of a legacy-era backend: one caller "
        "(per_principal, all anonymous callers being one), one client session (per_session) "
        "or everyone (shared).",
    )
    max_isolated: int = Field(
        64,
        ge=1,
        description="Isolated upstream sessions (stdio: processes) of this backend live, "
        "starting or closing at once; at the bound new ones are refused with -31005.",
    )
    max_isolated_per_principal: int | None = Field(
        None,
        ge=1,
        description="One principal's share of max_isolated (default max(1, max_isolated // 4)).",
    )
    spawn_burst: int = Field(
        10, ge=1, description="Isolated sessions one principal may start at once."
    )
    spawns_per_second: float = Field(
        1.0, gt=0, description="Rate at which a principal's spawn_burst refills."
    )
    era: Literal["auto", "modern", "legacy"] = Field(
        "auto",
        description="Era toward this backend; auto probes server/discover, then initialize.",
    )
    disabled: bool = Field(False, description="Skip this server.")
    urls: list[str] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Several URLs of one HTTP server (replicas), instead of `url`: requests go "
        "to the less busy of two random healthy ones; a legacy session stays on its URL.",
    )
    replicas: int = Field(
        1, ge=1, le=64, description="Processes of a stdio server sharing its requests."
    )
    health: HealthConfig = Field(default_factory=HealthConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    unavailable_grace: float = Field(
        30.0,
        ge=0,
        description="Seconds a backend with no live endpoint keeps its tools listed (calls to "
        "it fail fast meanwhile): a flapping backend causes no storm of list_changed.",
    )
    auth: UpstreamAuthConfig | None = Field(
        None, description="OAuth credentials for this HTTP backend (Streamable HTTP only)."
    )


# Keys real desktop config files carry that Switchyard does not act on: accepted, warned about.
DESKTOP_IGNORED_KEYS = frozenset(
    {
        "autoApprove",
        "alwaysAllow",
        "description",
        "transportType",
        "icon",
        "enabled_tools",
        "disabledTools",
    }
)


class IssuerConfigModel(BaseModel):
    """A token issuer whose JWTs are accepted (its keys are fetched from `jwks_uri` only)."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(description="Exactly the tokens' `iss`.")
    jwks_uri: str | None = Field(None, description="Where its signing keys are published.")
    static_keys: list[str] = Field(default_factory=list, description="PEM public keys instead.")
    algorithms: list[str] = Field(["RS256", "ES256"], description="Accepted signature algorithms.")
    roles_claim: str | None = Field("roles", description="Claim (dotted path) holding roles.")

    @field_validator("issuer")
    @classmethod
    def _qualifiable(cls, issuer: str) -> str:
        # A principal is `<issuer>#<subject>`: an issuer with a `#` (RFC 8414 forbids a
        # fragment) or named like the key store would make two principals one.
        if "#" in issuer or issuer == "api_key" or not issuer:
            raise ValueError("an issuer is a URL without a fragment ('#'), and not 'api_key'")
        return issuer


class AccessRuleConfig(BaseModel):
    """One allow or deny rule; a deny rule beats every allow rule, and nothing is allowed by
    default once authentication is on."""

    model_config = ConfigDict(extra="forbid")

    effect: Literal["allow", "deny"]
    principals: list[str] | None = Field(None, description="Caller names (globs); any if absent.")
    issuers: list[str] | None = Field(
        None,
        description="Who vouches for the caller (globs over issuer URLs, or `api_key`); absent: "
        "any issuer for a rule without `principals`, else `auth.default_issuer` only.",
    )
    roles: list[str] | None = Field(None, description="Any of these roles; any caller if absent.")
    backends: list[str] = Field(["*"], description="Backend names (globs).")
    names: list[str] = Field(
        ["*"], description="Backend-side tool/prompt names or resource URIs (globs)."
    )
    kinds: list[Literal["tools", "prompts", "resources", "resourceTemplates"]] = Field(
        ["tools", "prompts", "resources", "resourceTemplates"]
    )


class AuthConfig(BaseModel):
    """Inbound authentication and access rules (the `auth:` section); off unless `enabled`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Authenticate every request to every MCP endpoint.")
    public_url: str | None = Field(
        None,
        description="The gateway's external base URL (resource URIs); default: the bind address.",
    )
    api_keys: bool = Field(True, description="Accept API keys created with `switchyard keys`.")
    data_dir: str | None = Field(None, description="SQLite key store folder (default ./var).")
    database_url: str | None = Field(None, description="PostgreSQL key store instead of SQLite.")
    issuers: list[IssuerConfigModel] = Field(default_factory=list)
    default_issuer: str | None = Field(
        None,
        description="Whose subjects a rule's bare `principals` name: `api_key` or an issuer URL "
        "(default: `api_key` when API keys are accepted, else the first issuer).",
    )
    authorization_servers: list[str] = Field(
        default_factory=list, description="Advertised in protected-resource metadata."
    )
    rules: list[AccessRuleConfig] = Field(default_factory=list)
    scopes: dict[Literal["list", "read", "call"], list[str]] = Field(
        default_factory=dict,
        description="Scopes a token needs per class of operation (API keys are not gated).",
    )


class ViewSelectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backends: list[str] = Field(["*"], description="Backend names (globs).")
    names: list[str] = Field(["*"], description="Backend-side names or URIs (globs).")


class VirtualServerConfig(BaseModel):
    """A named endpoint (`/servers/<name>/mcp`) exposing a curated subset of the backends."""

    model_config = ConfigDict(extra="forbid")

    tools: list[ViewSelectConfig] = Field(default_factory=list)
    prompts: list[ViewSelectConfig] = Field(default_factory=list)
    resources: list[ViewSelectConfig] = Field(default_factory=list)
    resource_templates: list[ViewSelectConfig] = Field(default_factory=list)
    rename: dict[str, str] = Field(
        default_factory=dict, description="Gateway public name -> name on this endpoint."
    )
    describe: dict[str, str] = Field(
        default_factory=dict, description="Name on this endpoint -> description there."
    )
    roles: list[str] | None = Field(
        None, description="With authentication on: callers need one of these roles."
    )


class StorageConfig(BaseModel):
    """Where state that outlives a process lives (the `storage:` section): audit records, pins,
    approval tickets. One relational database for all of them, and Redis for counters that
    several gateway processes must share exactly."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(
        "var",
        description="Folder of the embedded SQLite database (`switchyard.db`), relative to the "
        "config file; used when `database_url` is unset.",
    )
    database_url: str | None = Field(
        None, description="PostgreSQL instead of SQLite: `postgresql://user@host:5432/db`."
    )
    redis_url: str | None = Field(
        None,
        description="Redis shared by every gateway process (`redis://127.0.0.1:6379/0`); "
        "unset: counters live in this process alone.",
    )


class RedactionPatternConfig(BaseModel):
    """An operator's detector: a pattern for RE2 (linear time, no backreferences or
    lookaround). A group named `value` marks what is redacted; the rest is context."""

    model_config = ConfigDict(extra="forbid")

    regex: str
    case_sensitive: bool = True
    keep_last: int = Field(
        0, ge=0, le=16, description="Characters `mask` leaves visible at the end."
    )


class RedactionRuleConfig(BaseModel):
    """What to do with what some detectors find, for the messages the selectors pick."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Named in errors, logs and counts.")
    detectors: list[str] = Field(
        default_factory=list, description="Detector names or globs (`*`: every detector)."
    )
    action: Literal["mask", "hash", "block", "tokenize"] = "mask"
    directions: list[Literal["arguments", "results", "notifications"]] = Field(
        ["arguments", "results", "notifications"]
    )
    strip_keys: list[str] = Field(
        default_factory=list, description="Object keys (globs) removed, e.g. `_meta`."
    )
    principals: list[str] | None = Field(None, description="Caller names (globs); any if absent.")
    issuers: list[str] | None = Field(None, description="Issuers (globs), as in access rules.")
    roles: list[str] | None = Field(None, description="Any of these roles; any caller if absent.")
    views: list[str] | None = Field(None, description="Virtual server names (globs).")
    backends: list[str] | None = Field(None, description="Backend names (globs).")
    names: list[str] | None = Field(
        None, description="Backend-side tool/prompt names or resource URIs (globs)."
    )


class RedactionConfig(BaseModel):
    """Redaction and data-loss prevention (the `redaction:` section); off without rules."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(
        None,
        description="HMAC key of `hash` and `tokenize` (use ${VAR}, 16+ bytes); absent: a "
        "random key per process.",
    )
    phone_regions: list[str] = Field(
        ["US", "GB"], description="Regions whose national phone formats are recognised."
    )
    patterns: dict[str, RedactionPatternConfig] = Field(default_factory=dict)
    token_ttl: float = Field(3600.0, gt=0, description="Seconds a token stays resolvable.")
    max_tokens_per_principal: int = Field(10000, ge=1)
    max_tokens: int = Field(1000000, ge=1)
    rules: list[RedactionRuleConfig] = Field(default_factory=list)


class RateLimitWindowConfig(BaseModel):
    """At most `max` cost units in any interval of `period` (a sliding window)."""

    model_config = ConfigDict(extra="forbid")

    period: str = Field(
        pattern=r"^(second|minute|hour|day|[1-9][0-9]{0,4}[smhd])$",
        description="second, minute, hour, day, or a count of them: 10s, 5m, 12h, 7d.",
    )
    max: int = Field(ge=1, le=100_000, description="Cost units admitted per period.")


class RateLimitBudgetConfig(BaseModel):
    """A daily budget, reset at 00:00 UTC."""

    model_config = ConfigDict(extra="forbid")

    calls: int | None = Field(None, ge=1, le=10**12, description="Cost units per day.")
    result_bytes: int | None = Field(
        None, ge=1, le=10**13, description="Bytes of answers per day (result or error)."
    )
    reserve_bytes: int = Field(
        65536,
        ge=1,
        description="Bytes a call must find left to be admitted; an answer larger than what is "
        "left when it arrives is withheld.",
    )


class RateLimitRuleConfig(BaseModel):
    """One rule: which calls it selects, and the limits they share."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Unique; names the rule in errors.")
    principals: list[str] | None = Field(None, description="Caller names (globs).")
    issuers: list[str] | None = Field(
        None,
        description="Issuer globs (or `api_key`); absent: `auth.default_issuer` for a rule "
        "with `principals`, any otherwise (as in access rules).",
    )
    roles: list[str] | None = Field(None, description="Any of these roles.")
    views: list[str] | None = Field(None, description="Virtual server names (globs).")
    backends: list[str] | None = Field(None, description="Backend names (globs).")
    tools: list[str] | None = Field(None, description="Backend-side tool names (globs).")
    prompts: list[str] | None = Field(None, description="Backend-side prompt names (globs).")
    resources: list[str] | None = Field(None, description="Resource URIs (globs).")
    annotations: (
        dict[Literal["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"], bool]
        | None
    ) = Field(None, description="Tool hints the tool must have (absent hints: MCP defaults).")
    per: Literal["principal", "rule"] | None = Field(
        None,
        description="principal: each caller has its own counters; rule: one set shared by "
        "everyone the rule selects. Default: `defaults.per`.",
    )
    mode: Literal["enforce", "shadow"] | None = Field(
        None, description="shadow: count and log what would be refused, refuse nothing."
    )
    on_store_error: Literal["closed", "open"] | None = Field(
        None, description="When Redis cannot be reached: refuse (closed) or admit (open)."
    )
    windows: list[RateLimitWindowConfig] = Field(default_factory=list)
    concurrency: int | None = Field(None, ge=1, le=100_000, description="Calls at once.")
    cost: int | dict[str, int] = Field(
        1,
        description="Units a call costs: a number, or name globs to costs (first match; "
        "unmatched names cost 1).",
    )
    budget: RateLimitBudgetConfig | None = None


class RateLimitDefaultsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per: Literal["principal", "rule"] = "principal"
    mode: Literal["enforce", "shadow"] = "enforce"
    on_store_error: Literal["closed", "open"] = "closed"


class RateLimitsConfig(BaseModel):
    """Rate limits, concurrency caps and daily budgets (the `rate_limits:` section)."""

    model_config = ConfigDict(extra="forbid")

    store: Literal["auto", "memory", "redis"] = Field(
        "auto",
        description="Where counters live: redis (`storage.redis_url`, shared by every gateway "
        "process) or memory (this process only); auto: redis when a URL is set.",
    )
    key_prefix: str = Field(
        "switchyard:limits",
        pattern=r"^[A-Za-z0-9_.:{}-]{1,64}$",
        description="Prefix of every Redis key.",
    )
    lease_seconds: float = Field(
        30.0,
        ge=3,
        le=3600,
        description="A dead process's concurrency slots and reservations free after this.",
    )
    store_timeout: float = Field(
        2.0, gt=0, le=60, description="Seconds a check may wait on Redis before it fails."
    )
    defaults: RateLimitDefaultsConfig = Field(default_factory=RateLimitDefaultsConfig)
    rules: list[RateLimitRuleConfig] = Field(default_factory=list)
    refusal_status: Literal[429, 200] = Field(
        429,
        description="HTTP status of a refused call answered as JSON on Streamable HTTP: 429 "
        "(with Retry-After), or 200 for clients that read no JSON-RPC error from a non-2xx "
        "answer (the TypeScript SDK 1.x).",
    )


PoisoningAction = Literal["off", "warn", "quarantine", "block"]


class PinBackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "tofu", "quarantine_new"] = Field(
        description="This backend's pinning mode (see `pinning.mode`)."
    )


class PoisoningConfig(BaseModel):
    """Tool-poisoning rules (`pinning.poisoning:`): each `off`, `warn` (listed and logged),
    `quarantine` (hidden until approved) or `block` (hidden, never approvable)."""

    model_config = ConfigDict(extra="forbid")

    hidden_instructions: PoisoningAction = Field(
        "quarantine",
        description="Text addressing the model: 'ignore previous instructions', 'do not tell "
        "the user', <IMPORTANT> blocks.",
    )
    sensitive_files: PoisoningAction = Field(
        "quarantine", description="Credential and client-config paths: ~/.ssh, id_rsa, mcp.json."
    )
    invisible_characters: PoisoningAction = Field(
        "quarantine",
        description="Zero-width, bidirectional-control, tag-block and control characters.",
    )
    cross_tool_reference: PoisoningAction = Field(
        "warn", description="Another backend's tool named in a definition's text."
    )


class PinningConfig(BaseModel):
    """Tool pinning against rug pulls (the `pinning:` section): every tool, prompt and resource
    template is fingerprinted over its full definition and shown only while it matches its
    pin; pins live in the `storage:` database."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "tofu", "quarantine_new"] = Field(
        "tofu",
        description="Default for every backend: `tofu` pins what is first seen, "
        "`quarantine_new` hides new items until approved, `off` pins nothing. In the pinning "
        "modes a definition that drifts from its pin is hidden until approved.",
    )
    backends: dict[str, PinBackendConfig] = Field(
        default_factory=dict, description="Per-backend modes, by server name."
    )
    poisoning: PoisoningConfig = Field(default_factory=PoisoningConfig)
    poll_interval: float = Field(
        2.0,
        ge=0.1,
        le=300,
        description="Seconds between checks for approvals and other processes' pins.",
    )


class AuditRawArgumentsConfig(BaseModel):
    """Calls whose raw arguments the audit record keeps (globs; an absent list matches all)."""

    model_config = ConfigDict(extra="forbid")

    principals: list[str] | None = Field(
        None, description="Caller names or qualified keys (`api_key#alice`)."
    )
    backends: list[str] | None = Field(None, description="Backend names.")
    names: list[str] | None = Field(None, description="Backend-side tool/prompt names or URIs.")


class AuditConfig(BaseModel):
    """The tamper-evident audit trail (the `audit:` section), stored in `storage:`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="One audit record per decision.")
    hmac_key: str | None = Field(
        None,
        description="Key of the arguments' HMAC-SHA256 digest, e.g. `${SWITCHYARD_AUDIT_KEY}` "
        "(at least 16 characters); required when enabled.",
    )
    keys_dir: str = Field(
        "var/audit-keys",
        description="The checkpoint signing key ring (relative to the config file).",
    )
    anchor_file: str | None = Field(
        None, description="Also append every signed checkpoint to this file (another disk)."
    )
    checkpoint_every: int = Field(1000, ge=1, description="Records per signed checkpoint.")
    checkpoint_interval: float = Field(
        10.0, gt=0, description="Seconds at most between checkpoints while records come."
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        description="Delete records older than this (whole prefixes); keep all if unset.",
    )
    on_failure: Literal["fail_closed", "buffer"] = Field(
        "fail_closed",
        description="Store down or slow: refuse new calls (`fail_closed`) or queue records up "
        "to `buffer_size` and count the drops beyond (`buffer`).",
    )
    buffer_size: int = Field(10_000, ge=1, description="Records queued at most.")
    max_write_delay: float = Field(
        5.0, gt=0, description="A record unwritten this many seconds means the store is slow."
    )
    raw_arguments: list[AuditRawArgumentsConfig] = Field(
        default_factory=list, description="Calls whose raw arguments are kept in the record."
    )
    max_raw_arguments_bytes: int = Field(16_384, ge=0)


class ApprovalArgumentConfig(BaseModel):
    """A condition on one top-level argument: all that are set must hold."""

    model_config = ConfigDict(extra="forbid")

    equals: str | int | float | bool | None = Field(None, description="Exactly this value.")
    one_of: list[str | int | float | bool] | None = Field(None, description="One of these values.")
    matches: str | None = Field(None, description="A string matching this glob.")
    greater_than: float | None = Field(None, description="A number greater than this.")
    present: bool | None = Field(None, description="The argument is (true) or is not present.")


class ApprovalRuleConfig(BaseModel):
    """One approval rule: which calls it selects, and who decides. The first rule that
    selects a call applies."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Unique; names the rule in tickets.")
    action: Literal["require", "auto"] = Field(
        "require", description="require: the call waits for a decision; auto: it runs."
    )
    approver: str = Field(
        "caller",
        description="`caller`: the caller's own user confirms (at the client); else a role "
        "whose members decide out of band (never the caller itself).",
    )
    principals: list[str] | None = Field(None, description="Caller names (globs).")
    issuers: list[str] | None = Field(
        None, description="Issuer globs; absent: `auth.default_issuer` for a rule with principals."
    )
    roles: list[str] | None = Field(None, description="Any of these roles.")
    views: list[str] | None = Field(None, description="Virtual server names (globs).")
    backends: list[str] | None = Field(None, description="Backend names (globs).")
    tools: list[str] | None = Field(None, description="Backend-side tool names (globs).")
    annotations: dict[Literal["destructiveHint", "openWorldHint", "readOnlyHint"], bool] | None = (
        Field(None, description="Tool hints the tool must have (absent hints: MCP defaults).")
    )
    arguments: dict[str, ApprovalArgumentConfig] | None = Field(
        None, description="Conditions on top-level arguments (all must hold)."
    )


class ApprovalWebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Receives a POST with the ticket on creation and escalation.")
    secret: str = Field(
        description="HMAC-SHA256 key of the `X-Switchyard-Signature` header (16+ characters)."
    )
    timeout: float = Field(5.0, gt=0, le=60, description="Seconds per delivery attempt.")


class ApprovalsConfig(BaseModel):
    """Approvals and agent mode (the `approvals:` section): calls that wait for a decision
    bound to exactly that call. Tickets live in the `storage:` database."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Gate tool calls by the rules below.")
    default: Literal["auto", "require"] = Field(
        "auto", description="What a call no rule selects does (require: fail closed)."
    )
    default_approver: str = Field(
        "caller", description="Who decides calls gated by `default: require`."
    )
    auto_execute: list[str] = Field(
        default_factory=list,
        description="Agent mode: tools (public names, globs) that run without a decision "
        "when no rule selects them.",
    )
    secret: str | None = Field(
        None,
        description="Key signing `requestState` (16+ characters, e.g. `${SWITCHYARD_APPROVAL_KEY}`"
        "); the same in every gateway process. Required when enabled.",
    )
    ticket_ttl: float = Field(
        3600.0, gt=0, description="Seconds a ticket stays decidable and, once approved, usable."
    )
    elicitation_wait: float = Field(
        60.0, gt=0, le=600, description="Seconds a 2025 client's confirmation may take."
    )
    escalate_after: float | None = Field(
        None, gt=0, description="Seconds a pending ticket waits before it is escalated."
    )
    escalate_to: str | None = Field(
        None, description="The role that may also decide an escalated ticket."
    )
    public_url: str | None = Field(
        None,
        description="The gateway's base URL as approvers reach it (approval page links); "
        "default: the address it listens on.",
    )
    show_arguments_bytes: int = Field(
        16_384,
        ge=0,
        le=1_048_576,
        description="A ticket keeps the call's arguments (up to this many bytes) for approvers "
        "to see; 0 keeps none (approvers see the digest only).",
    )
    webhook: ApprovalWebhookConfig | None = None
    rules: list[ApprovalRuleConfig] = Field(default_factory=list)


class ConsoleOAuthConfig(BaseModel):
    """Sign-in to the web console with an `auth.issuers` authorization server (`admin.
    console_oauth`): the authorization-code flow with PKCE, the token checked like `/mcp`'s."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, description="The console's client id at the issuer.")
    client_secret_env: str | None = Field(
        None,
        description="Environment variable holding the client's secret (client_secret_basic); "
        "unset: a public client (PKCE only).",
    )
    scopes: list[str] = Field(
        default_factory=list, description="Scopes asked for (e.g. `switchyard:admin`)."
    )
    issuer: str | None = Field(
        None, description="Which of `auth.issuers` (default: the first one)."
    )
    redirect_uri: str | None = Field(
        None,
        description="Registered at the issuer; default: `<auth.public_url>/admin/console/oauth/"
        "callback`.",
    )


class AdminConfig(BaseModel):
    """The admin plane (`/admin/v1`): who may use it, where it listens, and whether the
    configuration is changed through it (dynamic registration)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve the admin API at `/admin/v1`.")
    listen: str | None = Field(
        None,
        description="`host:port` of a listener of its own (then not on the MCP port); default: "
        "the MCP port.",
    )
    roles: list[str] = Field(["admin"], description="Roles that may read and change everything.")
    read_roles: list[str] = Field(
        ["admin-read"], description="Roles that may read everything and change nothing."
    )
    scopes: list[str] = Field(
        ["switchyard:admin"], description="JWT scopes granting what `roles` grant."
    )
    read_scopes: list[str] = Field(
        ["switchyard:admin.read"], description="JWT scopes granting what `read_roles` grant."
    )
    local_unauthenticated: bool = Field(
        False,
        description="With `auth.enabled: false`, let loopback callers use the admin API as "
        "admins (otherwise it is refused without authentication).",
    )
    dynamic_registration: bool = Field(
        False,
        description="Backends are created, changed and deleted through the API; the database "
        "becomes the configuration's source (the file only seeds it).",
    )
    poll_interval: float = Field(
        0.5, gt=0, le=60, description="Seconds between checks for a newer configuration version."
    )
    console_oauth: ConsoleOAuthConfig | None = Field(
        None, description="Offer console sign-in with the OAuth issuer (off when absent)."
    )


class MetricsConfig(BaseModel):
    """Prometheus metrics (`metrics:`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve Prometheus metrics on /metrics.")
    listen: str | None = Field(
        None,
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
        description="host:port of a listener of their own (no authentication; bind it where "
        "only the scraper reaches); unset: /metrics on the main port, behind authentication "
        "when it is on.",
    )


class TracingConfig(BaseModel):
    """OpenTelemetry tracing (`tracing:`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="A span per request and per backend call; trace context sent on."
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP JSON traces URL, e.g. http://127.0.0.1:4318/v1/traces; may use "
        "${VAR}; unset: spans are propagated, not exported.",
    )
    otlp_headers: dict[str, str] = Field(
        default_factory=dict, description="Headers for the exporter (values may use ${VAR})."
    )
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded; a caller's sampled flag is followed.",
    )
    service_name: str = Field("switchyard", description="The exported `service.name`.")


class LoggingConfig(BaseModel):
    """The gateway's own log lines (`logging:`)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["text", "json"] = Field(
        "text",
        description="text, or json (one object per line); --log-format wins. Access records "
        "are JSON lines in both.",
    )
    backend_stderr_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="The level stdio servers' stderr lines are logged at."
    )
    level: Literal["debug", "info", "warning", "error"] | None = Field(
        None,
        description="The level of the gateway's own log lines; --log-level wins; unset: info.",
    )


class CacheRuleConfig(BaseModel):
    """Results of the tools this rule selects are kept for `ttl` seconds, per caller."""

    model_config = ConfigDict(extra="forbid")

    backend: str = Field(min_length=1, description="Backend name (glob).")
    tool: str = Field("*", min_length=1, description="Backend-side tool name (glob).")
    ttl: float = Field(gt=0, le=86400, description="Seconds a result is served again.")
    assume_read_only: bool = Field(
        False,
        description="Cache the tool even though it does not declare `readOnlyHint: true`.",
    )


class CacheConfig(BaseModel):
    """Result caching for tools a rule marks cacheable (off without rules)."""

    model_config = ConfigDict(extra="forbid")

    max_entries: int = Field(10_000, ge=1, le=10_000_000, description="Results kept at most.")
    max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Bytes of results kept at most (this process)."
    )
    rules: list[CacheRuleConfig] = Field(default_factory=list)


class SwitchyardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    auth: AuthConfig = Field(default_factory=AuthConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    pinning: PinningConfig = Field(default_factory=PinningConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    servers: dict[str, ServerConfig] = Field(default_factory=dict)
    mcpServers: dict[str, ServerConfig] = Field(default_factory=dict)
    virtual_servers: dict[str, VirtualServerConfig] = Field(default_factory=dict)
