"""Access rules: exact, case-sensitive matching; deny beats allow; nothing without an allow."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.policies.access import AccessRules, Rule
from switchyard.policies.base import Identity
from switchyard.routing import catalog
from switchyard.routing.catalog import Entry, Listing
from switchyard.wire import frame

SECRET = "secret_tool"
READER = Identity("alice", ("reader",))
ADMIN = Identity("root", ("admin",))
RULES = AccessRules(
    (
        Rule.build(True, None, ["reader"], ["*"], ["*"], ["tools"]),
        Rule.build(False, None, ["reader"], ["*"], [SECRET], ["tools"]),
        Rule.build(True, ["root"], None, ["*"], ["*"], ["tools"]),
    )
)


def _entry(name: str, backend: str = "b") -> Entry:
    return Entry("tools", f"{backend}_{name}", backend, name, b"{}")


def test_deny_beats_allow_and_nothing_is_allowed_by_default() -> None:
    assert RULES.allows(READER, _entry("open_tool"))
    assert not RULES.allows(READER, _entry(SECRET))
    assert RULES.allows(ADMIN, _entry(SECRET))
    assert not RULES.allows(Identity("mallory", ("guest",)), _entry("open_tool"))
    assert not AccessRules(()).allows(ADMIN, _entry("open_tool"))


def test_rules_match_kinds_backends_and_principals_exactly() -> None:
    rules = AccessRules((Rule.build(True, ["ali*"], None, ["clock"], ["now"], ["tools"]),))
    assert rules.allows(READER, _entry("now", "clock"))
    assert not rules.allows(READER, _entry("now", "Clock"))
    assert not rules.allows(READER, _entry("Now", "clock"))
    assert not rules.allows(Identity("bob"), _entry("now", "clock"))
    prompt = Entry("prompts", "clock_now", "clock", "now", b"{}")
    assert not rules.allows(READER, prompt)


CATALOG = catalog.build(
    [
        Listing(
            "b",
            "b",
            {
                "tools": tuple(
                    frame.decode_object(frame.encode({"name": n})) for n in (SECRET, "open_tool")
                )
            },
        )
    ],
    "_",
)
variants = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "b_SECRET_TOOL",
            "B_secret_tool",
            "b_secret_tooL",
            "b_secret\u200b_tool",
            "b_secret_tool\u0000",
            "b_\uff53ecret_tool",  # fullwidth s
            "b_secret_tool ",
            " b_secret_tool",
            "b_se\u0301cret_tool",
        ]
    ),
)


@settings(max_examples=500)
@given(name=variants)
def test_no_variant_of_a_denied_name_reaches_it(name: str) -> None:
    entry = CATALOG.lookup("tools", name)
    if entry is None or not RULES.allows(READER, entry):
        return
    # Whatever a reader can reach by name, it is never the denied tool.
    assert entry.original != SECRET
    assert name == entry.public
