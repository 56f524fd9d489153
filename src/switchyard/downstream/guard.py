"""DNS-rebinding defence for every HTTP face: strict `Origin` (403) and, on loopback, `Host` (421).

Matching is exact on the whole value: no prefix or wildcard-port tests (a prefix match once let
`http://127.0.0.1:evil.example` through an SDK check), `null` and duplicates are refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from switchyard.downstream.asgi import header_lines


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Guard:
    allowed_origins: frozenset[str]
    allowed_hosts: frozenset[str] | None
    """None: any Host (the gateway is bound beyond loopback and sits behind its own DNS)."""

    @classmethod
    def for_bind(
        cls, host: str, port: int, origins: Iterable[str] = (), hosts: Iterable[str] = ()
    ) -> Guard:
        local = (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}")
        allowed_origins = set(origins)
        allowed_hosts: set[str] | None = None
        if is_loopback(host):
            allowed_origins.update(f"http://{h}" for h in local)
            allowed_hosts = {*local, *(h.lower() for h in hosts)}
        elif hosts:
            allowed_hosts = {h.lower() for h in hosts}
        return cls(frozenset(allowed_origins), frozenset(allowed_hosts) if allowed_hosts else None)

    def check(
        self, headers: list[tuple[bytes, bytes]], index: dict[bytes, bytes] | None = None
    ) -> int:
        """0 if the request may proceed, else the HTTP status to refuse it with. `index`: the
        request's first value per header name (`asgi.head_index`), read when no name repeats;
        otherwise every line is counted."""
        origins = header_lines(headers, b"origin", index)
        if origins and (
            len(origins) > 1 or origins[0].decode("latin-1") not in self.allowed_origins
        ):
            return 403
        if self.allowed_hosts is not None:
            hosts = header_lines(headers, b"host", index)
            if len(hosts) != 1 or hosts[0].decode("latin-1").lower() not in self.allowed_hosts:
                return 421
        return 0
