"""Warnings for configurations that load but are very likely not what was meant: names that
match nothing, and authentication that lets no one through. One line each, naming the key."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from switchyard.config.schema import SwitchyardConfig


def lint(config: SwitchyardConfig) -> list[str]:
    servers = {
        name
        for section in (config.servers, config.mcpServers)
        for name, server in section.items()
        if not server.disabled
    }
    views = set(config.virtual_servers)
    out: list[str] = []
    auth = config.auth
    for name, virtual in config.virtual_servers.items():
        for kind, picks in (
            ("tools", virtual.tools),
            ("prompts", virtual.prompts),
            ("resources", virtual.resources),
            ("resource_templates", virtual.resource_templates),
        ):
            for i, pick in enumerate(picks):
                out += _unmatched(
                    f"virtual_servers.{name}.{kind}[{i}].backends", pick.backends, servers, "server"
                )
        if virtual.roles is not None and not auth.enabled:
            out.append(
                f"virtual_servers.{name}.roles: authentication is off, so roles are not checked"
            )
    if auth.enabled:
        if not auth.rules:
            out.append(
                "auth.rules: authentication is on and there are no rules: every request is "
                "denied (nothing is allowed by default)"
            )
        elif not any(rule.effect == "allow" for rule in auth.rules):
            out.append("auth.rules: no rule allows anything: every request is denied")
        for i, rule in enumerate(auth.rules):
            out += _unmatched(f"auth.rules[{i}].backends", rule.backends, servers, "server")
        ruled = [g for rule in auth.rules if rule.effect == "allow" for g in rule.roles or ["*"]]
        if auth.rules:
            for name, virtual in config.virtual_servers.items():
                for role in virtual.roles or ():
                    if not any(fnmatchcase(role, glob) for glob in ruled):
                        out.append(
                            f"virtual_servers.{name}.roles: no rule in auth.rules allows role "
                            f"{role!r}: callers with only that role are denied everything"
                        )
    for i, limit in enumerate(config.rate_limits.rules):
        where = f"rate_limits.rules[{i}]"
        out += _unmatched(f"{where}.backends", limit.backends or (), servers, "server")
        out += _unmatched(f"{where}.views", limit.views or (), views, "virtual server")
    for i, redaction in enumerate(config.redaction.rules):
        where = f"redaction.rules[{i}]"
        out += _unmatched(f"{where}.backends", redaction.backends or (), servers, "server")
        out += _unmatched(f"{where}.views", redaction.views or (), views, "virtual server")
    for i, cached in enumerate(config.cache.rules):
        out += _unmatched(f"cache.rules[{i}].backend", (cached.backend,), servers, "server")
    out += _console_oauth(config)
    return out


def _console_oauth(config: SwitchyardConfig) -> list[str]:
    """The console offers sign-in only with an issuer `/mcp` trusts (its verifier checks the
    tokens); any other setting shows no button at all."""
    oauth = config.admin.console_oauth
    if oauth is None:
        return []
    trusted = [i.issuer for i in config.auth.issuers] if config.auth.enabled else []
    if oauth.issuer is not None and oauth.issuer not in trusted:
        return [
            f"admin.console_oauth.issuer: {oauth.issuer!r} is not one of auth.issuers (with "
            "auth.enabled): the console offers no OAuth sign-in"
        ]
    if not trusted:
        return [
            "admin.console_oauth: auth.issuers is empty or authentication is off: the console "
            "offers no OAuth sign-in"
        ]
    return []


def _unmatched(where: str, globs: Iterable[str], names: set[str], what: str) -> list[str]:
    return [
        f"{where}: {glob!r} matches no configured {what}"
        for glob in globs
        if not any(fnmatchcase(name, glob) for name in names)
    ]
