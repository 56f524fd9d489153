"""`gateway.allowed_backends.urls`: which backend URLs may be configured at all.

A pattern is a URL whose parts are matched separately, never as one string (where `*` would
span `/`, `@` and `?`, so `https://attacker.test/x/.example.com/mcp` would pass
`https://*.example.com/mcp`):

* scheme: exactly;
* host: exactly, or label by label, where a glob matches within one DNS label only;
* port: exactly (absent: the scheme's default), or `*` for any;
* path, query: glob (`fnmatchcase`); a pattern without a query allows none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LABEL: Final = re.compile(r"[a-z0-9_-]+")
ANY_PORT: Final = -1


class PatternError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class _Parts:
    scheme: str
    host: str
    port: int
    path: str
    query: str


def _split_host_port(netloc: str, scheme: str, *, pattern: bool) -> tuple[str, int]:
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    host = host.lower().rstrip(".")
    if not host:
        raise PatternError("no host")
    if port_text == "":
        port = DEFAULT_PORTS[scheme]
    elif port_text == "*" and pattern:
        port = ANY_PORT
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise PatternError(f"bad port {port_text!r}")
    return host, port


def _parts(url: str, *, pattern: bool) -> _Parts:
    split = urlsplit(url.strip())
    scheme = split.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise PatternError("scheme must be http or https")
    host, port = _split_host_port(split.netloc, scheme, pattern=pattern)
    return _Parts(scheme, host, port, split.path or "/", split.query)


def _host_matches(host: str, pattern: str) -> bool:
    if not any(c in pattern for c in "*?["):
        return host == pattern
    labels, wanted = host.split("."), pattern.split(".")
    if len(labels) != len(wanted):
        return False
    for label, glob in zip(labels, wanted, strict=True):
        if not _LABEL.fullmatch(label) or not fnmatchcase(label, glob):
            return False
    return True


@dataclass(frozen=True, slots=True)
class UrlPattern:
    written: str
    _parts: _Parts

    @classmethod
    def parse(cls, written: str) -> UrlPattern:
        return cls(written, _parts(written, pattern=True))

    def matches(self, url: str) -> bool:
        try:
            got = _parts(url, pattern=False)
        except PatternError:
            return False
        want = self._parts
        return (
            got.scheme == want.scheme
            and _host_matches(got.host, want.host)
            and (want.port == ANY_PORT or got.port == want.port)
            and fnmatchcase(got.path, want.path)
            and fnmatchcase(got.query, want.query)
        )


def redacted(url: str) -> str:
    """`url` fit for an error message: no userinfo, no query, no fragment."""
    try:
        split = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = split.netloc.rpartition("@")[2]
    clean = SplitResult(split.scheme, netloc, split.path, "", "")
    suffix = "?[redacted]" if split.query else ""
    return urlunsplit(clean) + suffix
