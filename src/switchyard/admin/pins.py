"""Pins: what the gateway holds back, the diff of each candidate, and the decision. A decision
is a pin event like the CLI's (logged and audited); the gateway shows the result at its next
pin poll."""

from __future__ import annotations

from typing import Any, Final

from switchyard.admin.context import Problem, Request
from switchyard.admin.routes import (
    ANY_OBJECT,
    STRING,
    Answer,
    Operation,
    Query,
    array_of,
    obj,
)
from switchyard.pins.commands import pin_changes
from switchyard.pins.events import record_pin_event
from switchyard.pins.fingerprint import CATALOG_KINDS, PinKey
from switchyard.pins.store import STATES, NotApprovable, Pin, PinStore, pin_json
from switchyard.storage.database import StorageError

PIN: Final = obj(
    {
        "key": STRING,
        "state": STRING,
        "reason": {"type": ["string", "null"]},
        "pinned": {"type": ["string", "null"]},
        "candidate": {"type": ["string", "null"]},
        "findings": array_of(ANY_OBJECT),
    },
    ["key", "state"],
)
PIN_PATH: Final = "/admin/v1/pins/{backend}/{kind}/{name}"


async def _store(request: Request) -> PinStore:
    store = PinStore(await request.ctx.db())
    try:
        await store.migrate()
    except StorageError:
        raise Problem(503, "the pin store is unavailable; retry shortly") from None
    return store


def _etag(pin: Pin) -> str:
    return f'"{pin.candidate_fp or pin.pinned_fp or "none"}"'


def _key(request: Request) -> PinKey:
    kind = request.params["kind"]
    if kind not in CATALOG_KINDS:
        raise Problem(404, "a pin's kind is tool, prompt or template")
    return PinKey(request.params["backend"], kind, request.params["name"])


async def list_pins(request: Request) -> Answer:
    store = await _store(request)
    state = request.query.get("state")
    pins = await store.pins(state)
    return Answer(200, {"pins": [pin_json(p) for p in pins]})


async def _pin(request: Request) -> tuple[PinStore, Pin]:
    store = await _store(request)
    key = _key(request)
    pin = await store.get(key)
    if pin is None:
        raise Problem(404, f"no pin {key}")
    return store, pin


async def get_pin(request: Request) -> Answer:
    _, pin = await _pin(request)
    body: dict[str, Any] = {
        **pin_json(pin),
        "changes": [c.as_json() for c in pin_changes(pin)],
    }
    return Answer(200, body, etag=_etag(pin))


def _decide(approve: bool) -> Any:
    async def handler(request: Request) -> Answer:
        store, pin = await _pin(request)
        request.require(_etag(pin))
        if pin.candidate_fp is None:
            raise Problem(409, f"{pin.key}: nothing waits for a decision (state {pin.state})")
        try:
            if approve:
                after, event = await store.approve(pin.key, request.actor, pin.candidate_fp)
            else:
                after, event = await store.reject(pin.key, request.actor, pin.candidate_fp)
        except NotApprovable as exc:
            raise Problem(409, str(exc)) from None
        record_pin_event(event)
        return Answer(
            200,
            pin_json(after),
            etag=_etag(after),
            audit={"target": f"pin {pin.key}", "fingerprint": event.fingerprint},
        )

    return handler


OPERATIONS: Final = (
    Operation(
        "GET",
        "/admin/v1/pins",
        "listPins",
        "Every pin, or those in one state",
        "read",
        "pins",
        obj({"pins": array_of(PIN)}, ["pins"]),
        list_pins,
        query=(Query("state", {"type": "string", "enum": list(STATES)}, "only this state"),),
    ),
    Operation(
        "GET",
        PIN_PATH,
        "getPin",
        "One pin and the diff of its candidate against the pinned definition",
        "read",
        "pins",
        {**PIN, "properties": {**PIN["properties"], "changes": array_of(ANY_OBJECT)}},
        get_pin,
        etag=True,
    ),
    Operation(
        "POST",
        PIN_PATH + "/approve",
        "approvePin",
        "Pin the candidate (If-Match: the candidate's fingerprint, as its ETag)",
        "write",
        "pins",
        PIN,
        _decide(True),
        if_match=True,
        etag=True,
        statuses=(409, 412, 428),
        etag_from=PIN_PATH,
    ),
    Operation(
        "POST",
        PIN_PATH + "/reject",
        "rejectPin",
        "Refuse the candidate: it stays hidden",
        "write",
        "pins",
        PIN,
        _decide(False),
        if_match=True,
        etag=True,
        statuses=(409, 412, 428),
        etag_from=PIN_PATH,
    ),
)
