from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from switchyard.routing import catalog
from switchyard.routing.catalog import Catalog, InvalidCursor, Listing
from switchyard.wire import frame
from switchyard.wire.frame import Raw

LLM_SAFE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def item(**fields: Any) -> dict[str, Raw]:
    return frame.decode_object(json.dumps(fields).encode())


def tool(name: str, **extra: Any) -> dict[str, Raw]:
    return item(name=name, inputSchema={"type": "object"}, **extra)


def listing(
    backend: str,
    prefix: str | None = None,
    *,
    tools: tuple[dict[str, Raw], ...] = (),
    prompts: tuple[dict[str, Raw], ...] = (),
    resources: tuple[dict[str, Raw], ...] = (),
    templates: tuple[dict[str, Raw], ...] = (),
) -> Listing:
    return Listing(
        backend=backend,
        prefix=backend if prefix is None else prefix,
        items={
            catalog.TOOLS: tools,
            catalog.PROMPTS: prompts,
            catalog.RESOURCES: resources,
            catalog.TEMPLATES: templates,
        },
    )


def publics(cat: Catalog, kind: str = catalog.TOOLS) -> list[str]:
    return [e.public for e in cat.entries[kind]]


def walk(cat: Catalog, kind: str, page_size: int, allowed: Any = None) -> list[list[Any]]:
    pages: list[list[Any]] = []
    cursor: str | None = None
    while True:
        body = json.loads(cat.page(kind, cursor, page_size, allowed))
        pages.append(body[kind])
        cursor = body.get("nextCursor")
        if cursor is None:
            return pages
        assert isinstance(cursor, str)


# -- public names --------------------------------------------------------------------------


def test_public_name_is_prefix_separator_name() -> None:
    cat = catalog.build([listing("github", tools=(tool("create_issue"),))], "_")
    assert publics(cat) == ["github_create_issue"]
    entry = cat.lookup(catalog.TOOLS, "github_create_issue")
    assert entry is not None
    assert (entry.backend, entry.original, entry.kind) == ("github", "create_issue", "tools")
    assert json.loads(entry.item)["name"] == "github_create_issue"


def test_custom_separator() -> None:
    cat = catalog.build([listing("gh", tools=(tool("x"),))], "--")
    assert publics(cat) == ["gh--x"]


def test_empty_prefix_exposes_bare_name() -> None:
    cat = catalog.build([listing("github", "", tools=(tool("create_issue"),))], "_")
    assert publics(cat) == ["create_issue"]
    entry = cat.lookup(catalog.TOOLS, "create_issue")
    assert entry is not None
    assert entry.backend == "github"


def test_prompts_are_named_like_tools() -> None:
    cat = catalog.build([listing("p", prompts=(item(name="greet", arguments=[]),))], "_")
    assert publics(cat, catalog.PROMPTS) == ["p_greet"]
    entry = cat.lookup(catalog.PROMPTS, "p_greet")
    assert entry is not None
    assert entry.original == "greet"
    assert cat.lookup(catalog.TOOLS, "p_greet") is None


def test_original_name_alone_does_not_route() -> None:
    cat = catalog.build([listing("github", tools=(tool("search"),))], "_")
    assert cat.lookup(catalog.TOOLS, "search") is None
    assert cat.lookup(catalog.TOOLS, "github_search") is not None


# -- refused names -------------------------------------------------------------------------

BAD_NAMES = [
    "has space",
    "evil\u202etxt",
    "zero\u200bwidth",
    "bell\x07",
    "",
    "x" * 129,
    "caf\u00e9",
    "new\nline",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_invalid_backend_names_are_refused(bad: str) -> None:
    cat = catalog.build([listing("b", "", tools=(tool("ok"), tool(bad)))], "_")
    assert publics(cat) == ["ok"]
    assert cat.lookup(catalog.TOOLS, bad) is None
    body = json.loads(cat.page(catalog.TOOLS, None, 100))
    assert [t["name"] for t in body["tools"]] == ["ok"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_invalid_prompt_names_are_refused(bad: str) -> None:
    cat = catalog.build([listing("b", prompts=(item(name=bad), item(name="ok")))], "_")
    assert publics(cat, catalog.PROMPTS) == ["b_ok"]


@pytest.mark.parametrize("bad_name", [None, 1, ["x"], {"a": 1}, True])
def test_non_string_or_missing_name_is_hidden(bad_name: Any) -> None:
    bad = item(inputSchema={}) if bad_name is None else item(name=bad_name)
    cat = catalog.build([listing("b", "", tools=(bad, tool("ok")))], "_")
    assert publics(cat) == ["ok"]


# -- aliases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "name"),
    [
        ("gh", "repo.create"),
        ("", "a.b.c"),
        ("gh", "x" * 62),  # gh_ + 62 = 65 chars
        ("", "y" * 65),
        ("gh", "z" * 128),
        ("my.server", "tool"),  # the prefix itself is not LLM-safe
    ],
)
def test_unsafe_public_names_get_a_routable_alias(prefix: str, name: str) -> None:
    cat = catalog.build([listing("back", prefix, tools=(tool(name),))], "_")
    [public] = publics(cat)
    assert LLM_SAFE.match(public)
    entry = cat.lookup(catalog.TOOLS, public)
    assert entry is not None
    assert (entry.backend, entry.original) == ("back", name)
    assert json.loads(entry.item)["name"] == public
    # deterministic: an identical rebuild gives the same alias
    again = catalog.build([listing("back", prefix, tools=(tool(name),))], "_")
    assert publics(again) == [public]


def test_name_that_fits_64_exactly_is_not_aliased() -> None:
    name = "x" * 61
    cat = catalog.build([listing("gh", tools=(tool(name),))], "_")
    assert publics(cat) == ["gh_" + name]


def test_distinct_dotted_names_get_distinct_aliases() -> None:
    cat = catalog.build([listing("b", "", tools=(tool("a.b"), tool("a_b"), tool("a-b.c")))], "_")
    ps = publics(cat)
    assert len(set(ps)) == 3
    assert "a_b" in ps
    originals = {cat.lookup(catalog.TOOLS, p).original for p in ps}  # type: ignore[union-attr]
    assert originals == {"a.b", "a_b", "a-b.c"}


# -- collisions ----------------------------------------------------------------------------


def test_collision_earlier_backend_keeps_the_name() -> None:
    a = listing("alpha", "", tools=(tool("search", description="A"),))
    b = listing("beta", "", tools=(tool("search", description="B"),))
    cat = catalog.build([a, b], "_")
    first, second = publics(cat)
    assert first == "search"
    assert second != "search"
    assert second.startswith("search_")
    assert LLM_SAFE.match(second)
    assert cat.lookup(catalog.TOOLS, "search").backend == "alpha"  # type: ignore[union-attr]
    moved = cat.lookup(catalog.TOOLS, second)
    assert moved is not None
    assert (moved.backend, moved.original) == ("beta", "search")
    assert json.loads(moved.item) == {
        "name": second,
        "inputSchema": {"type": "object"},
        "description": "B",
    }


def test_collision_follows_configuration_order() -> None:
    a = listing("alpha", "", tools=(tool("search"),))
    b = listing("beta", "", tools=(tool("search"),))
    cat = catalog.build([b, a], "_")
    assert cat.lookup(catalog.TOOLS, "search").backend == "beta"  # type: ignore[union-attr]


def test_collision_through_prefix_and_separator() -> None:
    a = listing("a", "x", tools=(tool("y_z"),))
    b = listing("b", "x_y", tools=(tool("z"),))
    cat = catalog.build([a, b], "_")
    first, second = publics(cat)
    assert first == "x_y_z"
    assert second != first
    assert cat.lookup(catalog.TOOLS, first).backend == "a"  # type: ignore[union-attr]
    assert cat.lookup(catalog.TOOLS, second).backend == "b"  # type: ignore[union-attr]


def test_collisions_are_deterministic_across_builds() -> None:
    def make() -> list[Listing]:
        return [
            listing(name, "", tools=(tool("search"), tool("fetch"), tool("x.y")))
            for name in ("a", "b", "c", "d")
        ]

    first = catalog.build(make(), "_")
    second = catalog.build(make(), "_")
    assert first.entries == second.entries
    assert len(set(publics(first))) == 12
    for e in first.entries[catalog.TOOLS]:
        assert LLM_SAFE.match(e.public)
        assert first.lookup(catalog.TOOLS, e.public) == e


def test_collision_with_an_earlier_alias() -> None:
    # b's alias for "x.y" would be "x_y_<hash>": a plain "x_y" from another backend is unaffected
    a = listing("a", "", tools=(tool("x_y"),))
    b = listing("b", "", tools=(tool("x.y"),))
    cat = catalog.build([a, b], "_")
    assert cat.lookup(catalog.TOOLS, "x_y").backend == "a"  # type: ignore[union-attr]
    [aliased] = [p for p in publics(cat) if p != "x_y"]
    assert cat.lookup(catalog.TOOLS, aliased).original == "x.y"  # type: ignore[union-attr]


# -- repeats across pages ------------------------------------------------------------------


def test_backend_repeating_an_item_does_not_duplicate_it() -> None:
    cat = catalog.build([listing("a", tools=(tool("t"), tool("u"), tool("t")))], "_")
    assert publics(cat) == ["a_t", "a_u"]


def test_backend_repeating_an_aliased_item_does_not_duplicate_it() -> None:
    cat = catalog.build([listing("a", tools=(tool("x.y"), tool("x.y")))], "_")
    assert len(publics(cat)) == 1


def test_backend_repeating_a_colliding_item_does_not_duplicate_it() -> None:
    # beta's "search" collides with alpha's and is renamed; beta listing it again (a repeated
    # page) must not mint a second public name for the same tool.
    a = listing("alpha", "", tools=(tool("search"),))
    b = listing("beta", "", tools=(tool("search"), tool("search")))
    cat = catalog.build([a, b], "_")
    beta = [(e.public, e.original) for e in cat.entries[catalog.TOOLS] if e.backend == "beta"]
    assert len(beta) == 1, beta


# -- byte preservation ---------------------------------------------------------------------


def test_every_field_but_the_name_is_preserved_byte_identical() -> None:
    raw = (
        b'{"title":"T \\u00e9","name":"t","inputSchema":{ "type" : "object", "n": 1.50 },'
        b'"annotations":{"readOnlyHint":true},"_meta":{"k":[1, 2]},"x":1e2,"z":null}'
    )
    source = frame.decode_object(raw)
    cat = catalog.build([listing("gh", tools=(source,))], "_")
    [entry] = cat.entries[catalog.TOOLS]
    out = frame.decode_object(entry.item)
    assert list(out) == list(source)
    for key, value in source.items():
        if key != "name":
            assert bytes(out[key]) == bytes(value), key
    assert frame.decode_str(out["name"]) == "gh_t"
    expected = json.loads(raw)
    expected["name"] = "gh_t"
    assert json.loads(entry.item) == expected


def test_resources_and_templates_are_preserved_byte_identical() -> None:
    res = b'{"uri":"file:///a.txt","name":"a","mimeType":"text/plain","size":10}'
    tpl = b'{"uriTemplate":"file:///{+path}","name":"files","description":" d "}'
    cat = catalog.build(
        [
            listing(
                "fs",
                resources=(frame.decode_object(res),),
                templates=(frame.decode_object(tpl),),
            )
        ],
        "_",
    )
    assert cat.entries[catalog.RESOURCES][0].item == res
    assert cat.entries[catalog.TEMPLATES][0].item == tpl


# -- pagination ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 15), data=st.data())
def test_pagination_walks_everything_exactly_once(n: int, data: st.DataObject) -> None:
    page_size = data.draw(st.integers(1, max(n, 1) + 1))
    cat = catalog.build([listing("b", tools=tuple(tool(f"t{i}") for i in range(n)))], "_")
    pages = walk(cat, catalog.TOOLS, page_size)
    seen = [t["name"] for page in pages for t in page]
    assert seen == [f"b_t{i}" for i in range(n)]
    assert len(pages) == max(1, math.ceil(n / page_size))
    assert all(len(p) == page_size for p in pages[:-1])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), page_size=st.integers(1, 13), keep=st.integers(1, 4))
def test_pagination_with_a_filter_walks_only_allowed(n: int, page_size: int, keep: int) -> None:
    cat = catalog.build([listing("b", tools=tuple(tool(f"t{i}") for i in range(n)))], "_")

    def allowed(e: catalog.Entry) -> bool:
        return int(e.original[1:]) % keep == 0

    seen = [t["name"] for page in walk(cat, catalog.TOOLS, page_size, allowed) for t in page]
    assert seen == [f"b_t{i}" for i in range(n) if i % keep == 0]


def test_last_page_has_no_next_cursor_and_empty_catalog_lists_empty() -> None:
    cat = catalog.build([], "_")
    assert json.loads(cat.page(catalog.TOOLS, None, 10)) == {"tools": []}
    assert json.loads(cat.page(catalog.RESOURCES, None, 10)) == {"resources": []}


def test_cursor_is_opaque_string_per_kind() -> None:
    cat = catalog.build(
        [listing("b", tools=(tool("a"), tool("c")), prompts=(item(name="p"), item(name="q")))],
        "_",
    )
    tools_cursor = json.loads(cat.page(catalog.TOOLS, None, 1))["nextCursor"]
    prompts_cursor = json.loads(cat.page(catalog.PROMPTS, None, 1))["nextCursor"]
    assert json.loads(cat.page(catalog.TOOLS, tools_cursor, 1)) == {
        "tools": [{"name": "b_c", "inputSchema": {"type": "object"}}]
    }
    with pytest.raises(InvalidCursor):
        cat.page(catalog.TOOLS, prompts_cursor, 1)
    with pytest.raises(InvalidCursor):
        cat.page(catalog.PROMPTS, tools_cursor, 1)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage",
        "!!!!",
        "\u00e9t\u00e9",
        "eyJwYWdlIjoyfQ==",  # a backend's own cursor: {"page":2}
        catalog.encode_cursor("tools", 99),  # past the end
        catalog.encode_cursor("prompts", 0),  # another kind
        "c3kyOnRvb2xzOjA",  # sy2:tools:0
        "c3kxOnRvb2xzOi0x",  # sy1:tools:-1
        "c3kxOnRvb2xzOjE6Mg",  # sy1:tools:1:2
        "c3kxOnRvb2xzOg",  # sy1:tools:
        "c3kxOnRvb2xzOng",  # sy1:tools:x
    ],
)
def test_invalid_or_foreign_cursors_raise(cursor: str) -> None:
    cat = catalog.build([listing("b", tools=(tool("a"), tool("c")))], "_")
    with pytest.raises(InvalidCursor):
        cat.page(catalog.TOOLS, cursor, 1)


def test_cursor_at_exact_end_gives_an_empty_page() -> None:
    cat = catalog.build([listing("b", tools=(tool("a"),))], "_")
    body = json.loads(cat.page(catalog.TOOLS, catalog.encode_cursor("tools", 1), 5))
    assert body == {"tools": []}


# -- resources -----------------------------------------------------------------------------


def test_resources_route_by_exact_uri() -> None:
    cat = catalog.build(
        [
            listing("a", resources=(item(uri="file:///x", name="x"),)),
            listing("b", resources=(item(uri="file:///y", name="y"),)),
        ],
        "_",
    )
    assert cat.resource_owner("file:///x").backend == "a"  # type: ignore[union-attr]
    assert cat.resource_owner("file:///y").backend == "b"  # type: ignore[union-attr]
    assert cat.resource_owner("file:///X") is None
    assert cat.resource_owner("file:///x/") is None
    assert cat.resource_owner("file:///") is None
    # URIs are not prefixed
    assert publics(cat, catalog.RESOURCES) == ["file:///x", "file:///y"]


def test_templates_route_via_resource_owner() -> None:
    cat = catalog.build(
        [
            listing("db", templates=(item(uriTemplate="db://tables/{table}", name="t"),)),
            listing("fs", templates=(item(uriTemplate="file:///{+path}", name="f"),)),
        ],
        "_",
    )
    assert cat.resource_owner("db://tables/users").backend == "db"  # type: ignore[union-attr]
    assert cat.resource_owner("file:///a/b/c.txt").backend == "fs"  # type: ignore[union-attr]
    assert cat.resource_owner("db://tables/users/rows") is None
    assert cat.resource_owner("http://tables/users") is None
    entry = cat.lookup(catalog.TEMPLATES, "db://tables/{table}")
    assert entry is not None
    assert entry.backend == "db"


def test_exact_resource_wins_over_template() -> None:
    cat = catalog.build(
        [
            listing("tpl", templates=(item(uriTemplate="file:///{+path}", name="f"),)),
            listing("exact", resources=(item(uri="file:///special", name="s"),)),
        ],
        "_",
    )
    assert cat.resource_owner("file:///special").backend == "exact"  # type: ignore[union-attr]
    assert cat.resource_owner("file:///other").backend == "tpl"  # type: ignore[union-attr]


def test_the_most_specific_template_wins_over_configuration_order() -> None:
    cat = catalog.build(
        [
            listing("a", templates=(item(uriTemplate="mem://{+key}", name="a"),)),
            listing("b", templates=(item(uriTemplate="mem://{key}", name="b"),)),
        ],
        "_",
    )
    # {key} cannot span a slash, {+key} can: the narrower one serves what both match.
    assert cat.resource_owner("mem://k").backend == "b"  # type: ignore[union-attr]
    assert cat.resource_owner("mem://k/deeper").backend == "a"  # type: ignore[union-attr]


def _owner(cat: Catalog, uri: str) -> str | None:
    entry = cat.resource_owner(uri)
    return None if entry is None else entry.backend


def test_a_catch_all_template_listed_first_does_not_shadow_later_backends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cat = catalog.build(
        [
            listing("greedy", templates=(item(uriTemplate="{+anything}", name="g"),)),
            listing("notes", templates=(item(uriTemplate="notes://{id}", name="n"),)),
            listing("files", templates=(item(uriTemplate="file:///docs/{+path}", name="f"),)),
            listing("root", templates=(item(uriTemplate="file:///{+path}", name="r"),)),
        ],
        "_",
    )
    assert _owner(cat, "notes://7") == "notes"
    assert _owner(cat, "file:///docs/a/b.txt") == "files"  # the longer literal prefix
    assert _owner(cat, "file:///etc/x") == "root"
    assert _owner(cat, "other://x") == "greedy"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("'notes://{id}'" in w and "'notes'" in w and "'greedy'" in w for w in warnings)
    assert any("'file:///docs/{+path}'" in w and "'root'" in w for w in warnings)
    assert not any("'notes://{id}'" in w and "file:///" in w for w in warnings)


def test_a_listed_resource_beats_any_template() -> None:
    cat = catalog.build(
        [
            listing("tpl", templates=(item(uriTemplate="file:///docs/{name}", name="t"),)),
            listing("exact", resources=(item(uri="file:///docs/special", name="s"),)),
        ],
        "_",
    )
    assert _owner(cat, "file:///docs/special") == "exact"
    assert _owner(cat, "file:///docs/plain") == "tpl"


def test_equally_specific_templates_go_to_the_first_backend(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cat = catalog.build(
        [
            listing("a", templates=(item(uriTemplate="x://{a}.txt", name="a"),)),
            listing("b", templates=(item(uriTemplate="x://{b}.txt", name="b"),)),
            listing("c", templates=(item(uriTemplate="x://{c}.png", name="c"),)),
        ],
        "_",
    )
    assert _owner(cat, "x://1.txt") == "a"
    assert _owner(cat, "x://1.png") == "c"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "'x://{a}.txt'" in warnings[0] and "'x://{b}.txt'" in warnings[0]


def test_templates_of_one_backend_may_overlap_quietly(caplog: pytest.LogCaptureFixture) -> None:
    catalog.build(
        [listing("a", templates=(item(uriTemplate="y://{+p}"), item(uriTemplate="y://{p}")))],
        "_",
    )
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_views_keep_the_specificity_order() -> None:
    from switchyard.routing.views import Selector, ViewSpec, build_view

    full = catalog.build(
        [
            listing("greedy", templates=(item(uriTemplate="{+anything}", name="g"),)),
            listing("notes", templates=(item(uriTemplate="notes://{id}", name="n"),)),
        ],
        "_",
    )
    view = build_view(full, ViewSpec("v", (Selector.build(catalog.TEMPLATES, ["*"], ["*"]),)))
    assert _owner(view, "notes://7") == "notes"


def test_duplicate_uri_across_backends_goes_to_the_first() -> None:
    cat = catalog.build(
        [
            listing("a", resources=(item(uri="file:///same", name="from-a"),)),
            listing("b", resources=(item(uri="file:///same", name="from-b"),)),
            listing("c", templates=(item(uriTemplate="t://{x}", name="c"),)),
            listing("d", templates=(item(uriTemplate="t://{x}", name="d"),)),
        ],
        "_",
    )
    [res] = cat.entries[catalog.RESOURCES]
    assert res.backend == "a"
    assert json.loads(res.item)["name"] == "from-a"
    assert cat.resource_owner("file:///same").backend == "a"  # type: ignore[union-attr]
    [tpl] = cat.entries[catalog.TEMPLATES]
    assert tpl.backend == "c"
    assert cat.resource_owner("t://v").backend == "c"  # type: ignore[union-attr]


def test_resource_repeated_by_the_same_backend_is_listed_once() -> None:
    r = item(uri="file:///x", name="x")
    cat = catalog.build([listing("a", resources=(r, r))], "_")
    assert len(cat.entries[catalog.RESOURCES]) == 1


def test_resource_with_non_string_uri_is_hidden() -> None:
    cat = catalog.build([listing("a", resources=(item(uri=5), item(uri="u://ok")))], "_")
    assert publics(cat, catalog.RESOURCES) == ["u://ok"]


# -- exact lookup: no folding, no normalization --------------------------------------------

_NAMES = ["search", "gh_create_issue", "Fetch", "get-URL", "a1_b2", "x.y.z", "K"]
_CATALOG = catalog.build(
    [
        listing("gh", tools=tuple(tool(n) for n in _NAMES), prompts=(item(name="Greet"),)),
        listing("bare", "", tools=tuple(tool(n) for n in _NAMES)),
    ],
    "_",
)
_PUBLIC = sorted({e.public for k in (catalog.TOOLS, catalog.PROMPTS) for e in _CATALOG.entries[k]})
_INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u0301"]
_HOMOGLYPH = {
    "a": "\u0430",
    "e": "\u0435",
    "o": "\u043e",
    "c": "\u0441",
    "K": "\u212a",
    "s": "\u0455",
}


@st.composite
def variants(draw: st.DrawFn) -> str:
    chars = list(draw(st.sampled_from(_PUBLIC)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["case", "fullwidth", "insert", "homoglyph", "space", "nf"]))
        i = draw(st.integers(0, len(chars) - 1))
        if op == "case":
            chars[i] = chars[i].swapcase()
        elif op == "fullwidth" and "!" <= chars[i] <= "~":
            chars[i] = chr(ord(chars[i]) + 0xFEE0)
        elif op == "insert":
            chars.insert(i, draw(st.sampled_from(_INVISIBLE)))
        elif op == "homoglyph":
            chars[i] = _HOMOGLYPH.get(chars[i], chars[i])
        elif op == "space":
            chars.insert(draw(st.sampled_from([0, len(chars)])), " ")
        elif op == "nf":
            form = draw(st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"]))
            chars = list(unicodedata.normalize(form, "".join(chars)))
    return "".join(chars)


@settings(max_examples=300, deadline=None)
@given(name=variants() | st.text(max_size=20))
def test_lookup_is_exact_no_case_folding_or_normalization(name: str) -> None:
    assume(name not in _PUBLIC)
    for kind in (catalog.TOOLS, catalog.PROMPTS):
        assert _CATALOG.lookup(kind, name) is None


def test_lookup_distinguishes_case() -> None:
    assert _CATALOG.lookup(catalog.TOOLS, "Fetch") is not None
    assert _CATALOG.lookup(catalog.TOOLS, "fetch") is None
    assert _CATALOG.lookup(catalog.TOOLS, "FETCH") is None
    assert _CATALOG.lookup(catalog.TOOLS, "K") is not None
    assert _CATALOG.lookup(catalog.TOOLS, "\u212a") is None  # KELVIN SIGN, NFKC -> K
