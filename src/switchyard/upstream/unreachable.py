"""Why an HTTP backend cannot be reached, in words an operator can act on.

Two forms: `reason` (no address: fit for a client's error, which must not reveal internals)
and `BackendUnreachable` (names the URL without userinfo, query or fragment: for the log,
readiness and `switchyard backends`).
"""

from __future__ import annotations

import os
import socket
import ssl
from urllib.parse import SplitResult, urlsplit, urlunsplit

import aiohttp

from switchyard.upstream import http_client
from switchyard.upstream.connection import UpstreamClosed


class BackendUnreachable(UpstreamClosed):
    """The backend's URL could not be reached at all (nothing was exchanged)."""

    def __init__(self, url: str, transport: str, why: str) -> None:
        super().__init__(f"cannot reach {shown(url)} ({transport}): {why}")


def shown(url: str) -> str:
    """`url` without userinfo, query or fragment: either may hold a secret."""
    try:
        split = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    clean = SplitResult(split.scheme, split.netloc.rpartition("@")[2], split.path, "", "")
    return urlunsplit(clean) + ("?[redacted]" if split.query else "")


def reason(exc: BaseException) -> str:
    """What went wrong, without the address (the exception's own text often carries it)."""
    if isinstance(exc, http_client.ConnectFailed):
        exc = exc.cause
        if isinstance(exc, socket.gaierror):
            return "the host name does not resolve"
    if isinstance(exc, http_client.Disconnected):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate is not valid"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_reason(exc.os_error)
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return type(exc).__name__


def _os_reason(exc: OSError) -> str:
    # The errno's own words: the exception's text often repeats the address.
    text = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return text[:1].lower() + text[1:]
