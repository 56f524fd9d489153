"""API keys: format, generation, hashing and the records and principals they stand for.

A key reads `sy_<prefix>_<secret>`. The prefix (8 characters of lowercase base32) is public: it
names the key in `switchyard keys list`, in logs and in revocations. The secret (32 CSPRNG bytes,
URL-safe base64) is shown once, when the key is created, and only its digest is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType

KEY_TAG = "sy"
PREFIX_LEN = 8
SECRET_BYTES = 32
# token_urlsafe(32) is unpadded base64 of 32 bytes: always 43 characters.
SECRET_LEN = 43

PREFIX_RE = re.compile(r"[a-z2-7]{8}")
_KEY_RE = re.compile(r"sy_([a-z2-7]{8})_([A-Za-z0-9_-]{43})")
KEY_LEN = len(KEY_TAG) + 1 + PREFIX_LEN + 1 + SECRET_LEN

# Binds the digest to this scheme and to the key's own prefix, so a stored digest cannot be
# replayed under another prefix and a future scheme cannot be confused with this one.
_DIGEST_DOMAIN = b"switchyard-api-key-v1\x00"

_FINGERPRINT_DOMAIN = b"switchyard-api-key-fingerprint-v1\x00"

_NAME_MAX = 200


@dataclass(frozen=True)
class KeyRecord:
    """What a store holds for one key. Never the key itself."""

    prefix: str
    principal: str
    roles: tuple[str, ...]
    attributes: Mapping[str, str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    # Out of repr so that logging a record cannot leak even the digest.
    digest: bytes = field(repr=False)

    def __post_init__(self) -> None:
        # Frozen means frozen: a caller mutating its dict must not change a cached record.
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def matches(self, secret: str) -> bool:
        """Whether `secret` is this key's secret; constant time in the secret's content."""
        return hmac.compare_digest(secret_digest(self.prefix, secret), self.digest)


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established by inbound authentication."""

    name: str
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    # The API key that authenticated this principal, when one did: public, safe to log.
    key_prefix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    secret: str = field(repr=False)


def generate() -> tuple[str, str, str]:
    """A fresh key: `(plaintext, prefix, secret)`."""
    # 5 random bytes are exactly 8 base32 characters, no padding.
    prefix = base64.b32encode(secrets.token_bytes(5)).decode("ascii").lower()
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{KEY_TAG}_{prefix}_{secret}", prefix, secret


def parse(presented: str) -> ParsedKey | None:
    """Split a presented key into prefix and secret, or None if it is not shaped like a key."""
    # The length test first: arbitrary client input never reaches the regex at length.
    if len(presented) != KEY_LEN or not presented.isascii():
        return None
    m = _KEY_RE.fullmatch(presented)
    if m is None:
        return None
    return ParsedKey(m.group(1), m.group(2))


def secret_digest(prefix: str, secret: str) -> bytes:
    """The stored form of a key's secret.

    Plain SHA-256, unsalted and unstretched, on purpose: the secret carries 256 bits from the
    CSPRNG, so neither a dictionary, a precomputed table nor brute force gets anywhere against
    it, which is what salts and slow hashes defend human passwords from. A slow hash would only
    put milliseconds of CPU on every authenticated request (and hand an attacker a cheap way to
    burn ours); a per-record salt would add nothing.
    """
    return hashlib.sha256(
        _DIGEST_DOMAIN + prefix.encode("ascii") + b"\x00" + secret.encode("ascii")
    ).digest()


def fingerprint(digest: bytes) -> str:
    """A name for the one key whose stored digest is `digest`, for a record that must point at
    a key again later (a console session) without holding anything that authenticates."""
    return hashlib.sha256(_FINGERPRINT_DOMAIN + digest).hexdigest()


def check_name(kind: str, value: str) -> str:
    """Principal, role and attribute names: printable, bounded, not blank."""
    if not value or not value.strip():
        raise ValueError(f"{kind} must not be empty")
    if len(value) > _NAME_MAX:
        raise ValueError(f"{kind} is longer than {_NAME_MAX} characters")
    if not value.isprintable():
        raise ValueError(f"{kind} contains control characters")
    return value


def normalize_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Roles checked and deduplicated, first occurrence kept."""
    return tuple(dict.fromkeys(check_name("role", r) for r in roles))


def normalize_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in attributes.items():
        check_name("attribute name", key)
        if len(value) > _NAME_MAX or not value.isprintable():
            raise ValueError(f"attribute {key!r} has an unprintable or over-long value")
        out[key] = value
    return out


_DURATION_RE = re.compile(r"([0-9]{1,6})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expires(text: str, now: datetime | None = None) -> datetime:
    """`--expires`: a duration from now (`90m`, `12h`, `30d`, `2w`) or an ISO date or datetime.

    A bare date means the start of that day in UTC; a datetime without an offset is UTC. The
    result must lie in the future.
    """
    now = now or datetime.now(UTC)
    text = text.strip()
    m = _DURATION_RE.fullmatch(text)
    if m is not None:
        amount = int(m.group(1))
        if amount == 0:
            raise ValueError("expiry duration must be positive")
        return now + timedelta(**{_UNITS[m.group(2)]: amount})
    try:
        if len(text) == 10:
            when = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        else:
            when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "expiry must be a duration like 90m, 12h, 30d, 2w or an ISO date like 2027-01-31"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    if when <= now:
        raise ValueError(f"expiry {when.isoformat()} is not in the future")
    return when
