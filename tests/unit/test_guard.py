from __future__ import annotations

import pytest

from switchyard.downstream.asgi import head_index
from switchyard.downstream.guard import Guard, is_loopback

PORT = 8080
LOCAL = Guard.for_bind("127.0.0.1", PORT, origins=["http://localhost:6274"])
HOST_OK = (b"host", b"127.0.0.1:8080")


def check(guard: Guard, *headers: tuple[bytes, bytes]) -> int:
    """The verdict on `headers`, the same read line by line and from the request's index."""
    listed = list(headers)
    verdict = guard.check(listed)
    assert guard.check(listed, head_index({"headers": listed})) == verdict
    return verdict


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.5.6.7"])
def test_is_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.evil"])
def test_is_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_no_origin_is_allowed() -> None:
    assert check(LOCAL, HOST_OK) == 0
    assert check(LOCAL, HOST_OK, (b"content-type", b"application/json")) == 0


@pytest.mark.parametrize(
    "origin",
    [
        b"http://127.0.0.1:8080",
        b"http://localhost:8080",
        b"http://[::1]:8080",
        b"http://localhost:6274",
    ],
)
def test_exact_allowed_origin_is_accepted(origin: bytes) -> None:
    assert check(LOCAL, HOST_OK, (b"origin", origin)) == 0


@pytest.mark.parametrize(
    "origin",
    [
        b"null",
        b"",
        b"http://127.0.0.1:8080.evil.example",
        b"http://127.0.0.1:evil.example",
        b"http://localhost:8081",
        b"https://127.0.0.1:8080",
        b"http://127.0.0.1:8080/",
        b"http://127.0.0.1",
        b"http://localhost:6274/",
        b"http://localhost:62745",
        b"http://evil.example",
        b" http://127.0.0.1:8080",
        b"http://127.0.0.1:8080 ",
    ],
)
def test_look_alike_origins_are_refused(origin: bytes) -> None:
    assert check(LOCAL, HOST_OK, (b"origin", origin)) == 403


def test_two_origin_headers_are_refused_even_if_both_allowed() -> None:
    ok = (b"origin", b"http://127.0.0.1:8080")
    assert check(LOCAL, HOST_OK, ok, ok) == 403
    assert check(LOCAL, HOST_OK, ok, (b"origin", b"http://evil.example")) == 403


def test_origin_is_checked_before_host() -> None:
    assert check(LOCAL, (b"origin", b"null")) == 403


@pytest.mark.parametrize("host", [b"127.0.0.1:8080", b"localhost:8080", b"[::1]:8080"])
def test_loopback_hosts_are_accepted(host: bytes) -> None:
    assert check(LOCAL, (b"host", host)) == 0


def test_host_header_is_case_insensitive() -> None:
    assert check(LOCAL, (b"host", b"LOCALHOST:8080")) == 0


@pytest.mark.parametrize(
    "host",
    [
        b"evil.example:8080",
        b"evil.example",
        b"127.0.0.1:8081",
        b"localhost",
        b"127.0.0.1",
        b"127.0.0.1:8080.evil.example",
        b"",
    ],
)
def test_host_not_allowed_is_421(host: bytes) -> None:
    assert check(LOCAL, (b"host", host)) == 421


def test_missing_host_is_421() -> None:
    assert check(LOCAL) == 421
    assert check(LOCAL, (b"origin", b"http://127.0.0.1:8080")) == 421


def test_two_host_headers_are_421() -> None:
    assert check(LOCAL, HOST_OK, HOST_OK) == 421
    assert check(LOCAL, HOST_OK, (b"host", b"evil.example:8080")) == 421


def test_extra_allowed_hosts_on_loopback() -> None:
    guard = Guard.for_bind("127.0.0.1", PORT, hosts=["devbox.internal:8080"])
    assert check(guard, (b"host", b"devbox.internal:8080")) == 0
    assert check(guard, (b"host", b"127.0.0.1:8080")) == 0
    assert check(guard, (b"host", b"other.internal:8080")) == 421


def test_configured_host_matches_itself_whatever_its_case() -> None:
    # Host names are case-insensitive; a Host header equal to the configured value must pass.
    guard = Guard.for_bind("127.0.0.1", PORT, hosts=["DevBox.internal:8080"])
    assert check(guard, (b"host", b"DevBox.internal:8080")) == 0


def test_ipv6_loopback_bind() -> None:
    guard = Guard.for_bind("::1", 9000)
    assert check(guard, (b"host", b"[::1]:9000")) == 0
    assert check(guard, (b"host", b"[::1]:9000"), (b"origin", b"http://[::1]:9000")) == 0
    assert check(guard, (b"host", b"[::1]:8080")) == 421


def test_non_loopback_bind_without_allowed_hosts_accepts_any_host() -> None:
    guard = Guard.for_bind("0.0.0.0", PORT)
    assert guard.allowed_hosts is None
    assert check(guard, (b"host", b"mcp.example.com")) == 0
    assert check(guard, (b"host", b"anything:1234")) == 0
    assert check(guard) == 0
    assert check(guard, (b"host", b"a"), (b"host", b"b")) == 0


def test_non_loopback_bind_still_checks_origin() -> None:
    guard = Guard.for_bind("0.0.0.0", PORT, origins=["https://app.example.com"])
    assert check(guard, (b"origin", b"https://app.example.com")) == 0
    assert check(guard, (b"origin", b"http://127.0.0.1:8080")) == 403
    assert check(guard, (b"origin", b"https://app.example.com.evil")) == 403


def test_non_loopback_bind_with_allowed_hosts_enforces_them() -> None:
    guard = Guard.for_bind("0.0.0.0", PORT, hosts=["mcp.example.com"])
    assert check(guard, (b"host", b"mcp.example.com")) == 0
    assert check(guard, (b"host", b"evil.example")) == 421
