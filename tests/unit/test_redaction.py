"""The redaction engine on its own: actions, rule selection, the token vault, outbound
notifications, output schemas, and the linear-time guarantee for operators' patterns."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from switchyard.call import Identity
from switchyard.config.redaction import compile_redaction
from switchyard.config.schema import RedactionConfig
from switchyard.redaction.custom import PatternError, custom_detector
from switchyard.redaction.engine import Blocked, Redactor, Withheld
from switchyard.redaction.output_schema import changed_violation, first_violation
from switchyard.redaction.rules import Direction
from switchyard.redaction.vault import TokenVault

KEY = "unit-test-redaction-key"
ALICE = Identity("alice", roles=("staff",))
BOB = Identity("bob", roles=("contractor",))
CARD = "4111 1111 1111 1111"
EMAIL = "ada.lovelace@example.com"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEK1"


def engine(*rules: dict[str, Any], **section: Any) -> Redactor:
    config = RedactionConfig.model_validate({"key": KEY, "rules": list(rules), **section})
    built = compile_redaction(config, "api_key", lambda value, where: value, ValueError)
    assert built is not None
    return built


def result(r: Redactor, body: dict[str, Any], who: Identity | None = ALICE, **kw: Any) -> Any:
    out = r.redact_result(
        kw.get("method", "tools/call"),
        who,
        kw.get("view"),
        kw.get("backend", "crm"),
        kw.get("name", "lookup"),
        json.dumps(body).encode(),
        kw.get("tool"),
    )
    return out if out is None or isinstance(out, Withheld) else json.loads(out)


def text_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


# -- actions --------------------------------------------------------------------------------


def test_mask_keeps_the_shape() -> None:
    r = engine({"name": "m", "detectors": ["*"], "action": "mask"})
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----"
    out = result(r, text_result(f"card {CARD}, mail {EMAIL}, ssn 536-90-4399\n{pem}"))
    assert out["content"][0]["text"] == (
        "card **** **** **** 1111, mail a***********@example.com, ssn ***-**-4399\n"
        "-----BEGIN RSA PRIVATE KEY-----\n**************\n-----END RSA PRIVATE KEY-----"
    )


def test_hash_is_keyed_stable_and_the_same_for_every_caller() -> None:
    r = engine({"name": "h", "detectors": ["email"], "action": "hash"})
    a = result(r, text_result(EMAIL))["content"][0]["text"]
    b = result(r, text_result(EMAIL), who=BOB)["content"][0]["text"]
    other_key = engine({"name": "h", "detectors": ["email"], "action": "hash"}, key="x" * 16)
    c = result(other_key, text_result(EMAIL))["content"][0]["text"]
    assert a == b != c
    assert a.startswith("«hash:email:") and EMAIL not in a


def test_tokenize_round_trips_for_its_owner_only() -> None:
    r = engine({"name": "t", "detectors": ["email"], "action": "tokenize"})
    token_a = result(r, text_result(EMAIL))["content"][0]["text"]
    token_b = result(r, text_result(EMAIL), who=BOB)["content"][0]["text"]
    assert token_a != token_b
    args = json.dumps({"to": token_a, "list": [token_a, 3], "n": 1.5}).encode()
    mine = r.redact_arguments(ALICE, None, "crm", "send", args)
    assert mine is not None and json.loads(mine) == {"to": EMAIL, "list": [EMAIL, 3], "n": 1.5}
    # Bob holds a token table of his own, but not alice's token: nothing changes.
    assert r.redact_arguments(BOB, None, "crm", "send", args) is None


def test_arguments_are_judged_before_tokens_resolve() -> None:
    r = engine(
        {"name": "t", "detectors": ["email"], "action": "tokenize", "directions": ["results"]},
        {"name": "no-mail-out", "detectors": ["email"], "action": "block",
         "directions": ["arguments"]},
    )  # fmt: skip
    token = result(r, text_result(EMAIL))["content"][0]["text"]
    ok = r.redact_arguments(ALICE, None, "crm", "send", json.dumps({"to": token}).encode())
    assert ok is not None and json.loads(ok) == {"to": EMAIL}
    with pytest.raises(Blocked) as info:
        r.redact_arguments(ALICE, None, "crm", "send", json.dumps({"to": EMAIL}).encode())
    assert (info.value.rule, info.value.detector) == ("no-mail-out", "email")
    assert EMAIL not in str(info.value)


def test_block_never_carries_the_value() -> None:
    r = engine({"name": "no-keys", "detectors": ["aws_secret_access_key"], "action": "block"})
    with pytest.raises(Blocked) as info:
        result(r, {"structuredContent": {"aws_secret_access_key": AWS_SECRET}})
    assert str(info.value) == ("redaction rule 'no-keys' blocks aws_secret_access_key in results")


def test_numbers_and_structural_fields_are_left_alone() -> None:
    r = engine({"name": "m", "detectors": ["*"], "action": "mask"})
    body = {
        "content": [
            {"type": "image", "data": "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=", "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": f"mailto:{EMAIL}", "text": EMAIL}},
        ],
        "structuredContent": {"amount": 4111111111111111, "ok": True, "items": [1, None]},
        "resultType": "complete",
    }
    out = result(r, body)
    assert out["content"][0] == body["content"][0]
    assert out["content"][1]["resource"] == {
        "uri": f"mailto:{EMAIL}",
        "text": "a***********@example.com",
    }
    assert out["structuredContent"] == body["structuredContent"]


def test_a_key_names_what_a_bare_value_is() -> None:
    r = engine({"name": "m", "detectors": ["*"], "action": "mask"})
    out = result(r, {"structuredContent": {"aws_secret_access_key": AWS_SECRET, "ssn": "536904399",
                                           "other": AWS_SECRET, "count": "536904399"}})  # fmt: skip
    assert out["structuredContent"] == {
        "aws_secret_access_key": "*" * 40,  # key material keeps not even its `/`
        "ssn": "*****4399",
        "other": AWS_SECRET,
        "count": "536904399",
    }


def test_strip_keys_drops_metadata_but_never_the_message_itself() -> None:
    r = engine({"name": "meta", "strip_keys": ["_meta", "debug*", "content"]})
    body = {
        "content": [{"type": "text", "text": "x", "_meta": {"a": 1}}],
        "_meta": {"trace": "t"},
        "structuredContent": {"debug_sql": "q", "v": 1},
    }
    out = result(r, body)
    assert out == {"content": [{"type": "text", "text": "x"}], "structuredContent": {"v": 1}}


# -- selection ------------------------------------------------------------------------------


def test_the_first_rule_naming_a_detector_decides() -> None:
    r = engine(
        {"name": "contractors", "detectors": ["email"], "action": "block", "roles": ["contractor"]},
        {"name": "everyone", "detectors": ["email"], "action": "mask"},
    )
    assert result(r, text_result(EMAIL))["content"][0]["text"] == "a***********@example.com"
    with pytest.raises(Blocked):
        result(r, text_result(EMAIL), who=BOB)
    # Without authentication nobody has a role: the role-scoped rule does not apply.
    assert result(r, text_result(EMAIL), who=None)["content"][0]["text"].startswith("a***")


def test_selectors_by_backend_name_view_and_direction() -> None:
    r = engine(
        {
            "name": "crm-only",
            "detectors": ["email"],
            "backends": ["crm"],
            "names": ["lookup_*"],
            "views": ["support"],
            "directions": ["results"],
        }
    )
    body = text_result(EMAIL)
    assert result(r, body, name="lookup_customer", view="support") != body
    assert result(r, body, name="lookup_customer", view="support", backend="hr") is None
    assert result(r, body, name="delete", view="support") is None
    assert result(r, body, name="lookup_customer", view="sales") is None
    # A task's result names no tool: a `names` selector cannot rule it out.
    assert result(r, body, name=None, view="support", method="tasks/result") != body
    assert (
        r.redact_arguments(ALICE, "support", "crm", "lookup_x", json.dumps(body).encode()) is None
    )


# -- notifications --------------------------------------------------------------------------


def test_progress_messages_and_log_data_are_redacted() -> None:
    r = engine({"name": "m", "detectors": ["email", "payment_card"], "action": "mask"})
    progress = json.dumps(
        {"progressToken": EMAIL, "progress": 1, "total": 2, "message": f"mailing {EMAIL}"}
    ).encode()
    out = r.redact_notification(ALICE, "crm", "notifications/progress", progress)
    assert out is not None and json.loads(out) == {
        "progressToken": EMAIL,  # the client's own correlation token: never rewritten
        "progress": 1,
        "total": 2,
        "message": "mailing a***********@example.com",
    }
    log = json.dumps(
        {"level": "info", "logger": "billing", "data": {"charged": [CARD], "n": 3}}
    ).encode()
    out = r.redact_notification(ALICE, "crm", "notifications/message", log)
    assert out is not None and json.loads(out) == {
        "level": "info",
        "logger": "billing",
        "data": {"charged": ["**** **** **** 1111"], "n": 3},
    }


def test_a_notification_nothing_applies_to_passes_as_is() -> None:
    r = engine({"name": "m", "detectors": ["email"], "directions": ["results"]})
    params = json.dumps({"level": "info", "data": EMAIL}).encode()
    assert r.redact_notification(ALICE, "crm", "notifications/message", params) is params
    clean = json.dumps({"level": "info", "data": "nothing here"}).encode()
    r2 = engine({"name": "m", "detectors": ["email"]})
    assert r2.redact_notification(ALICE, "crm", "notifications/message", clean) is clean


def test_a_blocked_notification_is_dropped_for_that_caller_only() -> None:
    r = engine({"name": "no-cards-for-contractors", "detectors": ["payment_card"],
                "action": "block", "roles": ["contractor"]})  # fmt: skip
    params = json.dumps({"level": "info", "data": f"paid with {CARD}"}).encode()
    assert r.redact_notification(BOB, "crm", "notifications/message", params) is None
    assert r.redact_notification(ALICE, "crm", "notifications/message", params) is params
    assert r.applied[("no-cards-for-contractors", "payment_card", "notifications")] == 1


def test_a_notification_that_cannot_be_read_is_dropped_not_passed_on_unread() -> None:
    # Frames are decoded whole at the wire, so this takes a caller bypassing it; the engine
    # still never hands on what it could not scan.
    r = engine({"name": "m", "detectors": ["email"], "action": "mask"})
    unreadable = b'{"level":"info","data":"' + EMAIL.encode() + b' \xff"}'
    assert r.redact_notification(ALICE, "crm", "notifications/message", unreadable) is None


def test_a_notification_can_carry_tokens_its_owner_resolves_later() -> None:
    r = engine({"name": "t", "detectors": ["email"], "action": "tokenize"})
    out = r.redact_notification(
        ALICE, "crm", "notifications/progress",
        json.dumps({"progressToken": 1, "progress": 1, "message": EMAIL}).encode(),
    )  # fmt: skip
    assert out is not None
    token = json.loads(out)["message"]
    args = r.redact_arguments(ALICE, None, "crm", "x", json.dumps({"a": token}).encode())
    assert args is not None and json.loads(args) == {"a": EMAIL}
    assert r.redact_arguments(BOB, None, "crm", "x", json.dumps({"a": token}).encode()) is None


# -- output schemas -------------------------------------------------------------------------

TOOL = json.dumps(
    {
        "name": "lookup",
        "inputSchema": {"type": "object"},
        "outputSchema": {
            "type": "object",
            "properties": {
                "card": {"type": "string", "pattern": "^[0-9 ]{19}$"},
                "email": {"type": "string", "format": "email"},
                "note": {"type": "string", "maxLength": 40},
                "internal": {"type": "string"},
            },
            "required": ["card", "email", "internal"],
        },
    }
).encode()


def test_a_format_keeping_mask_keeps_the_result() -> None:
    r = engine({"name": "emails", "detectors": ["email"], "action": "mask"})
    body = {"structuredContent": {"card": CARD, "email": EMAIL, "internal": "x"}}
    out = result(r, body, tool=TOOL)
    assert out["structuredContent"]["email"] == "a***********@example.com"


def test_a_replacement_breaking_a_constraint_withholds_the_result() -> None:
    r = engine({"name": "cards", "detectors": ["payment_card"], "action": "mask"})
    body = {"structuredContent": {"card": CARD, "email": EMAIL, "internal": "x"}}
    assert result(r, body, tool=TOOL) == Withheld("cards", "payment_card", "/card")
    long_note = {**body["structuredContent"], "card": "0" * 19, "note": EMAIL}
    hashing = engine({"name": "h", "detectors": ["email"], "action": "hash"})
    assert result(hashing, {"structuredContent": long_note}, tool=TOOL) == Withheld(
        "h", "email", "/email"
    )


def test_stripping_a_required_key_withholds_the_result() -> None:
    r = engine({"name": "drop-internal", "strip_keys": ["internal"]})
    body = {"structuredContent": {"card": "0" * 19, "email": EMAIL, "internal": "x"}}
    assert result(r, body, tool=TOOL) == Withheld("drop-internal", "", "/")


def test_a_result_that_never_conformed_is_not_withheld_for_it() -> None:
    r = engine({"name": "cards", "detectors": ["payment_card"], "action": "mask"})
    body = {"structuredContent": {"card": CARD, "email": EMAIL}}  # `internal` missing already
    out = result(r, body, tool=TOOL)
    assert out["structuredContent"]["card"] == "**** **** **** 1111"


def test_an_error_result_is_not_held_to_the_schema() -> None:
    r = engine({"name": "cards", "detectors": ["payment_card"], "action": "mask"})
    body = {"structuredContent": {"card": CARD, "email": EMAIL, "internal": "x"}, "isError": True}
    assert result(r, body, tool=TOOL)["isError"] is True


# -- the vault ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tokens_expire() -> None:
    clock = Clock()
    vault = TokenVault(b"k" * 32, ttl_s=10, clock=clock)
    token = vault.tokenize("alice", "email", EMAIL)
    clock.now = 9.0
    assert vault.resolve("alice", token) == (EMAIL, 1)
    clock.now = 10.0
    assert vault.resolve("alice", token) == (token, 0)


def test_a_principal_at_its_bound_loses_its_own_oldest() -> None:
    vault = TokenVault(b"k" * 32, per_principal=3, total=100)
    bobs = vault.tokenize("bob", "email", "b@example.com")
    alices = [vault.tokenize("alice", "email", f"a{i}@example.com") for i in range(5)]
    assert vault.held_by("alice") == 3
    assert vault.resolve("alice", alices[0]) == (alices[0], 0)
    assert vault.resolve("alice", alices[4]) == ("a4@example.com", 1)
    assert vault.resolve("bob", bobs) == ("b@example.com", 1)


def test_at_the_total_bound_the_largest_holder_gives_way() -> None:
    vault = TokenVault(b"k" * 32, per_principal=100, total=6)
    bobs = [vault.tokenize("bob", "email", f"b{i}@example.com") for i in range(2)]
    for i in range(10):
        vault.tokenize("alice", "email", f"a{i}@example.com")
    assert len(vault) == 6
    assert vault.held_by("alice") == 4
    assert [vault.resolve("bob", t)[1] for t in bobs] == [1, 1]


# -- operators' patterns --------------------------------------------------------------------


def test_a_custom_pattern_redacts_its_value_group() -> None:
    r = engine(
        {"name": "orders", "detectors": ["order_secret"], "action": "mask"},
        patterns={"order_secret": {"regex": r"order-secret: (?P<value>[A-Z0-9]{8})"}},
    )
    out = result(r, text_result("order-secret: AB12CD34 shipped"))
    assert out["content"][0]["text"] == "order-secret: ******** shipped"


@pytest.mark.parametrize("pattern", [r"(a)\1", r"foo(?=bar)", r"(?<!x)y"])
def test_patterns_re2_cannot_run_in_linear_time_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        custom_detector("p", pattern)


def test_catastrophic_backtracking_patterns_run_in_linear_time() -> None:
    """`(a+)+$` against a megabyte of `a`s and a final `b`: stdlib `re` needs time exponential
    in the length (it never finishes); RE2 scans once. Run in a child process so a regression
    is a bounded failure, not a hung suite."""
    script = textwrap.dedent(
        """
        import json
        from switchyard.redaction.custom import custom_detector
        from switchyard.redaction.output_schema import changed_violation, first_violation
        from switchyard.redaction.scanner import Scanner
        text = "a" * 1_000_000 + "b"
        evil = [custom_detector("evil", "(a+)+$"), custom_detector("e2", "(x*)*y")]
        found = Scanner(evil).find(text)
        schema = {"type": "string", "pattern": "^(a|aa)+$"}
        print(json.dumps([len(found), first_violation(b"s", schema, text)]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [0, "/"]


def test_a_backends_schema_pattern_runs_on_re2_too() -> None:
    schema = {"type": "object", "properties": {"v": {"type": "string", "pattern": "^(a+)+$"}}}
    assert first_violation(b"t1", schema, {"v": "a" * 64 + "!"}) == "/v"
    assert first_violation(b"t1", schema, {"v": "aaa"}) is None


_STRING_SCHEMAS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["string", "integer", ["string", "null"], ["null"]]),
        "format": st.sampled_from(["email", "uuid", "date", "ipv4", "no-such-format"]),
        "pattern": st.sampled_from(["^[0-9 ]+$", "@", "^a", "x{2}"]),
        "minLength": st.integers(0, 12),
        "maxLength": st.integers(0, 12),
        "enum": st.lists(st.sampled_from(["a", "b@c.de", "1", 1, None]), min_size=1),
        "const": st.sampled_from(["a", "b@c.de", 1]),
        "description": st.just("d"),
    },
)


@settings(max_examples=400, deadline=None)
@given(
    sub=_STRING_SCHEMAS,
    value=st.one_of(
        st.text(max_size=14),
        st.sampled_from(["a", "b@c.de", "1", "2026-12-02", "10.0.0.1", "x*****@example.com"]),
    ),
)
def test_the_quick_string_check_judges_a_replaced_value_as_the_validator_does(
    sub: dict[str, Any], value: str
) -> None:
    # A replaced leaf under a plain string subschema is judged without a validator; it must
    # reach the validator's verdict for every combination of the keywords it handles.
    schema = {"type": "object", "properties": {"v": sub}}
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    expected = "/v" if not validator.is_valid({"v": value}) else None
    schema_json = json.dumps(schema).encode()
    assert changed_violation(schema_json, schema, {"v": value}, ["/v"]) == expected


# -- text blocks that render the structuredContent ------------------------------------------


def _customers(n: int) -> dict[str, Any]:
    return {
        "customers": [
            {
                "id": f"c-{i:04d}",
                "email": f"user.{i}@example.com",
                "note": f"call +44 20 7946 0{100 + i} or pay with {CARD}" if i % 3 == 0 else "ok",
                "name": "Zoë Ångström" if i % 5 == 0 else f"User {i}",
                "score": i * 1.5,
            }
            for i in range(n)
        ]
    }


RENDERINGS = {
    "python sdk (indent 2, non-ascii as is)": lambda v: json.dumps(v, indent=2, ensure_ascii=False),
    "json.dumps default": json.dumps,
    "JSON.stringify compact": lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False),
}


@pytest.mark.parametrize("render", RENDERINGS.values(), ids=list(RENDERINGS))
def test_a_text_rendering_of_the_structure_is_redacted_exactly_as_scanning_it_would(
    render: Any,
) -> None:
    r = engine({"name": "all", "detectors": ["*"], "action": "mask"})
    structured = _customers(20)
    text = render(structured)
    plan = r.plan(Direction.RESULTS, ALICE, None, "crm", "lookup")
    assert plan is not None
    scanned_texts: list[str] = []
    find_many = plan.scanner.find_many

    def spy(texts: Any, keys: Any) -> Any:
        scanned_texts.extend(texts)
        return find_many(texts, keys)

    plan.scanner.find_many = spy  # type: ignore[method-assign]
    mirrored = result(
        r, {"content": [{"type": "text", "text": text}], "structuredContent": structured}
    )
    # The rendering was not scanned a second time: it was rendered from the redacted copy.
    assert text not in scanned_texts and "user.3@example.com" in scanned_texts
    # A trailing space makes the text no exact rendering, so it is scanned as any text is.
    scanned = result(
        r, {"content": [{"type": "text", "text": text + " "}], "structuredContent": structured}
    )
    assert mirrored["content"][0]["text"] == scanned["content"][0]["text"][:-1]
    assert mirrored["content"][0]["text"] == render(mirrored["structuredContent"])
    assert mirrored["structuredContent"] == scanned["structuredContent"]
    assert "user.3@example.com" not in mirrored["content"][0]["text"] and CARD not in json.dumps(
        mirrored
    )
    # Each value is counted where it was replaced: in the structure and in its rendering.
    assert r.applied[("all", "email", "results")] == 2 * 2 * 20


def test_a_value_in_a_key_of_the_structure_leaves_its_rendering_to_be_scanned() -> None:
    r = engine({"name": "all", "detectors": ["email"], "action": "mask"})
    structured = {"by_mail": {EMAIL: {"orders": 3}}, "pad": ["x" * 40] * 20}
    text = json.dumps(structured)
    out = result(r, {"content": [{"type": "text", "text": text}], "structuredContent": structured})
    # Keys are never rewritten in the structure, but the text must not carry the address.
    assert EMAIL not in out["content"][0]["text"]
    assert out["structuredContent"] == structured


def test_a_custom_pattern_scans_the_rendering_itself() -> None:
    # An operator's pattern may match the JSON syntax of the text ("key": "value").
    r = engine(
        {"name": "c", "detectors": ["ticket"], "action": "mask"},
        patterns={"ticket": {"regex": r'"ticket": "(?P<value>T-\d+)"'}},
    )
    structured = {"ticket": "T-12345", "pad": ["y" * 40] * 20}
    text = json.dumps(structured)
    out = result(r, {"content": [{"type": "text", "text": text}], "structuredContent": structured})
    assert "T-12345" not in out["content"][0]["text"]
