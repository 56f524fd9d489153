"""Compiles the `redaction:` section: detectors (built-in and operators' RE2 patterns), rules
and the HMAC key, checked at load so a typo in a detector name is an error, not a rule that
silently never fires."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from fnmatch import fnmatchcase

import phonenumbers

from switchyard.config.schema import RedactionConfig
from switchyard.redaction.builtin import builtins
from switchyard.redaction.custom import PatternError, custom_detector
from switchyard.redaction.detector import Detector
from switchyard.redaction.engine import RedactionSettings, Redactor
from switchyard.redaction.rules import Action, Direction, RedactionRule, globs

log = logging.getLogger("switchyard.config")

PATTERN_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
MIN_KEY_BYTES = 16


def compile_redaction(
    section: RedactionConfig,
    default_issuer: str,
    resolve: Callable[[str, str], str],
    error: type[Exception],
) -> Redactor | None:
    """The engine for `section`, or None when it has no rules. `resolve` expands `${VAR}`;
    problems raise `error` naming the offending key."""
    if not section.rules:
        return None
    for region in section.phone_regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise error(f"redaction.phone_regions: {region!r} is not a region code")
    built = builtins(tuple(section.phone_regions))
    known = {d.name for d in built}
    custom: list[Detector] = []
    for name, spec in section.patterns.items():
        where = f"redaction.patterns.{name}"
        if PATTERN_NAME.fullmatch(name) is None:
            raise error(f"{where}: names match {PATTERN_NAME.pattern}")
        if name in known:
            raise error(f"{where}: {name!r} is a built-in detector")
        try:
            custom.append(custom_detector(name, spec.regex, spec.case_sensitive, spec.keep_last))
        except PatternError as exc:
            raise error(f"{where}.regex: RE2 cannot compile it: {exc}") from None
    detectors = (*custom, *built)
    names = [d.name for d in detectors]
    rules: list[RedactionRule] = []
    seen: set[str] = set()
    for i, r in enumerate(section.rules):
        where = f"redaction.rules[{i}]"
        if r.name in seen:
            raise error(f"{where}.name: {r.name!r} names two rules")
        seen.add(r.name)
        chosen: set[str] = set()
        for pattern in r.detectors:
            matched = [n for n in names if fnmatchcase(n, pattern)]
            if not matched:
                raise error(f"{where}.detectors: {pattern!r} names no detector")
            chosen.update(matched)
        if not chosen and not r.strip_keys:
            raise error(f"{where}: a rule needs `detectors` or `strip_keys`")
        issuers = (
            r.issuers if r.issuers is not None else ([default_issuer] if r.principals else None)
        )
        rules.append(
            RedactionRule(
                name=r.name,
                action=Action(r.action),
                detectors=frozenset(chosen),
                directions=frozenset(Direction(d) for d in r.directions),
                strip_keys=globs(r.strip_keys) if r.strip_keys else None,
                principals=globs(r.principals) if r.principals is not None else None,
                issuers=globs(issuers) if issuers is not None else None,
                roles=frozenset(r.roles) if r.roles is not None else None,
                views=globs(r.views) if r.views is not None else None,
                backends=globs(r.backends) if r.backends is not None else None,
                names=globs(r.names) if r.names is not None else None,
            )
        )
    if section.key is not None:
        key = resolve(section.key, "redaction.key").encode()
        if len(key) < MIN_KEY_BYTES:
            raise error(f"redaction.key: at least {MIN_KEY_BYTES} bytes")
    else:
        key = os.urandom(32)
        if any(rule.action in (Action.HASH, Action.TOKENIZE) for rule in rules):
            log.warning("redaction.key is not set: hashes and tokens are stable only until restart")
    return Redactor(
        RedactionSettings(
            rules=tuple(rules),
            detectors=detectors,
            key=key,
            token_ttl_s=section.token_ttl,
            tokens_per_principal=section.max_tokens_per_principal,
            tokens_total=section.max_tokens,
        )
    )
