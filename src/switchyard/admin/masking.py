"""Configuration as the admin API shows it: values that may be secrets are masked, unless they
are `${VAR}` references (which name a secret without holding it)."""

from __future__ import annotations

import re
from typing import Any, Final

SECRET_KEYS: Final = frozenset(
    {
        "headers",
        "env",
        "client_secret",
        "hmac_key",
        "secret",
        "key",
        "database_url",
        "redis_url",
        "static_keys",
    }
)
MASK: Final = "[redacted]"
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def masked(value: Any, secret: bool = False) -> Any:
    if isinstance(value, dict):
        return {k: masked(v, secret or k in SECRET_KEYS) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, secret) for v in value]
    if secret and isinstance(value, str) and not _REFERENCE.fullmatch(value):
        return MASK
    return value
