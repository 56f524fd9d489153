"""Public names for backend tools and prompts: `{prefix}{sep}{name}`, validated and aliased.

A backend name must match the spec's `[A-Za-z0-9_.-]{1,128}`; anything else (control,
invisible or bidi characters included) is refused. A valid name whose public form would break
the `^[a-zA-Z0-9_-]{1,64}$` rule that LLM APIs enforce gets a deterministic short alias.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

SPEC_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
LLM_SAFE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PUBLIC: Final = 64
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")


def is_valid_backend_name(name: str) -> bool:
    return SPEC_NAME.fullmatch(name) is not None


def digest(*parts: str, length: int = 8) -> str:
    h = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return h[:length]


def public_name(prefix: str, sep: str, name: str) -> str:
    return f"{prefix}{sep}{name}" if prefix else name


def alias(prefix: str, sep: str, backend: str, name: str) -> str:
    """A short LLM-safe stand-in for `name`: readable stem, stable hash of the true identity."""
    suffix = "_" + digest(backend, name)
    stem = _UNSAFE.sub("_", public_name(prefix, sep, name))
    return stem[: MAX_PUBLIC - len(suffix)] + suffix


def disambiguate(public: str, backend: str, name: str, taken: set[str]) -> str:
    """A deterministic variant of a colliding public name, unique within `taken`."""
    for length in (6, 10, 16, 32, 64):
        suffix = "_" + digest(backend, name, length=length)
        candidate = public[: MAX_PUBLIC - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise ValueError(f"cannot find a unique public name for {backend}/{name}")
