"""API keys through the key store the gateway authenticates with: list, create, revoke. A new
key's plaintext is in the creating answer only; lists and audit records never hold it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from switchyard.admin.context import Problem, Request
from switchyard.admin.routes import (
    BOOLEAN,
    STRING,
    Answer,
    Operation,
    array_of,
    obj,
)
from switchyard.auth.key_store import KeyStore
from switchyard.auth.keys import KeyRecord

KEY: Final = obj(
    {
        "prefix": STRING,
        "principal": STRING,
        "roles": array_of(STRING),
        "attributes": {"type": "object", "additionalProperties": STRING},
        "created_at": STRING,
        "expires_at": {"type": ["string", "null"]},
        "revoked_at": {"type": ["string", "null"]},
        "revoked": BOOLEAN,
    },
    ["prefix", "principal", "roles", "created_at", "revoked"],
)
CREATE: Final = {
    "type": "object",
    "required": ["principal"],
    "additionalProperties": False,
    "properties": {
        "principal": {"type": "string", "minLength": 1, "maxLength": 200},
        "roles": {
            "type": "array",
            "maxItems": 50,
            "items": {"type": "string", "minLength": 1, "maxLength": 100},
        },
        "attributes": {
            "type": "object",
            "maxProperties": 50,
            "additionalProperties": {"type": "string", "maxLength": 1000},
        },
        "expires_in": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 3650 * 86400,
            "description": "Seconds until the key expires (never, if absent).",
        },
    },
}


def _store(request: Request) -> KeyStore:
    authenticator = request.ctx.authenticator()
    store = authenticator.key_store if authenticator is not None else None
    if store is None:
        raise Problem(409, "API keys are not enabled (auth.enabled and auth.api_keys)")
    return store


def key_json(record: KeyRecord) -> dict[str, Any]:
    return {
        "prefix": record.prefix,
        "principal": record.principal,
        "roles": list(record.roles),
        "attributes": dict(record.attributes),
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "revoked": record.revoked,
    }


def _collection_etag(records: list[KeyRecord]) -> str:
    state = "".join(
        f"{r.prefix}:{int(r.revoked)};" for r in sorted(records, key=lambda r: r.prefix)
    )
    return '"k-' + hashlib.sha256(state.encode()).hexdigest()[:20] + '"'


def _key_etag(record: KeyRecord) -> str:
    return f'"k-{record.prefix}-{"revoked" if record.revoked else "active"}"'


async def list_keys(request: Request) -> Answer:
    records = await _store(request).list()
    return Answer(200, {"keys": [key_json(r) for r in records]}, etag=_collection_etag(records))


async def create_key(request: Request) -> Answer:
    store = _store(request)
    body = request.body
    assert isinstance(body, dict)
    request.require(_collection_etag(await store.list()))
    expires = body.get("expires_in")
    expires_at = datetime.now(UTC) + timedelta(seconds=float(expires)) if expires else None
    plaintext, record = await store.create(
        body["principal"], tuple(body.get("roles", ())), body.get("attributes"), expires_at
    )
    out = {**key_json(record), "key": plaintext}
    return Answer(
        201,
        out,
        etag=_key_etag(record),
        audit={"target": f"key {record.prefix}", "principal_of_key": record.principal},
    )


async def get_key(request: Request) -> Answer:
    record = await _store(request).lookup(request.params["prefix"])
    if record is None:
        raise Problem(404, f"no key {request.params['prefix']}")
    return Answer(200, key_json(record), etag=_key_etag(record))


async def revoke_key(request: Request) -> Answer:
    store = _store(request)
    prefix = request.params["prefix"]
    record = await store.lookup(prefix)
    if record is None:
        raise Problem(404, f"no key {prefix}")
    request.require(_key_etag(record))
    await store.revoke(prefix)
    authenticator = request.ctx.authenticator()
    if authenticator is not None and authenticator.keys is not None:
        authenticator.keys.invalidate(prefix)
    revoked = await store.lookup(prefix)
    assert revoked is not None
    return Answer(
        200, key_json(revoked), etag=_key_etag(revoked), audit={"target": f"key {prefix}"}
    )


OPERATIONS: Final = (
    Operation(
        "GET",
        "/admin/v1/keys",
        "listKeys",
        "Every API key (never the keys themselves)",
        "read",
        "keys",
        obj({"keys": array_of(KEY)}, ["keys"]),
        list_keys,
        etag=True,
        statuses=(409,),
    ),
    Operation(
        "POST",
        "/admin/v1/keys",
        "createKey",
        "Make a key; its plaintext is in this answer only",
        "write",
        "keys",
        {**KEY, "required": [*KEY["required"], "key"]},
        create_key,
        status=201,
        body=CREATE,
        if_match=True,
        etag=True,
        statuses=(409, 412, 428),
        etag_from="/admin/v1/keys",
    ),
    Operation(
        "GET",
        "/admin/v1/keys/{prefix}",
        "getKey",
        "One key's record",
        "read",
        "keys",
        KEY,
        get_key,
        etag=True,
        statuses=(409,),
    ),
    Operation(
        "DELETE",
        "/admin/v1/keys/{prefix}",
        "revokeKey",
        "Revoke a key (it stops working within seconds in every gateway)",
        "write",
        "keys",
        KEY,
        revoke_key,
        if_match=True,
        etag=True,
        statuses=(409, 412, 428),
        etag_from="/admin/v1/keys/{prefix}",
    ),
)
