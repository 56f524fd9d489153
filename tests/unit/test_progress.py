"""Progress tokens sent upstream are always the gateway's own, however the client spelled them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from switchyard.upstream.progress import ProgressRoutes, progress_token
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

pytestmark = pytest.mark.anyio


@dataclass
class Link:
    client: str
    seen: list[tuple[str, object]] = field(default_factory=list)

    async def notify(self, method: str, params: bytes | None) -> None:
        self.seen.append((method, json.loads(params or b"null")))

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        raise AssertionError("not used")


SPELLINGS = [
    b'"progressToken"',
    b'"progress\\u0054oken"',
    b'"\\u0070rogressToken"',
    b'"progress\\u0054\\u006fken"',
]


@pytest.mark.parametrize("key", SPELLINGS)
def test_every_spelling_of_the_key_gets_a_minted_token(key: bytes) -> None:
    routes = ProgressRoutes()
    params = b'{"name":"t","_meta":{' + key + b':6,"other":1}}'
    out = routes.bind(params, 41, Link("alice"))
    assert out is not None
    sent = json.loads(out)
    assert sent["_meta"] == {"progressToken": 41, "other": 1}
    assert sent["name"] == "t"


@pytest.mark.parametrize("key", [b'"_m\\u0065ta"', b'"_meta"'])
def test_an_escaped_meta_key_is_found_too(key: bytes) -> None:
    out = ProgressRoutes().bind(b"{" + key + b':{"progressToken":"x"}}', 3, Link("a"))
    assert json.loads(out or b"") == {"_meta": {"progressToken": 3}}


@pytest.mark.parametrize(
    "params",
    [
        b'{"name":"t"}',
        b'{"name":"t","_meta":{"other":1}}',
        b'{"name":"t","_meta":"progressToken"}',
        b'{"name":"t","_meta":null}',
        b"[1]",
        b'{"name":"progressToken","arguments":{"progressToken":1}}',
    ],
)
def test_params_without_a_token_pass_unchanged(params: bytes) -> None:
    routes = ProgressRoutes()
    assert routes.bind(params, 1, Link("a")) is params
    assert routes.bind(None, 1, Link("a")) is None


async def test_progress_for_an_escaped_token_reaches_only_its_own_client() -> None:
    routes = ProgressRoutes()
    alice, bob = Link("alice"), Link("bob")
    # Bob's request went upstream as id 6, carrying the gateway's token 6.
    routes.bind(b'{"_meta":{"progressToken":"bob-token"}}', 6, bob)
    # Alice asks for progress under token 6, spelling the key so a byte test misses it.
    out = routes.bind(b'{"_meta":{"progress\\u0054oken":6}}', 7, alice)
    assert json.loads(out or b"")["_meta"]["progressToken"] == 7
    # The backend reports progress on the token each request actually carried.
    assert await routes.deliver(b'{"progressToken":7,"progress":1,"message":"alice"}')
    assert await routes.deliver(b'{"progressToken":6,"progress":1,"message":"bob"}')
    assert alice.seen == [
        ("notifications/progress", {"progressToken": 6, "progress": 1, "message": "alice"})
    ]
    assert bob.seen == [
        ("notifications/progress", {"progressToken": "bob-token", "progress": 1, "message": "bob"})
    ]


async def test_without_a_link_the_token_is_replaced_and_its_progress_dropped() -> None:
    routes = ProgressRoutes()
    bob = Link("bob")
    routes.bind(b'{"_meta":{"progressToken":"b"}}', 2, bob)
    out = routes.bind(b'{"_meta":{"progressToken":2}}', 9, None)
    assert json.loads(out or b"")["_meta"]["progressToken"] == 9
    assert not await routes.deliver(b'{"progressToken":9,"progress":1}')
    assert bob.seen == []


@pytest.mark.parametrize("key", SPELLINGS)
def test_progress_token_helper_reads_decoded_keys(key: bytes) -> None:
    fields = frame.decode_object(b'{"_meta":{' + key + b':"tok"}}')
    token = progress_token(fields)
    assert token is not None
    assert bytes(token) == b'"tok"'


@pytest.mark.parametrize(
    "params", [b"{}", b'{"_meta":{}}', b'{"_meta":5}', b'{"_meta":[{"progressToken":1}]}']
)
def test_progress_token_helper_without_a_token(params: bytes) -> None:
    assert progress_token(frame.decode_object(params)) is None


def test_progress_token_helper_keeps_the_value_verbatim() -> None:
    token = progress_token({"_meta": Raw(b'{"progressToken": 1.0}')})
    assert token is not None
    assert bytes(token) == b"1.0"
