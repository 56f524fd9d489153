"""Aggregation and routing: collisions, aliases, refused names, pagination, metadata fidelity."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.harness import Gateway, start_gateway, stdio_fixture
from tests.rpc import RawClient, raw_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

RAW = raw_fixture()
LLM_SAFE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "gateway": {"page_size": 7},
        "servers": {
            "rich": stdio_fixture("rich"),
            "paged": stdio_fixture("paged"),
            "stuck": stdio_fixture("stuck"),
            "names": stdio_fixture("names"),
            # Two unprefixed backends that both offer `echo`: a real collision.
            "a": stdio_fixture("crashy", prefix=""),
            "b": {**stdio_fixture(script="sdk_stdio.py"), "prefix": ""},
        },
    }
    gw = start_gateway(config, tmp_path_factory.mktemp("routing"))
    try:
        for name in config["servers"]:
            gw.wait_backend(name)
        yield gw
    finally:
        gw.stop()


@pytest.fixture(params=["legacy", "modern"])
async def client(request: pytest.FixtureRequest, gateway: Gateway) -> AsyncIterator[RawClient]:
    async with aiohttp.ClientSession() as http:
        yield await RawClient(gateway.url, http, era=request.param).open()


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


async def test_pagination_walks_every_backend_page_and_repages(client: RawClient) -> None:
    tools = await client.list_all("tools/list", "tools")
    names = _names(tools)
    # 25 tools over three backend pages, all present exactly once, in backend order.
    paged = [n for n in names if n.startswith("paged_")]
    assert paged == [f"paged_t{i:02d}" for i in range(25)]
    # 12 prompts over three backend pages.
    prompts = _names(await client.list_all("prompts/list", "prompts"))
    assert [p for p in prompts if p.startswith("paged_")] == [f"paged_p{i:02d}" for i in range(12)]
    assert len(names) == len(set(names))
    # Switchyard's own pages: page_size 7, opaque cursors.
    first = await client.result("tools/list")
    assert len(first["tools"]) == 7 and isinstance(first["nextCursor"], str)
    assert "paged" not in first["nextCursor"]


async def test_cursor_that_never_advances_is_bounded(client: RawClient) -> None:
    names = _names(await client.list_all("tools/list", "tools"))
    assert [n for n in names if n.startswith("stuck_")] == ["stuck_s0", "stuck_s1", "stuck_s2"]
    result = await client.result("tools/call", {"name": "stuck_s1", "arguments": {}})
    assert result["content"][0]["text"] == "called s1"


async def test_invalid_cursor_is_invalid_params(client: RawClient) -> None:
    resp = await client.request("tools/list", {"cursor": "not-a-cursor"})
    assert resp.json["error"]["code"] == -32602


async def test_names_refused_aliased_and_routed(client: RawClient) -> None:
    names = _names(await client.list_all("tools/list", "tools"))
    ours = [n for n in names if n.startswith("names_")]
    assert "names_ok_tool" in ours
    for bad in ("has space", "bidi\u202etool", "zero\u200bwidth", "bell\x07tool", "x" * 129):
        assert all(bad not in n for n in names)
    assert all(LLM_SAFE.match(n) for n in names), [n for n in names if not LLM_SAFE.match(n)]
    # Valid but LLM-unsafe names (a dot, or too long with the prefix) get a stable alias.
    dotted = [n for n in ours if n.startswith("names_dotted_name_tool_")]
    assert len(dotted) == 1
    result = await client.result("tools/call", {"name": dotted[0], "arguments": {}})
    assert result["content"][0]["text"] == "called dotted.name.tool"
    long_names = [n for n in RAW.NAME_TOOLS_NAMES if len(n) >= 100 and len(n) <= 128]
    for original in long_names:
        alias = [n for n in ours if n.startswith("names_" + original[:20])]
        assert len(alias) == 1 and len(alias[0]) <= 64
        result = await client.result("tools/call", {"name": alias[0], "arguments": {}})
        assert result["content"][0]["text"] == f"called {original}"
    # Aliases are deterministic: listing again gives the same names.
    assert _names(await client.list_all("tools/list", "tools")) == names


async def test_collision_resolved_deterministically_never_overwritten(client: RawClient) -> None:
    names = _names(await client.list_all("tools/list", "tools"))
    assert names.count("echo") == 1
    suffixed = [n for n in names if n.startswith("echo_")]
    assert len(suffixed) == 1
    # `a` (first in config order) keeps `echo`; `b` is reachable under the suffixed name.
    first = await client.result("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    assert first["content"][0]["text"] == "hi"
    second = await client.result("tools/call", {"name": suffixed[0], "arguments": {"text": "hi"}})
    assert second["content"][0]["text"] == "hi"
    whoami = await client.result("tools/call", {"name": "whoami", "arguments": {}})
    assert whoami["content"][0]["text"].isdigit()  # only `a` (crashy) has whoami: it routed there


async def test_tool_metadata_arrives_byte_identical_but_for_its_name(client: RawClient) -> None:
    resp = await client.request("tools/list")
    envelope = msgspec.json.decode(resp.body, type=dict[str, msgspec.Raw])
    result = msgspec.json.decode(envelope["result"], type=dict[str, msgspec.Raw])
    cursor_pages = [msgspec.json.decode(result["tools"], type=list[msgspec.Raw])]
    next_cursor = json.loads(bytes(result["nextCursor"])) if "nextCursor" in result else None
    while next_cursor is not None:
        page = await client.request("tools/list", {"cursor": next_cursor})
        body = msgspec.json.decode(
            msgspec.json.decode(page.body, type=dict[str, msgspec.Raw])["result"],
            type=dict[str, msgspec.Raw],
        )
        cursor_pages.append(msgspec.json.decode(body["tools"], type=list[msgspec.Raw]))
        next_cursor = json.loads(bytes(body["nextCursor"])) if "nextCursor" in body else None
    by_name = {json.loads(bytes(raw))["name"]: bytes(raw) for page in cursor_pages for raw in page}
    for tool in RAW.RICH_TOOLS_LIST["tools"]:
        expected = dict(tool, name=f"rich_{tool['name']}")
        assert (
            by_name[f"rich_{tool['name']}"]
            == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
        )


async def test_results_and_errors_pass_through_unchanged(client: RawClient) -> None:
    result = await client.result("tools/call", {"name": "rich_everything", "arguments": {}})
    if client.era == "modern":
        assert result.pop("resultType") == "complete"
    assert result == RAW.RICH_EVERYTHING_RESULT
    resp = await client.request(
        "tools/call", {"name": "rich_fail", "arguments": {}}, request_id="str-id"
    )
    assert resp.json == {"jsonrpc": "2.0", "id": "str-id", "error": RAW.RICH_FAIL_ERROR}
    prompts = {p["name"]: p for p in await client.list_all("prompts/list", "prompts")}
    rich_prompt = RAW.RICH_PROMPTS_LIST["prompts"][0]
    assert prompts[f"rich_{rich_prompt['name']}"] == dict(
        rich_prompt, name=f"rich_{rich_prompt['name']}"
    )
    resources = {r["uri"]: r for r in await client.list_all("resources/list", "resources")}
    for resource in RAW.RICH_RESOURCES_LIST["resources"]:
        assert resources[resource["uri"]] == resource
    templates = await client.list_all("resources/templates/list", "resourceTemplates")
    assert RAW.RICH_TEMPLATES_LIST["resourceTemplates"][0] in templates


async def test_resources_route_by_uri_and_template(client: RawClient) -> None:
    read = await client.result("resources/read", {"uri": "fixture://rich/readme"})
    assert read["contents"][0]["uri"] == "fixture://rich/readme"
    item = await client.result("resources/read", {"uri": "fixture://rich/items/3"})
    assert item["contents"][0]["uri"] == "fixture://rich/items/3"
    missing = await client.request("resources/read", {"uri": "nowhere://x"})
    expected_code = -32602 if client.era == "modern" else -32002
    assert missing.json["error"]["code"] == expected_code


async def test_completion_routes_by_prompt_and_template(client: RawClient) -> None:
    by_prompt = await client.result(
        "completion/complete",
        {
            "ref": {"type": "ref/prompt", "name": "rich_review"},
            "argument": {"name": "style", "value": "p"},
        },
    )
    assert by_prompt["completion"]["values"] == ["pirate"]
    by_template = await client.result(
        "completion/complete",
        {
            "ref": {"type": "ref/resource", "uri": "fixture://rich/items/{id}"},
            "argument": {"name": "id", "value": "1"},
        },
    )
    assert by_template["completion"]["values"][:4] == ["1", "10", "11", "12"]


async def test_unknown_tool_and_prompt_are_invalid_params(client: RawClient) -> None:
    for method, params in (
        ("tools/call", {"name": "nope", "arguments": {}}),
        ("prompts/get", {"name": "nope"}),
    ):
        resp = await client.request(method, params)
        assert resp.status == 200
        assert resp.json["error"]["code"] == -32602
