"""Caching and sharing against real backend processes that count what they are asked: list
lifetimes (`ttlMs`/`cacheScope`) honoured and aggregated, concurrent identical reads and lists
sharing one upstream request, and results of cacheable tools kept per caller."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.harness import Gateway, create_key, register_secret, stdio_fixture
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def _sdk(calls: Path, hints: dict[str, list[Any]] | None = None, **extra: Any) -> dict[str, Any]:
    env = {"FIXTURE_CALLS_FILE": str(calls), "FIXTURE_CACHE_TOOLS": "1"}
    if hints is not None:
        env["FIXTURE_CACHE_HINTS"] = json.dumps(hints)
    return stdio_fixture(script="sdk_stdio.py", env=env, isolation="shared", **extra)


def _calls(path: Path) -> Counter[str]:
    """`<method> <name>` -> how many times the backend was asked."""
    seen: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            _, method, name = line.split(" ", 2)
            seen[f"{method} {name}"] += 1
    return seen


async def _modern(gw: Gateway, http: aiohttp.ClientSession, **kw: Any) -> RawClient:
    return await RawClient(gw.url, http, era="modern", **kw).open()


async def _reload(gw: Gateway, config: dict[str, Any]) -> None:
    before = len(re.findall("config reloaded", gw.log_text()))
    gw.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gw.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while len(re.findall("config reloaded", gw.log_text())) == before:
        assert time.monotonic() < deadline, gw.log_text()[-2000:]
        await asyncio.sleep(0.05)


async def _until(moment: float) -> None:
    """Let a lifetime run out: wall time is what is being tested here."""
    while time.monotonic() < moment:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


# -- lists --------------------------------------------------------------------------------------


async def test_a_backend_list_lifetime_is_honoured_and_concurrent_lists_share_one_relisting(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    config = {"servers": {"pub": _sdk(calls, {"tools/list": [1500, "public"]})}}
    gw = gateway_factory(config)
    assert gw.wait_backend("pub")["era"] == "modern"
    listed = _calls(calls)["tools/list -"]
    assert listed >= 1
    async with aiohttp.ClientSession() as http:
        client = await _modern(gw, http)
        first = await client.result("tools/list")
        fetched = time.monotonic()
        assert "pub_stamp" in {t["name"] for t in first["tools"]}
        assert first["cacheScope"] == "public"
        assert 0 < first["ttlMs"] <= 1500
        # Within the lifetime: every list is served from what Switchyard holds.
        answers = await asyncio.gather(*(client.result("tools/list") for _ in range(40)))
        assert _calls(calls)["tools/list -"] == listed
        assert all(a["cacheScope"] == "public" and a["ttlMs"] <= 1500 for a in answers)
        # Once it ran out: forty concurrent lists cause exactly one re-listing.
        await _until(fetched + 1.6)
        answers = await asyncio.gather(*(client.result("tools/list") for _ in range(40)))
        assert _calls(calls)["tools/list -"] == listed + 1
        assert all(a["tools"] == first["tools"] for a in answers)
        assert all(1000 < a["ttlMs"] <= 1500 for a in answers)
        # A legacy client's lists carry none of the 2026-07-28 fields.
        legacy = await RawClient(gw.url, http).open()
        old = await legacy.result("tools/list")
        assert "ttlMs" not in old and "cacheScope" not in old
        # A reload lists again what it kept, when a client next asks.
        await _reload(gw, config)
        before = _calls(calls)["tools/list -"]
        await asyncio.gather(*(client.result("tools/list") for _ in range(10)))
        assert _calls(calls)["tools/list -"] == before + 1


async def test_a_zero_lifetime_list_is_fetched_again_for_every_list_and_a_positive_one_is_kept(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    """`ttlMs: 0` is immediately stale: a tool the backend added without any list_changed
    shows in the very next list. A positive lifetime is served as held until it runs out."""

    def growing(calls: Path, ttl_ms: int) -> dict[str, Any]:
        env = {
            "FIXTURE_CALLS_FILE": str(calls),
            "FIXTURE_GROW_TOOL": "1",
            "FIXTURE_CACHE_HINTS": json.dumps({"tools/list": [ttl_ms, "public"]}),
        }
        return stdio_fixture(script="sdk_stdio.py", env=env, isolation="shared")

    zero, held = tmp_path / "zero", tmp_path / "held"
    gw = gateway_factory({"servers": {"zero": growing(zero, 0), "held": growing(held, 3000)}})
    assert gw.wait_backend("zero")["era"] == "modern"
    gw.wait_backend("held")
    async with aiohttp.ClientSession() as http:
        client = await _modern(gw, http)
        names = {t["name"] for t in await client.list_all("tools/list", "tools")}
        assert "zero_grown_a" not in names and "held_grown_b" not in names
        listed = _calls(zero)["tools/list -"]
        grown = await client.result("tools/call", {"name": "zero_grow", "arguments": {"tag": "a"}})
        assert grown["content"][0]["text"] == "grew a"
        grown = await client.result("tools/call", {"name": "held_grow", "arguments": {"tag": "b"}})
        assert grown["content"][0]["text"] == "grew b"
        held_listed = _calls(held)["tools/list -"]
        grew_at = time.monotonic()
        answer = await client.result("tools/list")
        names = {t["name"] for t in answer["tools"]}
        assert "zero_grown_a" in names, names
        assert answer["ttlMs"] == 0
        # The zero-lifetime backend was asked once for that list, and once for each after it.
        assert _calls(zero)["tools/list -"] == listed + 1
        await client.result("tools/list")
        assert _calls(zero)["tools/list -"] == listed + 2
        assert (await client.result("tools/call", {"name": "zero_grown_a", "arguments": {}}))[
            "content"
        ][0]["text"] == "grown a"
        # The three-second backend is not asked again within its lifetime...
        assert "held_grown_b" not in names
        assert _calls(held)["tools/list -"] == held_listed
        # ...and is once it has run out.
        await _until(grew_at + 3.1)
        names = {t["name"] for t in (await client.result("tools/list"))["tools"]}
        assert "held_grown_b" in names and "zero_grown_a" in names
        assert _calls(held)["tools/list -"] == held_listed + 1


async def test_the_aggregate_is_the_shortest_lifetime_and_the_most_private_scope(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = {
        "servers": {
            "pub": _sdk(
                tmp_path / "pub",
                {"tools/list": [60000, "public"], "resources/read": [60000, "public"]},
            ),
            "priv": _sdk(tmp_path / "priv", {"tools/list": [20000, "private"]}),
            "legacy": stdio_fixture("crashy", isolation="shared"),
        },
        "virtual_servers": {
            "public-only": {"tools": [{"backends": ["pub"]}]},
            "modern": {"tools": [{"backends": ["pub", "priv"]}]},
        },
    }
    gw = gateway_factory(config)
    for name in ("pub", "priv", "legacy"):
        gw.wait_backend(name)
    async with aiohttp.ClientSession() as http:
        full = await _modern(gw, http)
        # A legacy backend promises no lifetime: the whole list has none.
        assert (await full.result("tools/list"))["ttlMs"] == 0
        assert (await full.result("tools/list"))["cacheScope"] == "private"
        both = await RawClient(f"{gw.base}/servers/modern/mcp", http, era="modern").open()
        answer = await both.result("tools/list")
        assert 15000 < answer["ttlMs"] <= 20000 and answer["cacheScope"] == "private"
        only = await RawClient(f"{gw.base}/servers/public-only/mcp", http, era="modern").open()
        answer = await only.result("tools/list")
        assert 55000 < answer["ttlMs"] <= 60000 and answer["cacheScope"] == "public"
        # Without authentication a backend's public read stays public.
        read = await full.result("resources/read", {"uri": "fixture://fixture/info"})
        assert (read["ttlMs"], read["cacheScope"]) == (60000, "public")


async def test_lists_filtered_per_caller_are_never_public(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    alice = create_key(keys, "alice", "dev")
    bob = create_key(keys, "bob", "guest")
    gw = gateway_factory(
        {
            "auth": {
                "enabled": True,
                "data_dir": str(keys),
                "rules": [
                    {"effect": "allow", "roles": ["dev"]},
                    {"effect": "allow", "roles": ["guest"], "names": ["echo"]},
                ],
            },
            "servers": {
                "pub": _sdk(
                    tmp_path / "calls",
                    {"tools/list": [60000, "public"], "resources/read": [60000, "public"]},
                )
            },
        }
    )
    gw.wait_backend("pub")
    async with aiohttp.ClientSession() as http:
        as_alice = await _modern(gw, http, extra_headers={"Authorization": f"Bearer {alice}"})
        as_bob = await _modern(gw, http, extra_headers={"Authorization": f"Bearer {bob}"})
        for_alice, for_bob = await asyncio.gather(
            as_alice.result("tools/list"), as_bob.result("tools/list")
        )
        # Behind authentication a read is its caller's too, whatever the backend said.
        read = await as_alice.result("resources/read", {"uri": "fixture://fixture/info"})
        assert read["cacheScope"] == "private" and read["ttlMs"] == 60000
    assert {t["name"] for t in for_bob["tools"]} == {"pub_echo"}
    assert len(for_alice["tools"]) > 1
    for answer in (for_alice, for_bob):
        assert answer["cacheScope"] == "private" and 0 < answer["ttlMs"] <= 60000


# -- reads --------------------------------------------------------------------------------------


async def test_concurrent_identical_reads_share_one_upstream_read(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    gw = gateway_factory({"servers": {"slow": _sdk(calls)}})
    gw.wait_backend("slow")
    uri = "fixture://fixture/slowboard/shared"
    async with aiohttp.ClientSession() as http:
        clients = [await _modern(gw, http) for _ in range(4)]
        answers = await asyncio.gather(
            *(clients[i % 4].result("resources/read", {"uri": uri}) for i in range(40))
        )
        assert {a["contents"][0]["text"] for a in answers} == {"slowboard shared #1"}
        assert _calls(calls)[f"resources/read {uri}"] == 1
        # Once answered, the next read is a new upstream read (coalescing is not caching).
        again = await clients[0].result("resources/read", {"uri": uri})
        assert again["contents"][0]["text"] == "slowboard shared #2"
        assert _calls(calls)[f"resources/read {uri}"] == 2


# -- results of cacheable tools -------------------------------------------------------------


def _cached_config(keys: Path, calls: Path, ttl: float = 60) -> dict[str, Any]:
    return {
        "auth": {
            "enabled": True,
            "data_dir": str(keys),
            "rules": [
                {"effect": "allow", "roles": ["dev"]},
                {"effect": "allow", "roles": ["guest"], "names": ["echo"]},
            ],
        },
        "rate_limits": {
            "rules": [
                {
                    "name": "stamps",
                    "principals": ["alice"],
                    "tools": ["stamp"],
                    "windows": [{"period": "minute", "max": 4}],
                }
            ]
        },
        "redaction": {"rules": [{"name": "emails", "detectors": ["email"], "action": "mask"}]},
        "cache": {
            "rules": [
                {"backend": "svc", "tool": "stamp*", "ttl": ttl},
                {"backend": "svc", "tool": "unmarked", "ttl": ttl},
            ]
        },
        "servers": {"svc": _sdk(calls)},
    }


async def _tool(client: RawClient, name: str, args: dict[str, Any]) -> dict[str, Any]:
    resp = await client.request("tools/call", {"name": name, "arguments": args})
    assert resp.status in (200, 429), resp.body
    body: dict[str, Any] = resp.json
    return body


def _text(body: dict[str, Any]) -> str:
    return str(body["result"]["content"][0]["text"])


async def test_a_cached_result_is_its_callers_alone_and_every_check_still_runs_on_a_hit(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    calls = tmp_path / "calls"
    tokens = {
        "alice": create_key(keys, "alice", "dev"),
        "bob": create_key(keys, "bob", "dev"),
        "carol": create_key(keys, "carol", "guest"),
    }
    config = _cached_config(keys, calls)
    gw = gateway_factory(config)
    gw.wait_backend("svc")
    async with aiohttp.ClientSession() as http:
        who = {
            name: await RawClient(
                gw.url, http, extra_headers={"Authorization": f"Bearer {token}"}
            ).open()
            for name, token in tokens.items()
        }
        # Alice and Bob at the same moment, same arguments: each gets an execution of his own.
        a1, b1 = await asyncio.gather(
            _tool(who["alice"], "svc_stamp", {"tag": "x", "ms": 0}),
            _tool(who["bob"], "svc_stamp", {"tag": "x", "ms": 0}),
        )
        assert {_text(a1), _text(b1)} == {"x #1", "x #2"}
        # A hit, whatever the order of the arguments; the other caller's result never.
        a2 = await _tool(who["alice"], "svc_stamp", {"ms": 0, "tag": "x"})
        b2 = await _tool(who["bob"], "svc_stamp", {"tag": "x", "ms": 0})
        assert _text(a2) == _text(a1) and _text(b2) == _text(b1)
        assert _calls(calls)["tools/call stamp"] == 2
        # One caller's identical calls in flight at once share one execution.
        slow = {"tag": "z", "ms": 300}
        shared = await asyncio.gather(*(_tool(who["bob"], "svc_stamp", slow) for _ in range(10)))
        assert {_text(r) for r in shared} == {"z #3"}
        assert _calls(calls)["tools/call stamp"] == 3
        # Other arguments are another entry.
        a3 = await _tool(who["alice"], "svc_stamp", {"tag": "y"})
        assert _text(a3) == "y #4"
        # The rate limit counts hits: Alice's fifth stamp in a minute is refused, cached or not.
        a4 = await _tool(who["alice"], "svc_stamp", {"tag": "x", "ms": 0})
        assert _text(a4) == _text(a1)
        refused = await _tool(who["alice"], "svc_stamp", {"tag": "x", "ms": 0})
        assert refused["error"]["code"] == -31020, refused
        # Access rules run on a hit: Carol may not call it, though a result is cached for it.
        denied = await _tool(who["carol"], "svc_stamp", {"tag": "x", "ms": 0})
        assert "error" in denied and "x #" not in json.dumps(denied)
        assert _calls(calls)["tools/call stamp"] == 4
        # Never cached: a tool error, and a tool not declared read-only.
        for _ in range(2):
            failed = await _tool(who["bob"], "svc_stamp_fail", {"tag": "f"})
            assert failed["result"]["isError"] is True
            await _tool(who["bob"], "svc_unmarked", {"tag": "u"})
        assert _calls(calls)["tools/call stamp_fail"] == 2
        assert _calls(calls)["tools/call unmarked"] == 2
        # What is kept is the result as redacted for its caller: a hit carries no more.
        mail = {"tag": "to bob@example.com"}
        r1 = await _tool(who["bob"], "svc_stamp", mail)
        r2 = await _tool(who["bob"], "svc_stamp", mail)
        assert _text(r1) == _text(r2) and "bob@example.com" not in _text(r1) + _text(r2)
        assert _text(r1).startswith("to ") and _text(r1).endswith(" #9")
        status = gw.readyz()["resultCache"]
        assert status["entries"] == 5 and status["hits"] == 4
        # A reload never serves a result made under the old configuration.
        config["cache"]["rules"][0]["ttl"] = 30
        await _reload(gw, config)
        b3 = await _tool(who["bob"], "svc_stamp", {"tag": "x", "ms": 0})
        assert _text(b3) != _text(b1)
        assert _calls(calls)["tools/call stamp"] == 6


async def test_a_result_expires_after_its_ttl(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    calls = tmp_path / "calls"
    token = create_key(keys, "bob", "dev")
    gw = gateway_factory(_cached_config(keys, calls, ttl=1))
    gw.wait_backend("svc")
    async with aiohttp.ClientSession() as http:
        bob = await RawClient(
            gw.url, http, extra_headers={"Authorization": f"Bearer {token}"}
        ).open()
        first = await _tool(bob, "svc_stamp", {"tag": "t"})
        stored = time.monotonic()
        assert _text(await _tool(bob, "svc_stamp", {"tag": "t"})) == _text(first)
        await _until(stored + 1.1)
        assert _text(await _tool(bob, "svc_stamp", {"tag": "t"})) != _text(first)
        async with http.get(
            f"{gw.base}/metrics", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 200
            scraped = _samples(await resp.text())
    assert _calls(calls)["tools/call stamp"] == 2
    # What /metrics says matches what happened: one hit, two calls that ran, one entry held.
    assert scraped["switchyard_result_cache_hits_total"] == 1
    assert scraped["switchyard_result_cache_misses_total"] == 2
    assert scraped["switchyard_result_cache_entries"] == 1


def _samples(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page, parsed as Prometheus parses it."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


async def test_a_hit_leaves_its_own_audit_record_with_the_redacted_arguments(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hmac_key = register_secret(f"audit-hmac-{time.monotonic_ns()}-0123456789")
    monkeypatch.setenv("SWITCHYARD_TEST_CACHE_AUDIT_HMAC", hmac_key)  # the gateway inherits it
    keys = tmp_path / "keys"
    calls = tmp_path / "calls"
    token = create_key(keys, "alice", "dev")
    config = _cached_config(keys, calls)
    config["storage"] = {"data_dir": str(tmp_path / "db")}
    config["audit"] = {
        "enabled": True,
        "hmac_key": "${SWITCHYARD_TEST_CACHE_AUDIT_HMAC}",
        "keys_dir": str(tmp_path / "audit-keys"),
        "raw_arguments": [{"names": ["stamp"]}],
    }
    gw = gateway_factory(config)
    gw.wait_backend("svc")
    async with aiohttp.ClientSession() as http:
        alice = await RawClient(
            gw.url, http, extra_headers={"Authorization": f"Bearer {token}"}
        ).open()
        mail = {"tag": "to carol@example.com"}
        first, second = [await _tool(alice, "svc_stamp", mail) for _ in range(2)]
    assert _text(first) == _text(second)
    assert _calls(calls)["tools/call stamp"] == 1
    assert gw.stop() == 0
    with sqlite3.connect(tmp_path / "db" / "switchyard.db") as conn:
        rows = conn.execute("SELECT record FROM audit_records ORDER BY writer, seq").fetchall()
    records = [json.loads(r[0]) for r in rows]
    stamps = [r for r in records if r.get("method") == "tools/call" and r["name"] == "stamp"]
    # The hit is recorded like the call that ran, and holds no more than it did.
    assert len(stamps) == 2
    assert [(r["principal"], r["decision"], r["outcome"]) for r in stamps] == [
        ("api_key#alice", "allow", "ok")
    ] * 2
    assert (
        stamps[0]["args"] == stamps[1]["args"] and stamps[0]["args_hmac"] == stamps[1]["args_hmac"]
    )
    assert stamps[0]["args"]["tag"].startswith("to ")
    assert "carol@example.com" not in json.dumps(records)
