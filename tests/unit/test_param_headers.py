"""x-mcp-header: which annotations are valid, the headers a call carries, and checking them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.protocol import param_headers
from switchyard.protocol.param_headers import (
    HeaderParam,
    check_request,
    decode_value,
    encode_value,
    header_params,
    headers_for,
    invalid_reason,
)
from switchyard.routing import catalog
from switchyard.routing.catalog import Listing
from switchyard.wire import frame
from switchyard.wire.frame import Raw


def tool(properties: dict[str, Any], **schema: Any) -> bytes:
    return json.dumps(
        {
            "name": "t",
            "inputSchema": {"type": "object", "properties": properties, **schema},
        }
    ).encode()


EXECUTE_SQL = json.dumps(
    {
        "name": "execute_sql",
        "description": "Execute SQL on Google Cloud Spanner",
        "inputSchema": {
            "type": "object",
            "properties": {
                "region": {
                    "type": "string",
                    "description": "The region to execute the query in",
                    "x-mcp-header": "Region",
                },
                "query": {"type": "string", "description": "The SQL query to execute"},
            },
            "required": ["region", "query"],
        },
    }
).encode()


# -- validity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        EXECUTE_SQL,
        tool({"q": {"type": "string"}}),
        tool({}),
        b'{"name":"t"}',
        tool({"n": {"type": "integer", "x-mcp-header": "N"}}),
        tool({"b": {"type": "boolean", "x-mcp-header": "Flag"}}),
        tool({"o": {"type": "string", "x-mcp-header": "!#$%&'*+-.^_`|~09azAZ"}}),
        tool({"n": {"type": ["string", "null"], "x-mcp-header": "N"}}),
        # nested objects are fine while every step is a `properties` key
        tool(
            {
                "options": {
                    "type": "object",
                    "properties": {"limit": {"type": "integer", "x-mcp-header": "Limit"}},
                }
            }
        ),
        # data that merely contains the key is not an annotation
        tool({"q": {"type": "string", "enum": [{"x-mcp-header": 1}], "default": "a"}}),
        tool({"x-mcp-header": {"type": "string"}}),  # a property with that name
    ],
)
def test_valid_tools(item: bytes) -> None:
    assert invalid_reason(item) is None


@pytest.mark.parametrize(
    ("item", "why"),
    [
        (tool({"q": {"type": "string", "x-mcp-header": ""}}), "non-empty"),
        (tool({"q": {"type": "string", "x-mcp-header": 5}}), "non-empty string"),
        (tool({"q": {"type": "string", "x-mcp-header": "Two Words"}}), "token"),
        (tool({"q": {"type": "string", "x-mcp-header": "Bad\r\nX-Injected: 1"}}), "token"),
        (tool({"q": {"type": "string", "x-mcp-header": "Ré"}}), "token"),
        (tool({"q": {"type": "string", "x-mcp-header": "a:b"}}), "token"),
        (
            tool(
                {
                    "a": {"type": "string", "x-mcp-header": "Region"},
                    "b": {"type": "string", "x-mcp-header": "REGION"},
                }
            ),
            "case-insensitive",
        ),
        (tool({"q": {"type": "number", "x-mcp-header": "Q"}}), "type"),
        (tool({"q": {"type": "object", "x-mcp-header": "Q"}}), "type"),
        (tool({"q": {"type": "array", "x-mcp-header": "Q"}}), "type"),
        (tool({"q": {"x-mcp-header": "Q"}}), "type"),
        (tool({"q": {"type": ["string", "integer"], "x-mcp-header": "Q"}}), "type"),
        (
            tool(
                {
                    "q": {
                        "type": "array",
                        "items": {"type": "string", "x-mcp-header": "Q"},
                    }
                }
            ),
            "reachable",
        ),
        (
            tool({"q": {"oneOf": [{"type": "string", "x-mcp-header": "Q"}]}}),
            "reachable",
        ),
        (tool({}, anyOf=[{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]), "reach"),
        (tool({}, allOf=[{"type": "object"}, {"x-mcp-header": "A"}]), "reachable"),
        (tool({"q": {"not": {"type": "string", "x-mcp-header": "Q"}}}), "reachable"),
        (
            tool({}, **{"if": {"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}}),
            "reachable",
        ),
        (
            tool(
                {"q": {"$ref": "#/$defs/s"}},
                **{"$defs": {"s": {"type": "string", "x-mcp-header": "Q"}}},
            ),
            "reachable",
        ),
        (
            tool(
                {
                    "o": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "x-mcp-header": "Q"},
                    }
                }
            ),
            "reachable",
        ),
        (
            json.dumps(
                {"name": "t", "inputSchema": {"type": "object", "x-mcp-header": "Root"}}
            ).encode(),
            "root",
        ),
    ],
)
def test_invalid_tools(item: bytes, why: str) -> None:
    reason = invalid_reason(item)
    assert reason is not None
    assert why in reason


def test_invalid_reason_takes_a_listing_item_decoded_one_level() -> None:
    item = frame.decode_object(tool({"q": {"type": "number", "x-mcp-header": "Q"}}))
    assert invalid_reason(item) is not None
    assert invalid_reason(frame.decode_object(EXECUTE_SQL)) is None


def test_header_params_follow_property_paths() -> None:
    item = tool(
        {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "options": {
                "type": "object",
                "properties": {"limit": {"type": "integer", "x-mcp-header": "Limit"}},
            },
        }
    )
    assert header_params(item) == (
        HeaderParam("Region", ("region",), "string"),
        HeaderParam("Limit", ("options", "limit"), "integer"),
    )


# -- encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("us-west1", "us-west1"),
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
        ("a b", "a b"),
        ("tab\there", "=?base64?dGFiCWhlcmU=?="),
        ("", "=?base64??="),
        ("x\r\nX-Injected: 1", "=?base64?eA0KWC1JbmplY3RlZDogMQ==?="),
    ],
)
def test_value_encoding_matches_the_spec_examples(value: str, encoded: str) -> None:
    assert encode_value(value) == encoded
    assert decode_value(encoded) == value


@pytest.mark.parametrize("bad", ["=?base64?not base64!?=", "=?base64?/w==?=", "a\x01b", "é", " x"])
def test_malformed_received_values(bad: str) -> None:
    assert decode_value(bad) is None


# -- headers for a call --------------------------------------------------------------------

NESTED = tool(
    {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "confirm": {"type": "boolean", "x-mcp-header": "Confirm"},
        "options": {
            "type": "object",
            "properties": {"limit": {"type": "integer", "x-mcp-header": "Limit"}},
        },
        "greeting": {"type": "string", "x-mcp-header": "Greeting"},
        "optional": {"type": "string", "x-mcp-header": "Optional"},
    }
)


def test_headers_for_the_spec_example() -> None:
    args = b'{"region":"us-west1","query":"SELECT * FROM users"}'
    assert headers_for(EXECUTE_SQL, args) == [("Mcp-Param-Region", "us-west1")]
    assert headers_for(header_params(EXECUTE_SQL), {"region": "us-west1"}) == [
        ("Mcp-Param-Region", "us-west1")
    ]


def test_headers_for_every_kind_nested_absent_and_null() -> None:
    args = {
        "region": "eu",
        "confirm": False,
        "options": {"limit": 42},
        "greeting": "Hello, 世界",
        "optional": None,
    }
    assert headers_for(NESTED, frame.encode(args)) == [
        ("Mcp-Param-Region", "eu"),
        ("Mcp-Param-Confirm", "false"),
        ("Mcp-Param-Limit", "42"),
        ("Mcp-Param-Greeting", "=?base64?SGVsbG8sIOS4lueVjA==?="),
    ]
    assert headers_for(NESTED, {"options": "not an object"}) == []
    assert headers_for(NESTED, None) == []


def test_headers_for_a_tool_without_annotations_never_reads_the_arguments() -> None:
    assert headers_for(tool({"q": {"type": "string"}}), b"not even json") == []


def test_headers_never_carry_raw_line_breaks() -> None:
    for name, value in headers_for(NESTED, {"region": "a\r\nX-Evil: 1", "greeting": "\n"}):
        assert "\r" not in value and "\n" not in value
        assert name.startswith("Mcp-Param-")


# -- checking a received request -----------------------------------------------------------


def test_matching_headers_pass() -> None:
    args = {"region": "eu", "confirm": True, "options": {"limit": 7}, "greeting": "Grüß"}
    headers = headers_for(NESTED, args)
    assert check_request(headers, NESTED, args) is None
    # names are case-insensitive, values are not
    assert check_request([(n.lower(), v) for n, v in headers], NESTED, frame.encode(args)) is None


def test_the_spec_example_request_passes() -> None:
    headers = {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "execute_sql",
        "Mcp-Param-Region": "us-west1",
    }
    args = {"region": "us-west1", "query": "SELECT * FROM users"}
    assert check_request(headers, EXECUTE_SQL, args) is None


@pytest.mark.parametrize(
    ("headers", "args", "why"),
    [
        ([], {"region": "eu"}, "missing"),
        ([("Mcp-Param-Region", "us")], {"region": "eu"}, "does not match"),
        ([("Mcp-Param-Region", "EU")], {"region": "eu"}, "does not match"),
        ([("Mcp-Param-Region", "eu")], {}, "absent"),
        ([("Mcp-Param-Region", "eu")], {"region": None}, "absent"),
        (
            [("Mcp-Param-Region", "eu"), ("mcp-param-region", "eu")],
            {"region": "eu"},
            "more than once",
        ),
        ([("Mcp-Param-Region", "=?base64?***?=")], {"region": "eu"}, "invalid"),
        ([("Mcp-Param-Region", "é")], {"region": "é"}, "invalid"),
        ([("Mcp-Param-Region", "=?base64?ZXU=?=")], {"region": "us"}, "does not match"),
    ],
)
def test_mismatches(headers: list[tuple[str, str]], args: dict[str, Any], why: str) -> None:
    reason = check_request(headers, EXECUTE_SQL, args)
    assert reason is not None
    assert why in reason


def test_base64_header_values_are_decoded_before_comparing() -> None:
    args = {"region": "Hello, 世界"}
    headers = [("Mcp-Param-Region", "=?base64?SGVsbG8sIOS4lueVjA==?=")]
    assert check_request(headers, EXECUTE_SQL, args) is None
    # a plain value that merely looks encoded must have been encoded itself
    literal = {"region": "=?base64?ZXU=?="}
    assert check_request([("Mcp-Param-Region", "=?base64?ZXU=?=")], EXECUTE_SQL, literal)
    assert check_request(headers_for(EXECUTE_SQL, literal), EXECUTE_SQL, literal) is None


def test_integers_compare_as_numbers_and_booleans_as_words() -> None:
    item = tool(
        {
            "n": {"type": "integer", "x-mcp-header": "N"},
            "b": {"type": "boolean", "x-mcp-header": "B"},
        }
    )
    assert (
        check_request(
            [("Mcp-Param-N", "42"), ("Mcp-Param-B", "true")], item, b'{"n":42.0,"b":true}'
        )
        is None
    )
    assert (
        check_request(
            [("Mcp-Param-N", "42.0"), ("Mcp-Param-B", "true")], item, {"n": 42, "b": True}
        )
        is None
    )
    assert check_request(
        [("Mcp-Param-N", "43"), ("Mcp-Param-B", "true")], item, {"n": 42, "b": True}
    )
    assert check_request(
        [("Mcp-Param-N", "42"), ("Mcp-Param-B", "True")], item, {"n": 42, "b": True}
    )


def test_unannotated_param_headers_are_not_judged() -> None:
    assert check_request([("Mcp-Param-Other", "x")], EXECUTE_SQL, {}) is None
    assert check_request([("Mcp-Param-Region", "x")], tool({}), {}) is None


# -- the catalog ---------------------------------------------------------------------------


def test_the_catalog_leaves_out_tools_with_invalid_annotations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = frame.decode_object(tool({"q": {"type": "number", "x-mcp-header": "Q"}}))
    bad["name"] = Raw(b'"bad_tool"')
    good = frame.decode_object(EXECUTE_SQL)
    cat = catalog.build([Listing("db", "db", {catalog.TOOLS: (bad, good)})], "_")
    assert [e.public for e in cat.entries[catalog.TOOLS]] == ["db_execute_sql"]
    assert cat.lookup(catalog.TOOLS, "db_bad_tool") is None
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "'db'" in warning and "'bad_tool'" in warning and "type" in warning
    # the listed item keeps its annotations: clients of the gateway mirror them too
    entry = cat.lookup(catalog.TOOLS, "db_execute_sql")
    assert entry is not None
    assert param_headers.header_params(entry.item) == (
        HeaderParam("Region", ("region",), "string"),
    )
