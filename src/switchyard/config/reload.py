"""SIGHUP: read the config file again, validate it, and hand the gateway the new plan.

A file that does not load, or that changes what only a restart can change (the listener, the
authenticator, the session store), is refused with the reason and the running configuration
keeps serving. Compiled policies whose section did not change are carried over as they are,
so their state (rate-limit counters, redaction tokens) survives a reload and sessions are not
told their lists changed when nothing they see did.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from switchyard.config.lints import lint
from switchyard.config.load import ConfigError, compile_plan, load
from switchyard.config.schema import SwitchyardConfig
from switchyard.gateway import Changes, Gateway, Plan
from switchyard.observability import logging as observability_logging
from switchyard.observability.settings import changes as observability_changes
from switchyard.policies.base import PolicySpec

log = logging.getLogger("switchyard.reload")

# What a reload applies; every other key needs a restart.
RELOADABLE: dict[str, Any] = {
    "servers": True,
    "mcpServers": True,
    "virtual_servers": True,
    "redaction": True,
    "rate_limits": True,
    "approvals": True,
    "cache": True,
    "metrics": {"enabled": True},
    "tracing": True,
    "logging": {"format": True, "level": True},
    "auth": {"rules": True, "default_issuer": True},
    "gateway": {
        "separator": True,
        "page_size": True,
        "request_timeout": True,
        "max_request_time": True,
        "startup_wait": True,
        "instructions": True,
        "max_message_bytes": True,
        "log_requests": True,
        "allowed_backends": True,
        "env": True,
        "proxy_env": True,
    },
}


def restart_only_changes(old: SwitchyardConfig, new: SwitchyardConfig) -> list[str]:
    """Keys (dotted) whose change a reload cannot apply."""
    out: list[str] = []
    _diff(old.model_dump(), new.model_dump(), RELOADABLE, "", out)
    if old.metrics.enabled != new.metrics.enabled and old.metrics.listen is not None:
        # Their own listener is opened (or not) at start.
        out.append("metrics.enabled (with metrics.listen)")
    return out


def _diff(old: Any, new: Any, skip: Any, where: str, out: list[str]) -> None:
    if skip is True or old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict) and isinstance(skip, dict):
        for key in sorted(old.keys() | new.keys()):
            _diff(old.get(key), new.get(key), skip.get(key), f"{where}{key}.", out)
        return
    out.append(where.rstrip("."))


class Reloader:
    def __init__(self, path: Path, config: SwitchyardConfig, plan: Plan, gateway: Gateway) -> None:
        self.path = path
        self.config = config
        self.plan = plan
        self.gateway = gateway
        self._lock = asyncio.Lock()

    async def reload(self) -> bool:
        """Reload once (reloads in a row run one after the other); whether it was applied."""
        async with self._lock:
            log.info("SIGHUP: reloading %s", self.path)
            try:
                config, plan, warnings = self._prepare()
            except ConfigError as exc:
                log.error("config reload refused, the running configuration stays: %s", exc)
                return False
            for warning in warnings:
                log.warning("%s", warning)
            changes = await self.gateway.apply(plan)
            old_plan = self.plan
            self.config, self.plan = config, plan
            log.info(
                "config reloaded: %d servers unchanged; added %s; replaced %s; removed %s",
                len(changes.kept),
                list(changes.added),
                list(changes.replaced),
                list(changes.removed),
            )
            self._observed(old_plan)
            return True

    def check(self, config: SwitchyardConfig) -> Plan:
        """The plan of `config`, if a reload can apply it (ConfigError says why not)."""
        restart = restart_only_changes(self.config, config)
        if restart:
            raise ConfigError(f"these keys changed and need a restart: {', '.join(restart)}")
        return compile_plan(config, self.path.resolve().parent)

    async def apply_config(self, config: SwitchyardConfig) -> Changes:
        """Serve an already validated configuration (from the admin API or the database)."""
        async with self._lock:
            plan = self._carry_over(config, self.check(config))
            changes = await self.gateway.apply(plan)
            old_plan = self.plan
            self.config, self.plan = config, plan
            log.info(
                "configuration applied: %d servers unchanged; added %s; replaced %s; removed %s",
                len(changes.kept),
                list(changes.added),
                list(changes.replaced),
                list(changes.removed),
            )
            self._observed(old_plan)
            return changes

    def _observed(self, old_plan: Plan) -> None:
        """Say what changed of metrics and tracing (the gateway applied them with the plan)
        and of `logging:`, then apply that (said first: a higher level could hide the line)."""
        level, fmt = self.config.logging.level, self.config.logging.format
        said = observability_changes(old_plan.observability, self.plan.observability)
        said += observability_logging.pending(level, fmt)
        if said:
            log.info("observability reloaded: %s", "; ".join(said))
        observability_logging.configure(level, fmt)

    async def restart(self, name: str) -> None:
        """A fresh connection (or process) for one backend, its configuration unchanged; never
        at the same time as a reload, which could otherwise swap the old plan back in."""
        async with self._lock:
            await self.gateway.apply(self.plan, restart=frozenset({name}))

    def _prepare(self) -> tuple[SwitchyardConfig, Plan, list[str]]:
        config, warnings = load(self.path)
        restart = restart_only_changes(self.config, config)
        if restart:
            raise ConfigError(
                f"{self.path}: these keys changed and need a restart: {', '.join(restart)}"
            )
        plan = compile_plan(config, self.path.resolve().parent)
        return config, self._carry_over(config, plan), [*warnings, *lint(config)]

    def _carry_over(self, config: SwitchyardConfig, plan: Plan) -> Plan:
        """The new plan, with the running compiled policies kept where their section did not
        change (see the module docstring)."""
        old, new = self.plan.gateway, plan.gateway
        same_issuer = self.config.auth.default_issuer == config.auth.default_issuer
        swaps: dict[int, object] = {}
        settings = new
        if same_issuer and self.config.auth.rules == config.auth.rules and new.access:
            swaps[id(new.access)] = old.access
            settings = replace(settings, access=old.access)
        if same_issuer and self.config.redaction == config.redaction and new.redaction:
            swaps[id(new.redaction)] = old.redaction
            settings = replace(settings, redaction=old.redaction)
        if (
            same_issuer
            and self.config.rate_limits == config.rate_limits
            and self.config.storage == config.storage
            and new.limits
        ):
            swaps[id(new.limits)] = old.limits
            settings = replace(settings, limits=old.limits)
        if (
            same_issuer
            and self.config.approvals == config.approvals
            and self.config.storage == config.storage
            and new.approvals
        ):
            # The same tickets, store connection and escalation: only other sections changed.
            swaps[id(new.approvals)] = old.approvals
            settings = replace(settings, approvals=old.approvals)
        policies = tuple(
            PolicySpec(p.cls, swaps.get(id(p.settings), p.settings)) for p in new.policies
        )
        return replace(plan, gateway=replace(settings, policies=policies))
