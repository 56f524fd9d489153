"""The `approvals:` section compiled, the rules' verdicts, the signed request state, and the
ticket store's single-use transitions on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from switchyard.call import Identity
from switchyard.config.approvals import arguments_digest
from switchyard.config.load import ConfigError, compile_plan
from switchyard.config.schema import SwitchyardConfig
from switchyard.policies import approval_state
from switchyard.policies.approval_state import ApprovalState, StateError
from switchyard.policies.approvals import Approvals
from switchyard.routing.catalog import Entry
from switchyard.routing.router import Route
from switchyard.storage.database import open_database
from switchyard.storage.tickets import Binding, TicketStore
from tests.databases import BACKENDS, storage_for

pytestmark = pytest.mark.anyio
SECRET = "s" * 32


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _approvals(section: dict[str, Any], tmp_path: Path, auth: bool = True) -> Approvals:
    config = SwitchyardConfig.model_validate(
        {
            "approvals": {"enabled": True, "secret": SECRET, **section},
            "auth": {"enabled": auth, "data_dir": str(tmp_path)},
        }
    )
    gate = compile_plan(config, tmp_path).gateway.approvals
    assert gate is not None
    return gate


def _route(name: str, item: dict[str, Any] | None = None, backend: str = "fx") -> Route:
    entry = Entry(
        "tools", f"{backend}_{name}", backend, name, json.dumps(item or {"name": name}).encode()
    )
    return Route("tools", backend, name, f"{backend}_{name}", entry)


ALICE = Identity("alice", ("dev",))
CAROL = Identity("carol", ("approver",))


def test_off_by_default_and_absent_from_the_chain(tmp_path: Path) -> None:
    plan = compile_plan(SwitchyardConfig.model_validate({}), tmp_path)
    assert plan.gateway.approvals is None
    assert all(spec.cls.__name__ != "Approval" for spec in plan.gateway.policies)


@pytest.mark.parametrize(
    ("section", "auth", "problem"),
    [
        ({"secret": None}, True, "approvals.secret: required"),
        ({"secret": "short"}, True, "at least 16 characters"),
        ({"rules": [{"name": "a", "approver": "sre"}]}, False, "needs authentication"),
        ({"default_approver": "sre", "default": "require"}, False, "needs authentication"),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, True, "names another rule too"),
        ({"rules": [{"name": "a", "arguments": {"x": {}}}]}, True, "set at least one condition"),
        ({"escalate_after": 5}, True, "set both or neither"),
    ],
)
def test_invalid_sections_name_the_key(
    section: dict[str, Any], auth: bool, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=problem):
        _approvals(section, tmp_path, auth)


def test_the_first_selecting_rule_decides_then_agent_mode_then_the_default(
    tmp_path: Path,
) -> None:
    gate = _approvals(
        {
            "default": "require",
            "default_approver": "ops",
            "auto_execute": ["fx_read_*"],
            "rules": [
                {"name": "auditors", "roles": ["auditor"], "action": "auto"},
                {"name": "money", "tools": ["pay"], "approver": "finance"},
                {"name": "wipe", "annotations": {"destructiveHint": True}, "tools": ["wipe*"]},
            ],
        },
        tmp_path,
    )
    judge = gate.settings.rules.judge
    assert judge(ALICE, None, _route("pay"), {}).rule == "money"
    assert judge(ALICE, None, _route("pay"), {}).approver == "finance"
    auditor = Identity("eve", ("auditor",))
    assert not judge(auditor, None, _route("pay"), {}).require
    assert not judge(ALICE, None, _route("read_file"), {}).require
    default = judge(ALICE, None, _route("other"), {})
    assert (default.require, default.rule, default.approver) == (True, "default", "ops")
    # An unannotated tool is destructive (MCP's default); a read-only one never is.
    assert judge(ALICE, None, _route("wipe"), {}).rule == "wipe"
    read_only = {"name": "wipe2", "annotations": {"readOnlyHint": True}}
    assert judge(ALICE, None, _route("wipe2", read_only), {}).rule == "default"


@pytest.mark.parametrize(
    ("condition", "arguments", "selected"),
    [
        ({"equals": 5}, {"n": 5}, True),
        ({"equals": 1}, {"n": True}, False),  # JSON true is not 1
        ({"one_of": ["a", "b"]}, {"n": "b"}, True),
        ({"one_of": ["a", "b"]}, {"n": "c"}, False),
        ({"matches": "rm *"}, {"n": "rm -rf /"}, True),
        ({"matches": "rm *"}, {"n": 7}, False),
        ({"greater_than": 100}, {"n": 100.5}, True),
        ({"greater_than": 100}, {"n": 100}, False),
        ({"greater_than": 100}, {}, False),
        ({"present": True}, {"n": None}, True),
        ({"present": False}, {}, True),
        ({"present": False}, {"n": 1}, False),
    ],
)
def test_argument_conditions(
    condition: dict[str, Any], arguments: dict[str, Any], selected: bool, tmp_path: Path
) -> None:
    gate = _approvals({"rules": [{"name": "r", "arguments": {"n": condition}}]}, tmp_path)
    verdict = gate.settings.rules.judge(ALICE, None, _route("t"), arguments)
    assert (verdict.rule == "r") is selected


def test_callers_and_views_select_rules(tmp_path: Path) -> None:
    gate = _approvals(
        {
            "rules": [
                {"name": "bob", "principals": ["bob"]},
                {"name": "ops-view", "views": ["ops"]},
                {"name": "crm", "backends": ["crm"]},
            ]
        },
        tmp_path,
    )
    judge = gate.settings.rules.judge
    assert judge(Identity("bob"), None, _route("t"), {}).rule == "bob"
    other_issuer = Identity("bob", issuer="https://idp.example")
    assert judge(other_issuer, None, _route("t"), {}).rule == "default"
    assert judge(None, None, _route("t"), {}).rule == "default"
    assert judge(ALICE, "ops", _route("t"), {}).rule == "ops-view"
    assert judge(ALICE, None, _route("t", backend="crm"), {}).rule == "crm"


def test_the_policy_version_follows_the_rules_not_the_secret(tmp_path: Path) -> None:
    a = _approvals({"rules": [{"name": "r", "tools": ["x"]}]}, tmp_path)
    b = _approvals({"rules": [{"name": "r", "tools": ["x"]}], "ticket_ttl": 5}, tmp_path)
    c = _approvals({"rules": [{"name": "r", "tools": ["y"]}]}, tmp_path)
    assert a.settings.policy_version == b.settings.policy_version != c.settings.policy_version


def test_the_digest_ignores_key_order_and_spacing() -> None:
    key = b"k" * 32
    same = arguments_digest(key, {"a": 1, "b": [1, 2]})
    assert same == arguments_digest(key, {"b": [1, 2], "a": 1})
    assert arguments_digest(key, {"a": 1}) != arguments_digest(key, {"a": 1.5})
    assert arguments_digest(key, {"a": "1"}) != arguments_digest(key, {"a": 1})
    assert arguments_digest(b"j" * 32, {"a": 1}) != arguments_digest(key, {"a": 1})


def test_the_request_state_binds_caller_arguments_and_expiry() -> None:
    key = b"k" * 32
    later = int(time.time() * 1000) + 60_000
    text = approval_state.sign(key, ApprovalState("apr_x", "api_key#alice", "d1", later))
    assert approval_state.verify(key, text, "api_key#alice", "d1").ticket == "apr_x"
    for principal, digest, problem in (
        ("api_key#bob", "d1", "another caller"),
        ("api_key#alice", "d2", "arguments differ"),
    ):
        with pytest.raises(StateError, match=problem):
            approval_state.verify(key, text, principal, digest)
    with pytest.raises(StateError, match="signature"):
        approval_state.verify(b"j" * 32, text, "api_key#alice", "d1")
    body, mac = text.rsplit(".", 1)
    with pytest.raises(StateError, match="signature"):
        approval_state.verify(key, body.replace("e", "f", 1) + "." + mac, "api_key#alice", "d1")
    past = approval_state.sign(key, ApprovalState("apr_x", "api_key#alice", "d1", 1))
    with pytest.raises(StateError, match="expired"):
        approval_state.verify(key, past, "api_key#alice", "d1")
    with pytest.raises(StateError, match="malformed"):
        approval_state.verify(key, "sy-approval.1.!!", "api_key#alice", "d1")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with storage_for(request.param, tmp_path) as settings:
        db = await open_database(settings)
        tickets = TicketStore(db)
        await tickets.migrate()
        try:
            yield tickets
        finally:
            await db.close()


BINDING = Binding("api_key#alice", "", "fx", "pay", "fx_pay", "digest", "v1")


async def test_an_approval_is_consumed_exactly_once_under_concurrency(store: TicketStore) -> None:
    ticket = await store.create(BINDING, "r", "approver", 60_000)
    assert await store.decide(ticket.id, True, "api_key#carol", None, "v1")
    assert not await store.decide(ticket.id, False, "api_key#dave", "late", "v1")
    wins = await asyncio.gather(*(store.consume(ticket.id, BINDING) for _ in range(20)))
    assert wins.count(True) == 1
    consumed = await store.get(ticket.id)
    assert consumed is not None and consumed.status() == "consumed"


async def test_consuming_needs_the_exact_binding(store: TicketStore) -> None:
    ticket = await store.create(BINDING, "r", "approver", 60_000)
    assert not await store.consume(ticket.id, BINDING)  # still pending
    assert await store.decide(ticket.id, True, "x", None, "v1")
    for field, value in (
        ("principal", "api_key#bob"),
        ("view", "ops"),
        ("tool", "refund"),
        ("args_digest", "other"),
        ("policy_version", "v2"),
    ):
        assert not await store.consume(ticket.id, replace(BINDING, **{field: value})), field
    assert await store.consume(ticket.id, BINDING)


async def test_expired_and_other_policy_tickets_cannot_be_decided_or_used(
    store: TicketStore,
) -> None:
    old = await store.create(BINDING, "r", "approver", 1)
    await asyncio.sleep(0.01)
    assert not await store.decide(old.id, True, "x", None, "v1")
    current = await store.get(old.id)
    assert current is not None and current.status() == "expired"
    fresh = await store.create(BINDING, "r", "approver", 60_000)
    assert not await store.decide(fresh.id, True, "x", None, "v2")
    assert await store.decide(fresh.id, True, "x", None, "v1")
    assert await store.supersede(fresh.id)
    assert not await store.consume(fresh.id, BINDING)


async def test_each_round_of_an_approved_call_is_taken_once(store: TicketStore) -> None:
    ticket = await store.create(BINDING, "r", "approver", 60_000)
    await store.decide(ticket.id, True, "x", None, "v1")
    assert not await store.advance(ticket.id, BINDING, 0)  # not consumed yet
    assert await store.consume(ticket.id, BINDING)
    wins = await asyncio.gather(*(store.advance(ticket.id, BINDING, 0) for _ in range(10)))
    assert wins.count(True) == 1
    assert not await store.advance(ticket.id, BINDING, 0)
    assert await store.advance(ticket.id, BINDING, 1)
