"""The README's configuration tables and the pydantic schema cannot drift apart: every key a
table documents exists, every schema field is documented, and every default the README states
is the schema's."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

from switchyard.config.schema import (
    AccessRuleConfig,
    AdminConfig,
    ApprovalRuleConfig,
    ApprovalsConfig,
    CacheConfig,
    CacheRuleConfig,
    ConsoleOAuthConfig,
    GatewayConfig,
    LimitsConfig,
    LoggingConfig,
    MetricsConfig,
    RateLimitRuleConfig,
    RateLimitsConfig,
    ServerConfig,
    StorageConfig,
    TracingConfig,
)
from tests.harness import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")

# Heading of the section whose first table documents a model -> the model, and the fields the
# table leaves to another table (documented there).
TABLES: dict[str, tuple[type[BaseModel], set[str]]] = {
    "### `gateway:`": (GatewayConfig, {"limits"}),
    "### `storage:`": (StorageConfig, set()),
    "### `servers:` / `mcpServers:` entries": (ServerConfig, set()),
    "### Limits (`gateway.limits:`)": (LimitsConfig, set()),
    "#### `metrics:`": (MetricsConfig, set()),
    "#### `tracing:`": (TracingConfig, set()),
    "#### `logging:`": (LoggingConfig, set()),
    "### Rate limits, concurrency caps and budgets (`rate_limits:`)": (
        RateLimitsConfig,
        {"rules"},  # each rule's keys have their own table
    ),
    "### Approvals and agent mode (`approvals:`)": (ApprovalsConfig, set()),
    "## Admin API (`admin:`)": (AdminConfig, set()),
    "### Result caching (`cache:`)": (CacheConfig, {"rules"}),
    "#### Console sign-in and sessions": (ConsoleOAuthConfig, set()),
}


def _table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table after `heading`."""
    start = README.index(heading + "\n")
    lines = README[start:].splitlines()[1:]
    rows: list[list[str]] = []
    for line in lines:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif rows:
            break
    assert len(rows) > 2, heading
    return rows[2:]  # header and rule


def _keys(cell: str) -> list[str]:
    """`a`, `b` / `c` -> [a, b, c]; `gateway.x` is x; after `rules[].a` in a cell, `b` is
    `rules[].b` too."""
    out: list[str] = []
    prefix = ""
    for key in re.findall(r"`([^`]+)`", cell):
        if key.startswith("rules[]."):
            prefix = "rules[]."
            out.append(key)
        else:
            out.append(prefix + (key.split(".")[-1] if key.startswith("gateway.") else key))
    return out


def _documented(heading: str) -> dict[str, str | None]:
    rows = _table(heading)
    out: dict[str, str | None] = {}
    for row in rows:
        default = row[1] if len(row) == 3 else None
        for key in _keys(row[0]):
            out[key] = default
    return out


def _flatten(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel) and name == "defaults":
            names |= {f"defaults.{n}" for n in inner.model_fields}
        else:
            names.add(name)
    return names


@pytest.mark.parametrize("heading", list(TABLES))
def test_every_schema_field_is_documented_and_every_documented_key_exists(heading: str) -> None:
    model, elsewhere = TABLES[heading]
    documented = {k for k in _documented(heading) if not k.startswith("rules[].")}
    fields = _flatten(model) - elsewhere
    assert sorted(fields - documented) == [], f"undocumented in {heading}"
    extra = documented - fields
    if model is LimitsConfig:
        extra -= {"max_body_bytes", "max_message_bytes"}  # gateway keys, named with `gateway.`
    assert sorted(extra) == [], f"documented in {heading} but not in the schema"


def _number(text: str) -> Any:
    text = text.replace(",", "").replace("`", "").strip()
    units = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
    m = re.fullmatch(r"([0-9.]+)\s*(KiB|MiB|GiB|s)?", text)
    if m is None:
        return text
    value = float(m.group(1))
    return value * units.get(m.group(2) or "", 1)


@pytest.mark.parametrize("heading", [h for h in TABLES if len(_table(h)[0]) == 3])
def test_every_stated_default_is_the_schemas(heading: str) -> None:
    model, _ = TABLES[heading]
    fields = model.model_fields
    for key, stated in _documented(heading).items():
        if stated is None or key not in fields or " / " in stated:
            continue
        default = fields[key].default
        if stated == "none":
            assert default is None, (heading, key, default)
        elif isinstance(default, bool):
            assert stated == f"`{str(default).lower()}`", (heading, key, stated, default)
        elif isinstance(default, int | float):
            assert _number(stated) == default, (heading, key, stated, default)
        elif isinstance(default, str):
            assert stated == f"`{default}`", (heading, key, stated, default)
        elif isinstance(default, list) and default and all(isinstance(v, str) for v in default):
            assert stated == "`[" + ", ".join(default) + "]`", (heading, key, stated, default)
        elif isinstance(default, list | dict):
            assert stated in ("`[]`", "`{}`") and not default, (heading, key, stated, default)


def test_rate_limit_rule_keys_match_the_schema() -> None:
    heading = "### Rate limits, concurrency caps and budgets (`rate_limits:`)"
    documented = {
        k.removeprefix("rules[].").split(".")[0]
        for k in _documented(heading)
        if k.startswith("rules[].")
    }
    assert documented == set(RateLimitRuleConfig.model_fields)


def test_access_rule_keys_match_the_schema() -> None:
    start = README.index("| `auth.rules[]` key | meaning |")
    rows = [line for line in README[start:].splitlines()[2:] if line.startswith("|")]
    documented = set()
    for line in rows:
        if not line.startswith("| `"):
            break
        documented |= set(re.findall(r"`([^`]+)`", line.split("|")[1]))
    assert documented == set(AccessRuleConfig.model_fields)


def test_approval_rule_keys_match_the_schema() -> None:
    start = README.index("| `approvals.rules[]` key | meaning |")
    rows = [line for line in README[start:].splitlines()[2:] if line.startswith("|")]
    documented = set()
    for line in rows:
        if not line.startswith("| `"):
            break
        documented |= set(re.findall(r"`([^`]+)`", line.split("|")[1]))
    assert documented == set(ApprovalRuleConfig.model_fields)


def test_cache_rule_keys_match_the_schema() -> None:
    documented = {
        k.removeprefix("rules[].")
        for k in _documented("### Result caching (`cache:`)")
        if k.startswith("rules[].")
    }
    assert documented == set(CacheRuleConfig.model_fields)
