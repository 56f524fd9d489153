"""The `audit:` section, compiled."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final, Literal

FAIL_CLOSED: Final = "fail_closed"
BUFFER: Final = "buffer"
OnFailure = Literal["fail_closed", "buffer"]


@dataclass(frozen=True, slots=True)
class RawArgumentsRule:
    """Which calls keep their raw arguments in the record (globs; an absent list matches all).
    Principals are qualified keys (`api_key#alice`, `https://issuer#sub`) or bare names."""

    principals: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None
    names: tuple[str, ...] | None = None

    def matches(
        self, principal: str | None, qualified: str | None, backend: str | None, name: str | None
    ) -> bool:
        return (
            _any(self.principals, principal, qualified)
            and _any(self.backends, backend)
            and _any(self.names, name)
        )


def _any(patterns: tuple[str, ...] | None, *values: str | None) -> bool:
    if patterns is None:
        return True
    return any(v is not None and fnmatchcase(v, p) for p in patterns for v in values)


@dataclass(frozen=True, slots=True)
class AuditSettings:
    hmac_key: bytes = field(repr=False)
    """Keys the HMAC-SHA256 digest of each call's arguments."""
    keys_dir: Path
    """The signing key ring: `<key id>.key` (private), `<key id>.pub`, `current`."""
    anchor_file: Path | None = None
    """A second, append-only copy of every checkpoint (ideally on another disk or host)."""
    checkpoint_every: int = 1000
    checkpoint_interval_s: float = 10.0
    retention_days: float | None = None
    retention_check_s: float = 3600.0
    on_failure: OnFailure = "fail_closed"
    buffer_size: int = 10_000
    batch_size: int = 500
    flush_interval_s: float = 0.05
    max_write_delay_s: float = 5.0
    """A record waiting longer than this to be written makes the store "slow"."""
    raw_arguments: tuple[RawArgumentsRule, ...] = ()
    max_raw_arguments_bytes: int = 16_384
    writer_id: str | None = None
    """This process's stream; None: a fresh id per process start."""

    def wants_raw_arguments(
        self, principal: str | None, qualified: str | None, backend: str | None, name: str | None
    ) -> bool:
        return any(r.matches(principal, qualified, backend, name) for r in self.raw_arguments)
