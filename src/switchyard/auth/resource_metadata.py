"""OAuth 2.0 protected-resource metadata (RFC 9728) and Bearer challenges (RFC 6750).

Each MCP endpoint is its own protected resource: its resource URI is the endpoint's public URL
(e.g. ``https://gw.example/mcp``), its metadata lives at the RFC 9728 well-known URL built from
that URI, and every 401 names that URL in ``WWW-Authenticate`` so a client can discover which
authorization server to ask for a token with ``resource=<resource URI>`` (RFC 8707).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

WELL_KNOWN_PREFIX: Final = "/.well-known/oauth-protected-resource"

# RFC 6750 §3: error and error_description values are limited to these characters; a client
# parsing the challenge strictly would reject anything else (notably `"` and `\`).
_ERROR_CHARS: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
# RFC 6749 §3.3 scope-token (NQCHAR).
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# RFC 9110 token, for auth-param names and the error code.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _check_resource_uri(resource: str) -> None:
    parts = urlsplit(resource)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"resource URI must be an absolute http(s) URL: {resource!r}")
    if parts.fragment or "#" in resource:
        # RFC 9728 §1.2 / RFC 8707 §2: a resource identifier has no fragment.
        raise ValueError(f"resource URI must not have a fragment: {resource!r}")


def well_known_path(endpoint_path: str) -> str:
    """The metadata path for an endpoint path (``/mcp`` → ``WELL_KNOWN_PREFIX + "/mcp"``).

    RFC 9728 §3.1 inserts the well-known segment between the host and the resource's path; a
    resource at the root (``""`` or ``"/"``) gets the bare well-known path. A trailing slash is
    kept, because ``/mcp`` and ``/mcp/`` are different resource identifiers.
    """
    if endpoint_path in ("", "/"):
        return WELL_KNOWN_PREFIX
    if not endpoint_path.startswith("/"):
        endpoint_path = "/" + endpoint_path
    return WELL_KNOWN_PREFIX + endpoint_path


def metadata_url(resource: str) -> str:
    """The full metadata URL for a resource URI (RFC 9728 §3.1), query string preserved."""
    _check_resource_uri(resource)
    parts = urlsplit(resource)
    return urlunsplit((parts.scheme, parts.netloc, well_known_path(parts.path), parts.query, ""))


def resource_uri(public_base_url: str, endpoint_path: str) -> str:
    """An endpoint's resource URI from the gateway's public base URL and the endpoint's path.

    ``https://gw.example`` + ``/mcp`` → ``https://gw.example/mcp``. The base may carry a path
    prefix (a reverse proxy mounting the gateway under ``/tools``), which is kept.
    """
    base = urlsplit(public_base_url)
    if base.query or base.fragment:
        raise ValueError(f"public base URL must not have a query or fragment: {public_base_url!r}")
    path = base.path.rstrip("/") + "/" + endpoint_path.lstrip("/")
    uri = urlunsplit((base.scheme, base.netloc, path, "", ""))
    _check_resource_uri(uri)
    return uri


def protected_resource_metadata(
    resource: str,
    authorization_servers: Sequence[str],
    *,
    scopes_supported: Sequence[str] | None = None,
    resource_name: str | None = None,
    resource_documentation: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The RFC 9728 metadata document for one endpoint (serve it as ``application/json``).

    Only the Authorization header carries tokens here (security rule R-A3), so
    ``bearer_methods_supported`` is always ``["header"]``.
    """
    _check_resource_uri(resource)
    doc: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "bearer_methods_supported": ["header"],
    }
    if scopes_supported is not None:
        for scope in scopes_supported:
            _check_scope_token(scope)
        doc["scopes_supported"] = list(scopes_supported)
    if resource_name is not None:
        doc["resource_name"] = resource_name
    if resource_documentation is not None:
        doc["resource_documentation"] = resource_documentation
    if extra:
        clash = set(extra) & set(doc)
        if clash:
            raise ValueError(f"extra metadata must not override {sorted(clash)}")
        doc.update(extra)
    return doc


def _check_scope_token(scope: str) -> None:
    if not _SCOPE_TOKEN.fullmatch(scope):
        raise ValueError(f"not a valid OAuth scope token: {scope!r}")


def _clean_description(text: str) -> str:
    # A description can carry text from a rejected token or a library message; CR/LF would let
    # it split the header, and `"`/`\` are outside RFC 6750's allowed set, so map them to
    # harmless look-alikes instead of escaping.
    text = text.replace('"', "'").replace("\\", "/")
    return "".join(c if _ERROR_CHARS.fullmatch(c) else "?" for c in text)


def _quoted(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0x7E for c in value):
        raise ValueError(f"header parameter has control or non-ASCII characters: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(
    error: str | None = None,
    description: str | None = None,
    resource_metadata_url: str | None = None,
    scope: Sequence[str] | None = None,
    *,
    realm: str | None = None,
) -> str:
    """A ``WWW-Authenticate`` value for the Bearer scheme (RFC 6750 §3, RFC 9728 §5.1).

    With no ``error`` it is the bare challenge for a request that carried no token (RFC 6750
    §3.1 says not to send an error code then). ``scope`` names the scopes needed, space-joined.
    """
    params: list[tuple[str, str]] = []
    if realm is not None:
        params.append(("realm", _quoted(realm)))
    if resource_metadata_url is not None:
        params.append(("resource_metadata", _quoted(resource_metadata_url)))
    if error is not None:
        if not _TOKEN.fullmatch(error):
            raise ValueError(f"not a valid error code: {error!r}")
        params.append(("error", _quoted(error)))
        if description:
            params.append(("error_description", _quoted(_clean_description(description))))
    if scope:
        for s in scope:
            _check_scope_token(s)
        params.append(("scope", _quoted(" ".join(scope))))
    if not params:
        return "Bearer"
    return "Bearer " + ", ".join(f"{name}={value}" for name, value in params)


@dataclass(frozen=True, slots=True)
class ProtectedResource:
    """One MCP endpoint as an OAuth protected resource: what the HTTP layer serves and says."""

    resource: str  # the endpoint's resource URI; tokens must carry it in `aud`
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] | None = None
    resource_name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_resource_uri(self.resource)

    @property
    def path(self) -> str:
        """The endpoint's own path on the gateway (``/mcp``)."""
        return urlsplit(self.resource).path or "/"

    @property
    def well_known_path(self) -> str:
        return well_known_path(urlsplit(self.resource).path)

    @property
    def metadata_url(self) -> str:
        return metadata_url(self.resource)

    def metadata(self) -> dict[str, Any]:
        return protected_resource_metadata(
            self.resource,
            self.authorization_servers,
            scopes_supported=self.scopes_supported,
            resource_name=self.resource_name,
            extra=self.extra,
        )

    def challenge(
        self,
        error: str | None = None,
        description: str | None = None,
        scope: Sequence[str] | None = None,
    ) -> str:
        return www_authenticate(error, description, self.metadata_url, scope)
