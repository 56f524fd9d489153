"""Which request an oversize stdio message answers, from its first bytes only."""

from __future__ import annotations

import pytest

from switchyard.upstream.stdio import oversize_response_id

BIG = b"x" * 100


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"text":"' + BIG, 7),
        (b'{ "id" : "abc" , "result" : "' + BIG, "abc"),
        (b'{"jsonrpc":"2.0","id":7,"error":{"message":"' + BIG, 7),
        (b'{"jsonrpc":"2.0","result":{"a":1},"id":12}', 12),
        # The id comes after the part that was cut off: unknown.
        (b'{"jsonrpc":"2.0","result":{"content":"' + BIG, None),
        # A number cut off mid-way might go on.
        (b'{"result":{},"id":12', None),
        # A backend request or notification is never taken for an answer.
        (b'{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{"' + BIG, None),
        (b'{"jsonrpc":"2.0","method":"notifications/message","params":{"id":7,"' + BIG, None),
        # Nested members and look-alikes inside strings never count.
        (b'{"jsonrpc":"2.0","result":{"id":5,"text":"' + BIG, None),
        (b'{"jsonrpc":"2.0","result":"\\"id\\":5,' + BIG, None),
        (b'{"jsonrpc":"2.0","id":true,"result":"' + BIG, None),
        (b"[" + BIG, None),
        (b"", None),
        # Valid JSON msgspec does not represent, and bytes that are not UTF-8: no id, and no
        # exception (a UnicodeDecodeError escaping here ended the connection's reader).
        (b'{"jsonrpc":"2.0","id":1e400,"result":"' + BIG, None),
        (b'{"jsonrpc":"2.0","id":' + b"1" * 5000 + b',"result":"' + BIG, None),
        (b'{"jsonrpc":"2.0","\xff":1,"id":7,"result":"' + BIG, None),
    ],
)
def test_oversize_response_id(head: bytes, expected: int | str | None) -> None:
    assert oversize_response_id(head) == expected
