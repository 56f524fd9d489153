from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.routing import catalog
from switchyard.routing.catalog import Listing
from switchyard.routing.uri_template import MAX_URI_CHARS, compile_template, overlaps
from switchyard.wire.frame import Raw


def matches(template: str, uri: str) -> bool:
    return compile_template(template).matches(uri)


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


# -- every operator ------------------------------------------------------------------------

OPERATOR_TABLE = [
    # simple: one segment, no query or fragment
    ("u://{x}", "u://", True),
    ("u://{x}", "u://a.b;c,d", True),
    ("u://{x}", "u://a/b", False),
    ("u://{x,y}", "u://1,2", True),
    # reserved: anything
    ("u://{+x}", "u://a/b?c#d", True),
    ("u://{+x}/end", "u://a/b/end", True),
    ("u://{+x}/end", "u://a/b/en", False),
    # fragment: nothing, or '#' and anything
    ("u://p{#x}", "u://p", True),
    ("u://p{#x}", "u://p#a/b?c", True),
    ("u://p{#x}", "u://pa", False),
    # label
    ("f://{name}{.ext}", "f://notes.txt", True),
    ("f://{name}{.ext}", "f://a.b.c", True),
    ("f://{name}{.ext}", "f://a.b/c", False),
    ("f://x{.ext}", "f://x", True),
    ("f://x{.ext}", "f://x.", True),
    ("f://x{.ext}", "f://xy", False),
    # path parameters
    ("m://map{;x,y}", "m://map;x=1;y=2", True),
    ("m://map{;x,y}", "m://map", True),
    ("m://map{;x,y}", "m://map;x=1/2", False),
    ("m://map{;x}", "m://mapx", False),
    # path segments
    ("p://root{/path}", "p://root", True),
    ("p://root{/path}", "p://root/a/b/c", True),
    ("p://root{/path}", "p://root/a?b", False),
    ("p://root{/path}", "p://rootx", False),
    ("p://root{/a}/end", "p://root/x/y/end", True),
    # query and continuation
    ("s://items{?q,n}", "s://items?q=1&n=2", True),
    ("s://items{?q}{&n}", "s://items?q=1&n=2", True),
    ("s://items{?q}", "s://items&q=1", True),
    ("s://items{?q}", "s://items?q=1#frag", False),
    ("s://items{?q}", "s://itemsq", False),
    ("s://items{?q}{#f}", "s://items?q=1#frag", True),
    # several expressions and literals between them
    ("g://{a}/{b}/x{.c}{;d}{?e}", "g://1/2/x.y;k=v?q=1", True),
    ("g://{a}/{b}/x{.c}{;d}{?e}", "g://1/2/x;k=v.y", True),  # '.' is part of the ';' run
    ("g://{a}/{b}/x{.c}{;d}{?e}", "g://1/2/y", False),
    # a repeated literal that a run could also consume
    ("r://{a}.{b}.end", "r://x.y.z.end", True),
    ("r://{a}.{b}.end", "r://x.end", False),
    ("r://{a}aa{b}", "r://aaa", True),
    ("r://{a}aa{b}", "r://a", False),
    # operators reserved for future extensions read as simple expressions
    ("o://{=x}", "o://v", True),
    ("o://{=x}", "o://v/w", False),
]


@pytest.mark.parametrize(("template", "uri", "expected"), OPERATOR_TABLE)
def test_operator_table(template: str, uri: str, expected: bool) -> None:
    assert matches(template, uri) is expected


def _reference_regex(template: str) -> re.Pattern[str]:
    """The same language written as a backtracking regex: fine for short inputs only."""
    out = []
    for token in compile_template(template).tokens:
        if isinstance(token, str):
            out.append(re.escape(token))
            continue
        run = f"[^{re.escape(token.excluded)}]*" if token.excluded else ".*"
        out.append(f"(?:[{re.escape(token.lead)}]{run})?" if token.lead else run)
    return re.compile("".join(out), re.DOTALL)


TEMPLATES = [
    "u://{x}",
    "u://{+x}",
    "u://{x}{.y}",
    "u://{x}{;y}{?z}",
    "u://a{/p}/b{#f}",
    "u://{a}.{b}",
    "u://{+a}/{b}",
    "u://{x}{&y}{#z}",
    "{x}",
    "{+a}a{b}a",
    # each expression must run to the next literal's first character: the possessive regex
    "u://{x}/{y}",
    "u://{x}?{+y}",
    "u://a{?q}#{x}",
    "u://{x}.{y}{#z}",
    "u://{+x}",
    "u://a/{x}{/p}",
]


def test_plain_templates_use_the_possessive_regex() -> None:
    assert compile_template("u://{x}/{y}").plain is not None
    assert compile_template("u://a{?q}#{x}").plain is not None
    assert compile_template("f://{name}{.ext}").plain is None
    assert compile_template("u://{+a}/b").plain is None


@settings(max_examples=400, deadline=None)
@given(
    template=st.sampled_from(TEMPLATES),
    tail=st.text(alphabet="ab./;?&#=,", max_size=12),
    head=st.sampled_from(["u://", "", "u:/", "a"]),
)
def test_matcher_agrees_with_a_reference_regex(template: str, head: str, tail: str) -> None:
    uri = head + tail
    assert matches(template, uri) is (_reference_regex(template).fullmatch(uri) is not None)


# -- cost ----------------------------------------------------------------------------------


class _TooSlow(Exception):
    pass


def _within(seconds: float, fn: Callable[[], object]) -> object:
    """Run `fn`, interrupting it with SIGALRM after `seconds` (a thread could not: a regex match
    holds the GIL, while it does check for signals). Restores any alarm set outside."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    except _TooSlow:
        pytest.fail(f"template matching took longer than {seconds} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 0.01))


HOSTILE = [
    "files://{name}{.ext}",
    "files://{name}{;x}",
    "files://{;x}",
    "files://{.a}{.b}{.c}",
    "files://{a}{b}{c}{d}",
    "files://{+a}{+b}{+c}.{d}",
]


@pytest.mark.parametrize("template", HOSTILE)
@pytest.mark.parametrize("separator", [".", ";", "a"])
def test_separator_floods_are_matched_in_linear_time(template: str, separator: str) -> None:
    pattern = compile_template(template)
    under_limit = "files://" + separator * (MAX_URI_CHARS - len("files://") - 1) + "/"
    started = time.perf_counter()
    assert _within(2.0, lambda: pattern.matches(under_limit)) is False
    assert _within(2.0, lambda: pattern.matches(under_limit[:-1] + "?")) is False
    assert time.perf_counter() - started < 2.0


def test_ten_thousand_dots_do_not_stall_catalog_lookup() -> None:
    cat = catalog.build(
        [
            Listing(
                "fs",
                "fs",
                {
                    catalog.TEMPLATES: (
                        {"uriTemplate": Raw(b'"files://{name}{.ext}"'), "name": Raw(b'"f"')},
                        {"uriTemplate": Raw(b'"files://{;x}"'), "name": Raw(b'"g"')},
                    )
                },
            )
        ],
        "_",
    )
    uri = "files://" + "." * 10_000 + "/"
    assert _within(2.0, lambda: cat.resource_owner(uri)) is None
    assert _within(2.0, lambda: cat.resource_owner("files://" + "." * 5_000 + "/")) is None
    owner = cat.resource_owner("files://" + "." * 5_000)
    assert owner is not None
    assert owner.public == "files://{name}{.ext}"


def test_uris_over_the_limit_match_no_template() -> None:
    pattern = compile_template("u://{+x}")
    assert pattern.matches("u://" + "a" * (MAX_URI_CHARS - 4))
    assert not pattern.matches("u://" + "a" * (MAX_URI_CHARS - 3))


# -- overlap and specificity ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("{+x}", "notes://{id}", True),
        ("notes://{id}", "notes://{+p}", True),
        ("notes://{id}", "files://{id}", False),
        ("x://{a}.txt", "x://{b}.png", False),
        ("x://{a}.txt", "x://{b}{.ext}", True),
        ("x://{a}/b", "x://{a}", False),  # a simple expression never holds a slash
        ("x://{+a}/b", "x://{a}", False),  # the first always ends in "/b", the second can't
        ("x://a{?q}", "x://a{#f}", True),  # both match "x://a"
        ("x://a{?q}", "x://a?q=1#f", False),
        ("x://a{?q}{#f}", "x://a?q=1#f", True),
        ("x://{a}", "x://{b}", True),
        ("x://{a}z", "x://{b}y", False),
        ("x://{/p}", "x://a/b", False),  # {/p} cannot follow "//" with "a" directly
        ("x:/{/p}", "x://a/b", True),
        ("lit://one", "lit://one", True),
        ("lit://one", "lit://two", False),
    ],
)
def test_overlap(a: str, b: str, expected: bool) -> None:
    ta, tb = compile_template(a), compile_template(b)
    assert overlaps(ta, tb) is expected
    assert overlaps(tb, ta) is expected


@settings(max_examples=300, deadline=None)
@given(
    a=st.sampled_from(TEMPLATES),
    b=st.sampled_from(TEMPLATES),
    uri=st.text(alphabet="ab./;?&#=,", max_size=8).map(lambda t: "u://" + t),
)
def test_a_uri_both_match_means_they_overlap(a: str, b: str, uri: str) -> None:
    if matches(a, uri) and matches(b, uri):
        assert overlaps(compile_template(a), compile_template(b))


def test_specificity_orders_prefix_then_spanning_then_literals() -> None:
    ordered = sorted(
        ["{+x}", "f://{+x}", "f://{x}", "f://d/{+x}", "f://{x}.txt", "f://{x}{/y}"],
        key=lambda t: compile_template(t).specificity,
    )
    assert ordered == ["f://d/{+x}", "f://{x}.txt", "f://{x}", "f://{+x}", "f://{x}{/y}", "{+x}"]
