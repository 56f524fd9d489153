"""What the console takes from an issuer's metadata into its own headers: only a plain origin
(CSP `form-action`) and only a URL that cannot split a header (`Location`)."""

from __future__ import annotations

import pytest

from switchyard.admin.console_oauth import origin, trusted_endpoint


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://login.example/authorize", "https://login.example"),
        ("http://127.0.0.1:8000/a?x=1", "http://127.0.0.1:8000"),
        ("https://[::1]:8443/authorize", "https://[::1]:8443"),
        ("https://a;script-src *@x/", None),  # would add a CSP directive
        ("https://a.example/\r\nSet-Cookie: x=1", None),  # would split the Location header
        ("https://a.example/a b", None),
        ("javascript:alert(1)", None),
        ("https:///no-host", None),
    ],
)
def test_only_a_plain_origin_is_taken(url: str, expected: str | None) -> None:
    assert origin(url) == expected


def test_the_gateway_calls_the_issuer_over_https_or_on_loopback_only() -> None:
    assert trusted_endpoint("https://login.example/token")
    assert trusted_endpoint("http://127.0.0.1:9000/token")
    assert trusted_endpoint("http://localhost/token")
    assert not trusted_endpoint("http://login.example/token")
    assert not trusted_endpoint("ftp://127.0.0.1/token")
