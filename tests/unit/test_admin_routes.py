"""The admin route table is what the server dispatches on, what the OpenAPI document says and
what the CLI offers: checked against each other without a server."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from switchyard.admin.masking import MASK, masked
from switchyard.admin.openapi import document
from switchyard.admin.routes import Operation, Routes, obj
from switchyard.admin.table import ROUTES


def test_the_document_describes_exactly_the_operations_dispatched_on() -> None:
    doc = document(ROUTES)
    validate(doc)
    described = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert described == {(op.method, op.path) for op in ROUTES.operations}
    for op in ROUTES.operations:
        concrete = op.path.replace("{", "x").replace("}", "")
        found = ROUTES.find(op.method, concrete)
        assert isinstance(found, tuple) and found[0] is op
        assert sorted(found[1]) == sorted(op.parameters)
        entry = doc["paths"][op.path][op.method.lower()]
        assert entry["x-switchyard-access"] == op.access
        if op.if_match:
            assert any(p["name"] == "If-Match" for p in entry["parameters"])
            # A write that needs If-Match answers 412 and 428, documented.
            assert {"412", "428"} <= set(entry["responses"])


def test_every_write_needs_if_match_but_the_approval_decisions() -> None:
    for op in ROUTES.operations:
        if op.access == "write":
            assert op.if_match and op.etag_from is not None, op.name


def test_unknown_paths_and_other_methods() -> None:
    assert ROUTES.find("GET", "/admin/v1/nothing") is None
    assert ROUTES.find("PATCH", "/admin/v1/keys") == "GET, POST"
    found = ROUTES.find("GET", "/admin/v1/pins/files/template/a%2Fb%2F%7Bx%7D")
    assert isinstance(found, tuple)
    assert found[1] == {"backend": "files", "kind": "template", "name": "a/b/{x}"}


def test_two_operations_for_one_method_and_path_are_refused() -> None:
    one = Operation("GET", "/admin/v1/x", "a", "", "read", "t", obj({}))
    with pytest.raises(ValueError, match="two operations for GET /admin/v1/x"):
        Routes([one, one])


def test_masking_keeps_references_and_hides_values() -> None:
    config = {
        "servers": {
            "gh": {
                "url": "https://example.test/mcp",
                "headers": {"Authorization": "Bearer abc", "X-Key": "${GH_KEY}"},
                "env": {"TOKEN": "plain"},
                "auth": {"type": "client_credentials", "client_secret": "s3cret"},
            }
        },
        "storage": {"database_url": "postgresql://u:pw@h/db"},
    }
    shown = masked(config)
    gh = shown["servers"]["gh"]
    assert gh["url"] == "https://example.test/mcp"
    assert gh["headers"] == {"Authorization": MASK, "X-Key": "${GH_KEY}"}
    assert gh["env"] == {"TOKEN": MASK}
    assert gh["auth"]["client_secret"] == MASK
    assert shown["storage"]["database_url"] == MASK


def test_the_published_copy_of_the_document_is_current() -> None:
    """docs/admin-openapi.json (linked from the README) is the served document; regenerate it
    with `python -c` as its test failure message says when an operation changes."""
    import json
    from pathlib import Path

    published = Path(__file__).parents[2] / "docs" / "admin-openapi.json"
    current = json.dumps(document(ROUTES), indent=2, sort_keys=True) + "\n"
    assert published.read_text(encoding="utf-8") == current, (
        "regenerate: python -c 'import json; from switchyard.admin.openapi import document; "
        'from switchyard.admin.table import ROUTES; open("docs/admin-openapi.json", "w")'
        '.write(json.dumps(document(ROUTES), indent=2, sort_keys=True) + "\\n")\''
    )
