"""A raw JSON-RPC-over-HTTP MCP client for tests that must see exact bytes, codes and headers."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

from tests.harness import FIXTURES

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}
NAME_FIELD = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
"""A legacy `initialize` request, as a raw client sends it."""


def fixture_module(script: str) -> ModuleType:
    """A fixture server's script as a module, for its constants and helpers (importing one
    runs nothing: each serves only when run as a script)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, FIXTURES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def raw_fixture() -> ModuleType:
    """The raw stdio fixture as a module, for its constants (importing runs nothing)."""
    return fixture_module("raw_stdio.py")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawClient:
    url: str
    http: aiohttp.ClientSession
    era: str = "legacy"
    session_id: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(
        self, method: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.era == "modern":
            h["MCP-Protocol-Version"] = MODERN
            if method is not None:
                h["Mcp-Method"] = method
                name_field = NAME_FIELD.get(method)
                if name_field and params and name_field in params:
                    h["Mcp-Name"] = str(params[name_field])
        else:
            if self.session_id is not None:
                h["Mcp-Session-Id"] = self.session_id
                h["MCP-Protocol-Version"] = LEGACY
        h.update(self.extra_headers)
        return h

    async def post(self, body: bytes | dict[str, Any], headers: dict[str, str]) -> Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http.post(self.url, data=data, headers=headers) as resp:
            return Response(resp.status, dict(resp.headers), await resp.read())

    async def open(self) -> RawClient:
        if self.era == "legacy":
            resp = await self.post(
                {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": LEGACY,
                        "capabilities": {},
                        "clientInfo": {"name": "raw", "version": "1"},
                    },
                },
                self.headers(),
            )
            assert resp.status == 200, resp.body
            self.session_id = resp.headers["mcp-session-id"]
            await self.post(
                {"jsonrpc": "2.0", "method": "notifications/initialized"}, self.headers()
            )
        return self

    async def request(
        self, method: str, params: dict[str, Any] | None = None, request_id: Any = 1
    ) -> Response:
        params = dict(params or {})
        if self.era == "modern":
            params["_meta"] = {**MODERN_META, **params.get("_meta", {})}
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params:
            body["params"] = params
        return await self.post(body, self.headers(method, params))

    async def result(
        self, method: str, params: dict[str, Any] | None = None, request_id: Any = 1
    ) -> Any:
        resp = await self.request(method, params, request_id)
        assert resp.status == 200, (resp.status, resp.body)
        msg = resp.json
        assert msg["id"] == request_id
        assert "result" in msg, msg
        return msg["result"]

    async def list_all(self, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            result = await self.result(method, {"cursor": cursor} if cursor else None)
            items.extend(result[key])
            cursor = result.get("nextCursor")
            if cursor is None:
                return items
        raise AssertionError("pagination never ended")
