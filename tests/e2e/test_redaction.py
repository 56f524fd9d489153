"""Redaction end to end: a backend returning personal data and credentials, the official SDK
client on the other side, and two principals at once. Each action's exact client-visible
outcome; nothing detected ever reaches a client or a log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import secrets
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import phonenumbers
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from stdnum import iban as std_iban
from stdnum import luhn

from switchyard.protocol import codes
from tests.harness import FIXTURES, PYTHON, Gateway, create_key, register_secret, start_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

REDACTION_KEY = "redaction-test-key-" + secrets.token_hex(8)


def _values() -> dict[str, str]:
    rng = random.Random(secrets.randbits(64))
    body = "4" + "".join(rng.choice(string.digits) for _ in range(14))
    card = body + luhn.calc_check_digit(body)
    while True:
        phone = f"+44 20 7946 0{rng.randrange(1000):03d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(phone)):
            break
    account = "".join(rng.choice(string.digits) for _ in range(10))
    bban = "37040044" + account
    iban = "DE" + std_iban.calc_check_digits("DE00" + bban) + bban
    return {
        "SECRET_EMAIL": f"ada.{secrets.token_hex(4)}@example.com",
        "SECRET_PHONE": phone,
        "SECRET_CARD": " ".join(card[i : i + 4] for i in range(0, 16, 4)),
        "SECRET_IBAN": iban,
        "SECRET_AWS_KEY": "AKIA"
        + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
    }


def registered_values() -> dict[str, str]:
    """Fresh secret values for the fixture backend, each registered for the suite's log scan
    (as written and without spaces)."""
    values = _values()
    for value in values.values():
        register_secret(value)
        register_secret(value.replace(" ", ""))
    return values


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("redaction")
    data = tmp / "keys"
    values = registered_values()
    config = {
        "auth": {
            "enabled": True,
            "data_dir": str(data),
            "rules": [{"effect": "allow", "principals": ["alice", "bob"]}],
        },
        "servers": {
            "vault": {
                "command": PYTHON,
                "args": [str(FIXTURES / "secrets_stdio.py")],
                "env": values,
            }
        },
        "redaction": {
            "key": REDACTION_KEY,
            "rules": [
                {"name": "no-cloud-keys", "detectors": ["aws_*"], "action": "block",
                 "directions": ["results"]},
                {"name": "no-cards-in", "detectors": ["payment_card"], "action": "block",
                 "directions": ["arguments"]},
                {"name": "cards", "detectors": ["payment_card"], "action": "mask"},
                {"name": "emails", "detectors": ["email"], "action": "tokenize"},
                {"name": "phones", "detectors": ["phone"], "action": "hash"},
                {"name": "ibans", "detectors": ["iban"], "action": "mask"},
                {"name": "vendor-meta", "strip_keys": ["_meta", "debug_*"],
                 "directions": ["results"], "names": ["with_meta"]},
            ],
        },
    }  # fmt: skip
    keys = {who: create_key(data, who, "user") for who in ("alice", "bob")}
    gw = start_gateway(config, tmp)
    try:
        gw.wait_backend("vault")
        yield {"gw": gw, "keys": keys, "values": values}
    finally:
        gw.stop()


def _client(setup: dict[str, Any], who: str) -> Client:
    gw: Gateway = setup["gw"]
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {setup['keys'][who]}"})
    return Client(streamable_http_client(gw.url, http_client=http))  # type: ignore[arg-type]


def _token(who: str, detector: str, value: str) -> str:
    principal = f"api_key#{who}"
    digest = hmac.new(
        REDACTION_KEY.encode(), f"{principal}\0{value}".encode(), hashlib.sha256
    ).hexdigest()[:20]
    return f"«tok:{detector}:{digest}»"


def _hash(detector: str, value: str) -> str:
    digest = hmac.new(
        REDACTION_KEY.encode(), f"{detector}\0{value}".encode(), hashlib.sha256
    ).hexdigest()[:16]
    return f"«hash:{detector}:{digest}»"


def _masked_card(card: str) -> str:
    return "**** **** **** " + card[-4:]


def _masked_iban(iban: str) -> str:
    return iban[:2] + "*" * (len(iban) - 6) + iban[-4:]


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def _assert_clean(setup: dict[str, Any], seen: str) -> None:
    for value in setup["values"].values():
        for form in {value, value.replace(" ", "")}:
            assert form not in seen


async def test_mask_hash_and_tokenize_a_structured_result_for_two_callers(
    setup: dict[str, Any],
) -> None:
    v = setup["values"]

    async def profile(who: str) -> Any:
        async with _client(setup, who) as client:
            return await client.call_tool("vault_profile", {})

    alice, bob = await asyncio.gather(profile("alice"), profile("bob"))
    for who, result in (("alice", alice), ("bob", bob)):
        assert result.is_error is False
        # The SDK client has already validated this against the tool's outputSchema.
        assert result.structured_content == {
            "name": "Ada",
            "email": _token(who, "email", v["SECRET_EMAIL"]),
            "phone": _hash("phone", v["SECRET_PHONE"]),
            "card": _masked_card(v["SECRET_CARD"]),
            "note": f"refund to {_masked_iban(v['SECRET_IBAN'])}",
        }
        assert json.loads(_text(result)) == result.structured_content
        _assert_clean(setup, _text(result) + json.dumps(result.structured_content))
    # A hash is the same for everyone; a token is its principal's own.
    assert alice.structured_content["phone"] == bob.structured_content["phone"]
    assert alice.structured_content["email"] != bob.structured_content["email"]


def _digest(text: str, extra: dict[str, Any]) -> str:
    canonical = json.dumps({"text": text, "extra": extra}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def test_a_token_resolves_only_in_its_own_callers_arguments(setup: dict[str, Any]) -> None:
    """What reached the backend, seen through a digest no rule rewrites: the owner's token
    became the address again, everywhere in its arguments; the other caller's stayed text."""
    email = setup["values"]["SECRET_EMAIL"]
    async with _client(setup, "alice") as alice, _client(setup, "bob") as bob:
        token = (await alice.call_tool("vault_profile", {})).structured_content["email"]
        await bob.call_tool("vault_profile", {})  # bob holds tokens of his own
        assert token == _token("alice", "email", email)

        def sent(value: str) -> dict[str, Any]:
            return {"text": f"write to {value}", "extra": {"cc": [value], "n": 7}}

        # The same token in both callers' arguments at the same time.
        mine, theirs = await asyncio.gather(
            alice.call_tool("vault_digest", sent(token)),
            bob.call_tool("vault_digest", sent(token)),
        )
        # The echo of a resolved address comes back tokenized again, for its owner.
        echoed = await alice.call_tool("vault_echo", sent(token))
    assert _text(mine) == _digest(**sent(email))
    assert _text(theirs) == _digest(**sent(token))
    assert json.loads(_text(echoed)) == sent(token)
    assert email not in setup["gw"].log_text()


async def test_block_refuses_a_result_naming_the_rule_never_the_value(
    setup: dict[str, Any],
) -> None:
    async with _client(setup, "alice") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("vault_leak", {})
    error = info.value.error
    assert error.code == codes.REDACTION_BLOCKED
    assert error.message == (
        "redaction rule 'no-cloud-keys' refused the result: it holds aws_access_key_id"
    )
    assert error.data == {
        "source": "gateway",
        "backend": "vault",
        "rule": "no-cloud-keys",
        "detector": "aws_access_key_id",
        "direction": "results",
    }
    _assert_clean(setup, json.dumps(error.model_dump()))
    assert setup["values"]["SECRET_AWS_KEY"] not in setup["gw"].log_text()


async def test_block_refuses_arguments_with_invalid_params(setup: dict[str, Any]) -> None:
    card = setup["values"]["SECRET_CARD"]
    async with _client(setup, "bob") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("vault_echo", {"text": f"charge {card} please"})
    error = info.value.error
    assert error.code == codes.INVALID_PARAMS
    assert error.message == (
        "Invalid params: redaction rule 'no-cards-in' refuses payment_card in arguments"
    )
    assert error.data["rule"] == "no-cards-in"
    _assert_clean(setup, json.dumps(error.model_dump()))


async def test_a_mask_that_would_break_the_output_schema_withholds_the_result(
    setup: dict[str, Any],
) -> None:
    async with _client(setup, "alice") as client:
        result = await client.call_tool("vault_strict_card", {})
    assert result.is_error is True
    assert result.structured_content is None
    assert _text(result) == (
        "Switchyard withheld this result: redaction rule 'cards' (payment_card) changed "
        "/card that the tool's output schema constrains."
    )


async def test_metadata_keys_are_stripped(setup: dict[str, Any]) -> None:
    async with _client(setup, "bob") as client:
        result = await client.call_tool("vault_with_meta", {})
    assert result.structured_content == {"status": "ok"}
    assert result.meta is None
    assert _text(result) == "ok"


async def test_the_log_holds_no_detected_value(setup: dict[str, Any]) -> None:
    async with _client(setup, "alice") as client:
        await client.call_tool("vault_profile", {})
        await client.call_tool("vault_chatter", {})
    gw: Gateway = setup["gw"]
    # The access records of those calls are there; no detected value is, whichever test ran.
    assert await gw.log_lines("vault_chatter")
    _assert_clean(setup, gw.log_text())


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from switchyard.config.load import ConfigError, compile_plan
    from switchyard.config.schema import SwitchyardConfig

    def problem(redaction: dict[str, Any]) -> str:
        config = SwitchyardConfig.model_validate({"redaction": redaction})
        with pytest.raises(ConfigError) as info:
            compile_plan(config, tmp_path)
        return str(info.value)

    assert problem({"rules": [{"name": "r", "detectors": ["emial"]}]}) == (
        "redaction.rules[0].detectors: 'emial' names no detector"
    )
    assert problem(
        {"patterns": {"ref": {"regex": r"(a)\1"}}, "rules": [{"name": "r", "detectors": ["ref"]}]}
    ).startswith("redaction.patterns.ref.regex: RE2 cannot compile it")
    assert problem({"key": "short", "rules": [{"name": "r", "detectors": ["email"]}]}) == (
        "redaction.key: at least 16 bytes"
    )


@pytest.mark.parametrize("mode", ["modern", "legacy"])
async def test_log_lines_and_progress_are_redacted_on_their_way_to_the_client(
    setup: dict[str, Any], mode: str
) -> None:
    """Notifications pass the same rules as results (through the gateway's one delivery
    gate): the card in a log line is masked, the e-mail in a progress message tokenized for
    the caller who receives it; in both client eras."""
    values = setup["values"]
    logs: list[Any] = []
    progress: list[str | None] = []

    async def on_log(params: Any) -> None:
        logs.append(params.data)

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    gw: Gateway = setup["gw"]
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {setup['keys']['alice']}"})
    transport = streamable_http_client(gw.url, http_client=http)  # type: ignore[arg-type]
    extra: dict[str, Any] = {"mode": "legacy"} if mode == "legacy" else {"log_level": "debug"}
    async with Client(transport, logging_callback=on_log, **extra) as session:
        if mode == "legacy":
            await session.set_logging_level("debug")
        result = await session.call_tool("vault_chatter", {}, progress_callback=on_progress)
    assert _text(result) == "done"
    assert logs == [f"charging card {_masked_card(values['SECRET_CARD'])}"]
    assert progress == [f"mailing {_token('alice', 'email', values['SECRET_EMAIL'])}"]
    _assert_clean(setup, json.dumps([logs, progress]))
