from __future__ import annotations

import pytest

from switchyard.routing.uri_template import compile_template


def matches(template: str, uri: str) -> bool:
    return compile_template(template).fullmatch(uri) is not None


@pytest.mark.parametrize("uri", ["users://42/profile", "users://abc-def_1.x/profile"])
def test_simple_expression_matches_one_segment(uri: str) -> None:
    assert matches("users://{id}/profile", uri)


@pytest.mark.parametrize(
    "uri",
    ["users://4/2/profile", "users://42/profile/extra", "users://42?x/profile", "users://42#f"],
)
def test_simple_expression_does_not_span_slashes_queries_or_fragments(uri: str) -> None:
    assert not matches("users://{id}/profile", uri)


def test_trailing_simple_expression_stops_at_slash() -> None:
    assert matches("db://tables/{name}", "db://tables/users")
    assert not matches("db://tables/{name}", "db://tables/users/rows")


def test_reserved_expression_spans_slashes() -> None:
    assert matches("file:///{+path}", "file:///home/user/notes.txt")
    assert matches("file:///{+path}", "file:///a")
    assert matches("repo://{owner}/{+path}", "repo://me/src/pkg/mod.py")
    assert not matches("repo://{owner}/{+path}", "repo://src")


def test_fragment_expression() -> None:
    assert matches("doc://page{#section}", "doc://page#intro/part")


def test_query_expression() -> None:
    assert matches("search://items{?q,limit}", "search://items?q=x&limit=5")
    assert matches("search://items{?q,limit}", "search://items")


def test_multiple_simple_expressions() -> None:
    t = "gh://{owner}/{repo}/issues/{n}"
    assert matches(t, "gh://octo/hello/issues/12")
    assert not matches(t, "gh://octo/hello/pulls/12")
    assert not matches(t, "gh://octo/issues/12")


@pytest.mark.parametrize(
    "uri",
    ["file:///other/x", "FILE:///docs/x", "file:///docs", "file:///docsx", "xfile:///docs/x"],
)
def test_literal_parts_must_match_exactly(uri: str) -> None:
    assert not matches("file:///docs/{name}", uri)


def test_literal_prefix_is_anchored() -> None:
    assert not matches("a://{x}", "b://a://y")
    assert not matches("a://{x}/end", "a://y/endx")  # the whole URI, not a prefix of it


@pytest.mark.parametrize(
    ("template", "good", "bad"),
    [
        ("file:///a.b/{x}", "file:///a.b/1", "file:///aXb/1"),
        ("q://x+y/{v}", "q://x+y/1", "q://xxy/1"),
        ("q://(g)/{v}", "q://(g)/1", "q://g/1"),
        ("q://a*/{v}", "q://a*/1", "q://aaaa/1"),
        ("q://[ab]/{v}", "q://[ab]/1", "q://a/1"),
        ("q://^$|\\/{v}", "q://^$|\\/1", "q://x/1"),
        ("q://a?b/{v}", "q://a?b/1", "q://ab/1"),
    ],
)
def test_regex_metacharacters_are_literal(template: str, good: str, bad: str) -> None:
    assert matches(template, good)
    assert not matches(template, bad)


def test_template_without_expressions_matches_only_itself() -> None:
    assert matches("config://app.yaml", "config://app.yaml")
    assert not matches("config://app.yaml", "config://appXyaml")


def test_path_segment_expression_matches_its_expansion() -> None:
    # RFC 6570 level 3: {/path} expands to "/value" (e.g. "file:///root{/path}" -> "file:///root/a").
    assert matches("file:///root{/path}", "file:///root/a")
