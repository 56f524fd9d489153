"""The `audit:` section compiled into the plan, the chain it puts in front of every method,
and the trace context a record carries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from switchyard.audit.gate import AuditGate, audited
from switchyard.audit.settings import RawArgumentsRule
from switchyard.audit.writer import AuditWriter
from switchyard.config.load import ConfigError, load_plan
from switchyard.observability.trace_context import trace_id
from switchyard.policies.access import AccessControl
from switchyard.policies.base import PolicySpec
from switchyard.policies.request_log import RequestLog

KEY = "an-audit-hmac-key-long-enough"


def _plan(tmp_path: Path, audit: dict[str, object]) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"audit": audit}))
    return load_plan(path)[0]


def test_the_section_compiles_with_its_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_KEY", KEY)
    plan = _plan(
        tmp_path,
        {
            "enabled": True,
            "hmac_key": "${AUDIT_KEY}",
            "keys_dir": "ring",
            "anchor_file": "anchor/checkpoints.jsonl",
            "retention_days": 30,
            "on_failure": "buffer",
            "buffer_size": 7,
            "raw_arguments": [{"principals": ["api_key#ops-*"], "backends": ["db"]}],
        },
    )
    settings = plan.audit  # type: ignore[attr-defined]
    assert settings.hmac_key == KEY.encode()
    assert settings.keys_dir == (tmp_path / "ring").resolve()
    assert settings.anchor_file == (tmp_path / "anchor" / "checkpoints.jsonl").resolve()
    assert (settings.retention_days, settings.on_failure, settings.buffer_size) == (30, "buffer", 7)
    assert settings.raw_arguments == (RawArgumentsRule(("api_key#ops-*",), ("db",), None),)
    assert KEY not in repr(settings)


def test_off_by_default_and_a_key_is_required_when_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _plan(tmp_path, {}).audit is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"audit.hmac_key: required"):
        _plan(tmp_path, {"enabled": True})
    monkeypatch.setenv("SHORT_KEY", "s3cret-short")
    with pytest.raises(ConfigError, match=r"audit.hmac_key: at least 16 characters") as err:
        _plan(tmp_path, {"enabled": True, "hmac_key": "${SHORT_KEY}"})
    assert "s3cret" not in str(err.value)
    with pytest.raises(ConfigError, match="environment variable NOT_SET_ANYWHERE"):
        _plan(tmp_path, {"enabled": True, "hmac_key": "${NOT_SET_ANYWHERE}"})
    with pytest.raises(ConfigError, match="on_failure"):
        _plan(tmp_path, {"enabled": True, "hmac_key": KEY, "on_failure": "ignore"})


def test_the_record_is_outermost_and_the_gate_right_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the config's own chain (no access log, access rules), every call is recorded,
    the gate's refusals too; buffering, there is no gate."""
    monkeypatch.setenv("AUDIT_KEY", KEY)
    plan = _plan(tmp_path, {"enabled": True, "hmac_key": "${AUDIT_KEY}"})
    settings = plan.audit  # type: ignore[attr-defined]
    writer = AuditWriter(settings, plan.storage)  # type: ignore[attr-defined]
    chain = audited((PolicySpec(AccessControl, None),), writer)
    assert [p.cls for p in chain] == [RequestLog, AuditGate, AccessControl]
    buffering = AuditWriter(dataclasses.replace(settings, on_failure="buffer"), plan.storage)  # type: ignore[attr-defined]
    chain = audited((PolicySpec(RequestLog), PolicySpec(AccessControl, None)), buffering)
    assert [p.cls for p in chain] == [RequestLog, AccessControl]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_trace_ids_come_only_from_valid_traceparent_values(
    header: str | None, expected: str | None
) -> None:
    assert trace_id(header) == expected
