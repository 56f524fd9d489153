from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.routing import names

LLM_SAFE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_public_name_joins_prefix_separator_and_name() -> None:
    assert names.public_name("github", "_", "create_issue") == "github_create_issue"
    assert names.public_name("gh", "--", "x") == "gh--x"
    assert names.public_name("gh", "", "x") == "ghx"


def test_empty_prefix_means_bare_name() -> None:
    assert names.public_name("", "_", "create_issue") == "create_issue"


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "0", "x" * 128, "tool.v2", "-", "_"])
def test_valid_backend_names(name: str) -> None:
    assert names.is_valid_backend_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "has space",
        "evil\u202etxt",
        "zero\u200bwidth",
        "bell\x07",
        "x" * 129,
        "new\nline",
        "trail\n",
        "caf\u00e9",
        "\uff41",  # fullwidth a
        "a/b",
        "a:b",
        "\u0661",  # Arabic-Indic digit one
    ],
)
def test_invalid_backend_names(name: str) -> None:
    assert not names.is_valid_backend_name(name)


def test_alias_is_llm_safe_and_deterministic() -> None:
    a = names.alias("gh", "_", "github", "repo.create")
    assert LLM_SAFE.match(a)
    assert a == names.alias("gh", "_", "github", "repo.create")
    assert a.startswith("gh_repo_create_")


def test_alias_depends_on_backend_and_name() -> None:
    assert names.alias("", "_", "a", "x.y") != names.alias("", "_", "b", "x.y")
    assert names.alias("", "_", "a", "x.y") != names.alias("", "_", "a", "x_y")


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.from_regex(r"[A-Za-z0-9_.-]{0,64}", fullmatch=True),
    sep=st.from_regex(r"[A-Za-z0-9_-]{0,4}", fullmatch=True),
    backend=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True),
    name=st.from_regex(r"[A-Za-z0-9_.-]{1,128}", fullmatch=True),
)
def test_alias_always_llm_safe(prefix: str, sep: str, backend: str, name: str) -> None:
    assert LLM_SAFE.match(names.alias(prefix, sep, backend, name))


def test_disambiguate_avoids_taken_names() -> None:
    first = names.disambiguate("search", "b", "search", {"search"})
    assert LLM_SAFE.match(first)
    assert first != "search"
    second = names.disambiguate("search", "b", "search", {"search", first})
    assert second not in {"search", first}
    assert LLM_SAFE.match(second)


def test_disambiguate_of_a_64_char_name_stays_within_64() -> None:
    public = "x" * 64
    out = names.disambiguate(public, "b", public, {public})
    assert LLM_SAFE.match(out)
